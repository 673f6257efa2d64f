"""Training scripts (diffusers ``examples/*/train_*.py`` style, HF accelerate)."""
