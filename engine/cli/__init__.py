"""The headless command line (lora-studio SUBCOMMAND)."""
