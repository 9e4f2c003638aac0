"""Group runs by task × hyperparameter setting and aggregate their scores and curves over seeds."""

from __future__ import annotations

import difflib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cql_runner.report.collect_runs import ReportError, Run, eval_scores, final_and_best

TASK_KEY = "env.name"
# Keys that differ between runs without being a hyperparameter of the experiment: bookkeeping,
# where things are stored, and how progress is shown. Seeds are what we aggregate over.
IGNORED_KEYS = frozenset(
    {
        "seed",
        "seeds",
        "run_dir",
        "resume",
        "resume_allow_changes",
        "device",
        "dataset.path",
        "dataset.cache_dir",
        "dataset.download",
        "train.progress",
        "train.num_seeds",
        "train.checkpoint_every",
        TASK_KEY,
    }
)
IGNORED_PREFIXES = ("hydra.", "logger.")


class _Unset:
    """A key absent from one run's config (say, written by an older version) — a value of its own."""

    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Stat:
    mean: float | None  # None when no run had a value
    std: float
    n: int


@dataclass(frozen=True)
class Curve:
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray  # runs contributing at each step


@dataclass
class Group:
    task: str
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    runs: list[Run]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def scored_runs(self) -> list[Run]:
        """Runs whose scores enter the mean: failed runs are only counted, since their last
        eval predates the failure and would pass off a crash as a result."""
        return [r for r in self.runs if r.status != "failed"]

    @property
    def final(self) -> Stat:
        return mean_std(final_and_best(r)[0] for r in self.scored_runs)

    @property
    def best(self) -> Stat:
        return mean_std(final_and_best(r)[1] for r in self.scored_runs)

    @property
    def seeds(self) -> list[Any]:
        return sorted({r.config.get("seed") for r in self.runs}, key=sort_key)

    def label(self) -> str:
        setting = ", ".join(f"{k}={format_value(v)}" for k, v in zip(self.keys, self.values))
        return f"{setting or 'all runs'} (n={len(self.runs)})"


def mean_std(values: Iterable[float | None]) -> Stat:
    """Mean and sample std (ddof=1) of the finite values; std is 0 for a single value."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return Stat(None, 0.0, 0)
    std = float(np.std(xs, ddof=1)) if len(xs) >= 2 else 0.0
    return Stat(float(np.mean(xs)), std, len(xs))


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def varied_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose value differs between runs of the same task.

    Compared within a task, because per-task settings (dataset.id, eval.env_id, reference
    scores) differ across tasks by construction and are not what the sweep varied.
    """
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    varied: set[str] = set()
    for task_runs in by_task.values():
        keys = set().union(*(r.config for r in task_runs))
        for key in keys - varied:
            if not _ignored(key) and len({_value(r, key) for r in task_runs}) > 1:
                varied.add(key)
    return sorted(varied)


# More varied keys than this make unreadable group labels (runs of another library carry few of our
# keys, so every key they lack "varies"); the groups are then named by a subset that separates them.
MAX_LABEL_KEYS = 6


def _partition(runs: Sequence[Run], keys: Sequence[str]) -> set[frozenset[int]]:
    blocks: dict[tuple[Any, ...], set[int]] = defaultdict(set)
    for i, run in enumerate(runs):
        blocks[(run.task, *(_value(run, k) for k in keys))].add(i)
    return {frozenset(b) for b in blocks.values()}


def separating_keys(runs: Sequence[Run], keys: Sequence[str], limit: int = MAX_LABEL_KEYS) -> list[str]:
    """``keys`` if there are at most ``limit``, else a small subset that splits the runs into exactly
    the same groups: greedily the key that separates most, preferring keys every run sets."""
    if len(keys) <= limit:
        return list(keys)
    target = _partition(runs, keys)
    chosen: list[str] = []
    while _partition(runs, chosen) != target:
        # Most groups first, then a key every run sets, then alphabetical.
        best = min(
            (k for k in keys if k not in chosen),
            key=lambda k: (-len(_partition(runs, [*chosen, k])), any(k not in r.config for r in runs), k),
        )
        chosen.append(best)
    return sorted(chosen)


def check_group_keys(runs: Sequence[Run], keys: Sequence[str]) -> None:
    known = set().union(*(r.config for r in runs))
    for key in keys:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ReportError(f"--group-by key {key!r} is in no run's config.yaml{hint}")


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Group]:
    """One group per (task, values of ``keys``), ordered by task then values (numbers numerically)."""
    keys = tuple(k for k in keys if k != TASK_KEY)
    buckets: dict[tuple[str, tuple[Any, ...]], list[Run]] = defaultdict(list)
    for run in runs:
        buckets[(run.task, tuple(_value(run, k) for k in keys))].append(run)
    ordered = sorted(buckets, key=lambda tv: (tv[0], [sort_key(v) for v in tv[1]]))
    return [Group(task, keys, values, buckets[(task, values)]) for task, values in ordered]


def _value(run: Run, key: str) -> Any:
    return run.config.get(key, UNSET)


def sort_key(value: Any) -> tuple[int, float, str]:
    if value is None or value is UNSET:
        return (0, 0.0, "")
    if isinstance(value, bool):
        return (1, float(value), "")
    if isinstance(value, (int, float)):
        return (2, float(value), "")
    return (3, 0.0, str(value))


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def curve(runs: Sequence[Run], metric: str) -> Curve | None:
    """Mean and std over runs of ``metric`` at each logged step; None when no run logged it.

    Steps are matched exactly (seeds of one setting log at the same steps); where a run has not
    reached a step yet, that step averages over the runs that have.
    """
    per_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, value in eval_scores(run, metric):
            per_step[step].append(value)
    if not per_step:
        return None
    steps = sorted(per_step)
    stats = [mean_std(per_step[s]) for s in steps]
    return Curve(
        np.array(steps),
        np.array([s.mean for s in stats]),
        np.array([s.std for s in stats]),
        np.array([s.n for s in stats]),
    )


def metric_names(runs: Sequence[Run]) -> list[str]:
    return sorted({k for r in runs for rec in r.metrics for k in rec if k != "step"})
