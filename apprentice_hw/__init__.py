"""apprentice-hw: distil low-precision students (Apprentice, ICLR 2018) and ship them with TVM."""

__version__ = "0.1.0"
