"""The package version (here, not in ``__init__``, so that modules below the package's public
API can report it without importing the package; pyproject.toml holds the same string)."""
__version__ = "0.1.0"
