"""LoRA Studio's desktop application (PySide6). It imports engine; engine never imports it."""
