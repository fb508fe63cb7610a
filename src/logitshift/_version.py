"""The release, in one place (read by ``--version`` and every run's provenance)."""

__version__ = "0.1.0"
