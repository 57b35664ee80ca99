"""The engine's vocabulary and small utilities every package uses: the choices a setting allows, byte units,
atomic writes and JSON reading, safetensors headers."""
