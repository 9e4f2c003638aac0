"""The end of a sweep: one line counting its jobs by status, and a failing exit if any failed.

A sweep keeps going past a bad job (its summary.json records why), so without this the
sweep ended with status 0 and a reader had to open every job dir to see that one failed.
The tally is read from the job dirs' summary.json files, so it works the same whether the
jobs ran in this process (basic launcher) or elsewhere (joblib, submitit).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Filled by the callback in the sweeping process; cql-train's exit status reads it.
last_tally: Counter[str] = Counter()


def job_statuses(job_dir: Path) -> list[str]:
    """The status of each run in one job dir (one per seed); "failed" when none wrote a summary."""
    paths = (
        [job_dir / "summary.json"]
        if (job_dir / "summary.json").is_file()
        else sorted(job_dir.glob("seed*/summary.json"))
    )
    statuses = []
    for path in paths:
        try:
            statuses.append(str(json.loads(path.read_text(encoding="utf-8")).get("status", "failed")))
        except (OSError, ValueError, AttributeError):
            statuses.append("failed")
    if not statuses:
        return ["failed"]
    return statuses


def tally(sweep_dir: Path) -> Counter[str]:
    """Jobs of the sweep in ``sweep_dir`` by status; a job counts as its worst seed's status."""
    order = ("failed", "interrupted", "completed")
    counts: Counter[str] = Counter()
    for job_dir in sorted(p.parent for p in sweep_dir.glob("*/.hydra")):
        statuses = job_statuses(job_dir)
        counts[min(statuses, key=lambda s: order.index(s) if s in order else 0)] += 1
    return counts


def format_tally(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{counts[s]} {s}" for s in ("completed", "interrupted", "failed") if counts[s])
    return f"{total} job{'s' if total != 1 else ''}: {parts or 'none ran'}"


class SweepTally(Callback):
    """Prints the tally after a multirun and records it for the exit status."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        counts = tally(Path(config.hydra.sweep.dir))
        last_tally.clear()
        last_tally.update(counts)
        print(f"cql-train: sweep {config.hydra.sweep.dir}: {format_tally(counts)}", file=sys.stderr)
