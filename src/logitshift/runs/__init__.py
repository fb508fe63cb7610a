"""One module per command: a config dataclass in, its typed record out, nothing printed.

``demo``, ``matrix``, ``evaluate`` (+ ``store``), ``attack``, ``audit``, ``check``; ``records``
holds the typed records every command returns and every report reads.
"""
