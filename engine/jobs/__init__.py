"""The parent side of a run: starting and supervising the child, warm starts, the runs history."""
