"""The adapter library on disk, merging, combining, and GGUF export with its checks."""
