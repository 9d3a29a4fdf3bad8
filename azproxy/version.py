"""The version, in a module of its own so any layer can name it without
importing the package's create_app."""

__all__ = ["__version__"]

__version__ = "0.1.0"
