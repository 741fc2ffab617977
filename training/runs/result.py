"""`RunResult`: what every stage's ``train_*`` function returns about its run (the run protocol of
`nfldm_training.runs.trainer`); each stage's result type adds its validation figures to these fields."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """Outcome of one stage's training run.

    Attributes:
        run_dir: the run directory.
        model_dir: ``run_dir/model``, the trained network (load it with its class's ``from_pretrained``).
        global_step: optimisation steps done in total (including those of a resumed run).
        resumed_from: the checkpoint the run continued from, or None.
        seconds: wall time of this call.
    """

    run_dir: Path
    model_dir: Path
    global_step: int
    resumed_from: str | None
    seconds: float
