"""syncd: a file-watching upload daemon that never loses a file."""

__version__ = "0.1.0"
