"""Presets: model sizes and training settings of every stage, by name."""
