"""Chat over one loaded base model with hot-swapped adapters: sampling, streaming, compare, memory room, transcripts."""
