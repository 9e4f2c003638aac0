"""Read the suite's run dirs into one row per dataset × method: scores and value checks over seeds.

Runs are found and read by cql-report's own code (cql_runner.report), so RESULTS.md and `cql-report`
agree on what a run's final and best score are; the dataset and method come from the suite's layout
runs/<dataset>/<method>/[seed<k>/].
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cql_runner.report.aggregate import Group, Stat, curve, mean_std
from cql_runner.report.collect_runs import Run, collect

VALUE_FILE = "value_check.json"


@dataclass
class Cell:
    """One dataset × method: its runs (one per seed) and their value checks."""

    dataset: str
    method: str
    runs: list[Run] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def group(self) -> Group:
        """These runs as a cql-report group, labelled by method: scores come from cql-report's own rules."""
        return Group(self.dataset, ("method",), (self.method,), self.runs)

    @property
    def final(self) -> Stat:
        return self.group.final

    @property
    def best(self) -> Stat:
        return self.group.best

    @property
    def scored(self) -> list[Run]:
        return self.group.scored_runs

    def check_stat(self, key: str) -> Stat:
        return mean_std(c.get(key) for c in self.checks)

    @property
    def n_underestimates(self) -> int:
        return sum(bool(c.get("underestimates")) for c in self.checks)

    @property
    def train_time_s(self) -> float | None:
        """Wall time of the (seed-vectorised) training process; every seed's summary carries the same one."""
        times = [r.summary.get("wall_time_s") for r in self.runs if r.summary]
        finite = [float(t) for t in times if isinstance(t, (int, float)) and math.isfinite(t)]
        return max(finite) if finite else None

    @property
    def steps_per_s(self) -> float | None:
        rates = [r.summary.get("steps_per_s") for r in self.runs if r.summary]
        finite = [float(x) for x in rates if isinstance(x, (int, float))]
        return finite[0] if finite else None


def quarter_change(runs: list[Run], key: str) -> tuple[float, float] | None:
    """(mean of the seed-mean curve of ``key`` over the last quarter of training, and over the quarter
    before it): how far a curve still moved at the end. A curve with no point in the third quarter uses
    its last point before the final quarter; None when there is nothing to compare."""
    c = curve(runs, key)
    if c is None or not len(c.steps):
        return None
    end = float(c.steps.max())
    third = (c.steps > 0.5 * end) & (c.steps <= 0.75 * end)
    last = c.steps > 0.75 * end
    earlier = c.steps <= 0.75 * end
    if not third.any() and earlier.any():  # sparse curves: the last point before the final quarter
        third = c.steps == c.steps[earlier].max()
    if not third.any() or not last.any():
        return None
    return float(c.mean[last].mean()), float(c.mean[third].mean())


def as_of_step(run: Run, step: int) -> Run:
    """The run as it stood at ``step``, so cells trained for different budgets compare at a common one.

    Metrics after ``step`` are dropped, so the final score is the last evaluation at or before it and the
    best the best up to it; the run's wall time is pro-rated by ``step`` over its steps (evaluations are
    evenly spaced, so this is close). A run that stopped at or before ``step`` is returned unchanged.
    """
    last = run.last_step
    if last is None or last <= step:
        return run
    summary = None
    if run.summary is not None:
        ran = float(run.summary.get("steps") or last)
        wall = run.summary.get("wall_time_s")
        summary = {
            "steps": step,
            "steps_per_s": run.summary.get("steps_per_s"),
            "wall_time_s": wall * step / ran if isinstance(wall, (int, float)) else None,
        }
    metrics = [m for m in run.metrics if isinstance(m.get("step"), (int, float)) and m["step"] <= step]
    # "running": cql-report then scores it from its logged evaluations, not from the summary's final score.
    return dataclasses.replace(run, metrics=metrics, summary=summary, status="running")


def _where(run_dir: Path, runs_root: Path) -> tuple[str, str] | None:
    parts = run_dir.resolve().relative_to(runs_root.resolve()).parts
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def gather(out: Path, method_order: list[str] | None = None, at_step: int | None = None) -> list[Cell]:
    """Cells in dataset order, methods in ``method_order`` (then any others, sorted); every run scored as
    of ``at_step`` when given (see as_of_step)."""
    runs_root = out / "runs"
    cells: dict[tuple[str, str], Cell] = {}
    for run in collect([runs_root]).runs:
        where = _where(run.path, runs_root)
        if where is None:
            continue
        cell = cells.setdefault(where, Cell(*where))
        cell.runs.append(run if at_step is None else as_of_step(run, at_step))
        check = run.path / VALUE_FILE
        if check.is_file():
            cell.checks.append(json.loads(check.read_text()))
    order = {m: i for i, m in enumerate(method_order or [])}
    return sorted(cells.values(), key=lambda c: (c.dataset, order.get(c.method, len(order)), c.method))


def groups(cells: list[Cell]) -> list[Group]:
    """cql-report groups labelled by method, so its plotting code draws one line per method per dataset."""
    return [c.group for c in cells]


def by_dataset(cells: list[Cell]) -> dict[str, dict[str, Cell]]:
    out: dict[str, dict[str, Cell]] = defaultdict(dict)
    for c in cells:
        out[c.dataset][c.method] = c
    return dict(out)
