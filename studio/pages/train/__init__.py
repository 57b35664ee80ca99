"""The Train page: its settings column, the run monitor and the controller that owns the run's state."""
