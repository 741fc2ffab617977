"""Presets: model sizes and training settings of every stage, by name, and the run config that records them.

`base` (the shared `TrainConfig`) and `sections` (one section type per stage) hold the types; `presets` the one
table (`PRESETS`); `latent`, `ldm` and `prior` the stages' views of it; `names` the names without importing torch;
`run_config` the ``RUN/config.json`` schema every stage writes and reads.
"""
