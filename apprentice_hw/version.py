"""The package version, in a module of its own so every layer can read it without importing
the public API (``apprentice_hw/__init__.py`` re-exports the API, which imports the pipeline)."""

__version__ = "0.1.0"
