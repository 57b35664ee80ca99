"""LoRA Studio's engine: everything that is not a window. It never imports Qt or studio.

Its version: engine.version.studio_version()."""
