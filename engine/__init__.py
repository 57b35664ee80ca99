"""LoRA Studio's engine: everything that is not a window. It never imports Qt or studio."""

__version__ = "0.1.0"
