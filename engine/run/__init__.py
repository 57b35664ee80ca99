"""The run folder, the contract between the studio and a training child: config, events, control, priority."""
