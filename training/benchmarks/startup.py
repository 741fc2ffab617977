"""Start-up time of the command lines: how long ``nfldm --help``, ``nfldm generate --help`` and an argument error
take, with ``sim_bridge --help`` (a CLI that imports no torch) as the same-run baseline.

    python -m nfldm_training.benchmarks.startup [--repeats 5]

Each command runs as a fresh process (`subprocess`, the console scripts beside the running interpreter), so the
figure is what a user waits for: interpreter start, imports, entry-point discovery, click. The target is under
2 s per command on the 2-core CI machine; the command modules keep torch, Lightning, diffusers and Open3D out of
their module-level imports for it (`tests/project/test_cli_startup.py` checks that ``--help`` imports none of them).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["STARTUP_COMMANDS", "BASELINE_COMMAND", "StartupResult", "run_startup_bench", "format_startup_bench"]

#: What is timed: label -> argv (the first item is a console script of the `nfldm` distribution).
STARTUP_COMMANDS: dict[str, list[str]] = {
    "nfldm --help": ["nfldm", "--help"],
    "nfldm generate --help": ["nfldm", "generate", "--help"],
    "nfldm generate --no-such-option": ["nfldm", "generate", "--no-such-option"],
}
#: The same-run baseline: a console script of the same distribution that never imported torch.
BASELINE_COMMAND: tuple[str, list[str]] = ("sim_bridge --help", ["sim_bridge", "--help"])


@dataclass
class StartupResult:
    """Median wall seconds per command over `repeats` fresh processes.

    Attributes:
        seconds: label -> median seconds of `STARTUP_COMMANDS`.
        baseline_seconds: median seconds of `BASELINE_COMMAND`.
        repeats: processes per command.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    baseline_seconds: float = 0.0
    repeats: int = 0

    @property
    def slowest(self) -> float:
        """The largest median of `seconds` (the figure held against the 2 s target)."""
        return max(self.seconds.values())


def _script(name: str) -> str:
    """The console script `name` beside the running interpreter (the same environment), else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} not found beside {sys.executable} or on PATH: "
                                "install the package (pip install -e .)")
    return found


def _time(argv: list[str], repeats: int) -> float:
    """Median wall seconds of running `argv` `repeats` times (output discarded; exit status not checked: the bad
    argument exits 2 on purpose)."""
    cmd = [_script(argv[0]), *argv[1:]]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_startup_bench(repeats: int = 3) -> StartupResult:
    """Time every `STARTUP_COMMANDS` entry and the baseline, each `repeats` times after one warm-up run (which
    fills the OS file cache, as a user's second command would find it)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = StartupResult(repeats=repeats)
    for label, argv in STARTUP_COMMANDS.items():
        _time(argv, 1)
        result.seconds[label] = _time(argv, repeats)
    _time(BASELINE_COMMAND[1], 1)
    result.baseline_seconds = _time(BASELINE_COMMAND[1], repeats)
    return result


def format_startup_bench(r: StartupResult) -> str:
    """One line per command: median seconds, and the baseline."""
    rows = [f"{label:34s} {s:6.2f} s" for label, s in r.seconds.items()]
    rows.append(f"{BASELINE_COMMAND[0] + ' (baseline)':34s} {r.baseline_seconds:6.2f} s")
    return f"start-up, median of {r.repeats} fresh processes each:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """``python -m nfldm_training.benchmarks.startup``: print `format_startup_bench`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (median)")
    args = parser.parse_args(argv)
    print(format_startup_bench(run_startup_bench(args.repeats)))


if __name__ == "__main__":
    main()
