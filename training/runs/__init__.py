"""The run protocol shared by all stages: run directories, checkpoints, the Lightning trainer."""
