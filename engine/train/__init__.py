"""The training run. ``python -m engine.train RUN_DIR`` runs (or resumes) the run
whose ``config.json`` is in RUN_DIR, headless or under ``accelerate launch`` / ``torchrun``."""
