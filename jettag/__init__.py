"""jettag: train, compare and deploy jet taggers on JetClass-style data."""

__version__ = "0.1.0"
