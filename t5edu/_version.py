"""The package version, in a module of its own so that any module can read it without
importing the whole package (which imports every module)."""

__version__ = "0.1.0"
