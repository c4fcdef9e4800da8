"""rwkv-tui: a terminal wizard and embedded trainer for fine-tuning RWKV models."""

__version__ = "0.1.0"
