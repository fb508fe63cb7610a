"""The audit: is this model shifted, and does the shift move the maps a user explains?

``measure`` (the common-mode statistics and structural tests), ``effect`` (what the common
mode does to the maps), ``safeload`` (a ``.pt2`` checked before any deserializer sees it),
``sandbox`` (the audit of a file in a limited child process).
"""
