"""Memory: the plan a run is estimated for, the itemised estimate, and auto-fit."""
