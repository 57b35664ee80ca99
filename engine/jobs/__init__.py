"""The parent side of a run: starting and supervising the child, warm starts, the run record and history, train-more, exporting a run."""
