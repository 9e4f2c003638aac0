"""Interval estimates per group, per setting across tasks, and P(A > B) between two run sets.

Each group's final (and best) normalized scores form a (runs × 1) matrix; a setting aggregated
over tasks forms a (runs × tasks) matrix. rliable needs the same number of runs in every task, so
a setting whose tasks have unequal run counts uses the first k runs (by seed) of each, k being the
smallest count, and says so.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cql_runner.report.aggregate import Group, format_value, sort_key
from cql_runner.report.collect_runs import ReportError, Run, final_and_best
from cql_runner.report.statistics import Estimate, aggregate_estimates, probability_of_improvement

KINDS = ("final", "best")
ALL_TASKS = "all tasks"


@dataclass(frozen=True)
class Scores:
    """The scores behind one row of the statistics table: a group, or a setting over tasks."""

    task: str  # the task, or ALL_TASKS
    values: tuple[Any, ...]
    setting: str  # "cql.tau=5, cql.alpha=1" or "all runs"
    final: np.ndarray  # (runs × tasks)
    best: np.ndarray
    truncated: bool = False  # runs dropped to equalise the per-task counts

    @property
    def n(self) -> int:
        return int(self.final.shape[0])

    @property
    def label(self) -> str:
        return f"{self.task}: {self.setting}"


@dataclass(frozen=True)
class RowStats:
    scores: Scores
    final: dict[str, Estimate] | None  # None when no run has a score
    best: dict[str, Estimate] | None


def _setting(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values)) or "all runs"


def _run_scores(runs: Sequence[Run]) -> list[tuple[Any, float, float]]:
    """(seed, final, best) of each scored run that has both, in seed order."""
    rows = []
    for run in runs:
        final, best = final_and_best(run)
        if final is not None and best is not None:
            rows.append((run.config.get("seed"), final, best))
    return sorted(rows, key=lambda r: sort_key(r[0]))


def group_scores(group: Group) -> Scores:
    rows = _run_scores(group.scored_runs)
    return Scores(
        group.task,
        group.values,
        _setting(group.keys, group.values),
        np.array([[r[1]] for r in rows]).reshape(-1, 1),
        np.array([[r[2]] for r in rows]).reshape(-1, 1),
    )


def across_tasks(groups: Sequence[Group]) -> list[Scores]:
    """One (runs × tasks) score matrix per setting that was run on more than one task."""
    by_setting: dict[tuple[Any, ...], list[Group]] = defaultdict(list)
    for g in groups:
        by_setting[g.values].append(g)
    result = []
    for values in sorted(by_setting, key=lambda v: [sort_key(x) for x in v]):
        members = [g for g in by_setting[values] if _run_scores(g.scored_runs)]
        if len({g.task for g in members}) < 2:
            continue
        per_task = [_run_scores(g.scored_runs) for g in members]
        k = min(len(rows) for rows in per_task)
        final = np.array([[rows[i][1] for rows in per_task] for i in range(k)])
        best = np.array([[rows[i][2] for rows in per_task] for i in range(k)])
        result.append(
            Scores(
                ALL_TASKS,
                values,
                _setting(members[0].keys, values),
                final,
                best,
                truncated=any(len(rows) > k for rows in per_task),
            )
        )
    return result


def row_stats(scores: Scores, reps: int, seed: int) -> RowStats:
    if scores.n == 0:
        return RowStats(scores, None, None)
    return RowStats(
        scores,
        aggregate_estimates(scores.final, reps=reps, seed=seed),
        aggregate_estimates(scores.best, reps=reps, seed=seed),
    )


# ----- --compare A B ---------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    task: str  # a task, or ALL_TASKS
    a: str
    b: str
    estimate: Estimate
    n_a: int
    n_b: int


def select_runs(spec: str, runs: Sequence[Run], groups: Sequence[Group]) -> list[Run]:
    """The runs a --compare argument names: a directory (the runs under it), ``key=value[,key=value]``,
    or a bare value of the one key the runs are grouped by."""
    path = Path(spec)
    if path.is_dir():
        root = path.resolve()
        chosen = [r for r in runs if r.path.resolve() == root or root in r.path.resolve().parents]
        if not chosen:
            raise ReportError(f"--compare {spec}: no run dirs under it")
        return chosen
    keys = groups[0].keys if groups else ()
    wanted = _parse_setting(spec, keys)
    chosen = [r for g in groups if _matches(g, wanted) for r in g.runs]
    if not chosen:
        known = sorted({_setting(g.keys, g.values) for g in groups})
        raise ReportError(
            f"--compare {spec}: no runs with that setting; {_near(spec, known)}settings: {'; '.join(known)}"
        )
    return chosen


def _parse_setting(spec: str, keys: Sequence[str]) -> dict[str, str]:
    if "=" not in spec:
        if len(keys) != 1:
            raise ReportError(
                f"--compare {spec}: a bare value needs exactly one grouping key (the runs are "
                f"grouped by {', '.join(keys) or 'nothing'}); write KEY=VALUE or a directory"
            )
        return {keys[0]: spec}
    wanted = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in keys:
            raise ReportError(
                f"--compare {spec}: {key.strip()!r} is not a grouping key; "
                f"{_near(key.strip(), list(keys))}grouping keys: {', '.join(keys) or 'none'}"
            )
        wanted[key.strip()] = value.strip()
    return wanted


def _matches(group: Group, wanted: dict[str, str]) -> bool:
    return all(
        format_value(v) == wanted[k] or _same_number(v, wanted[k])
        for k, v in zip(group.keys, group.values)
        if k in wanted
    )


def _same_number(value: Any, text: str) -> bool:
    try:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and float(text) == float(value)
    except ValueError:
        return False


def _near(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=2)
    return f"did you mean {' or '.join(close)}? " if close else ""


def compare(
    a_spec: str, b_spec: str, runs: Sequence[Run], groups: Sequence[Group], reps: int, seed: int
) -> list[Comparison]:
    """P(A > B) of the final normalized score on each task both sets ran, and over those tasks together."""
    sets = [select_runs(spec, runs, groups) for spec in (a_spec, b_spec)]
    by_task = [_final_by_task(s) for s in sets]
    tasks = sorted(set(by_task[0]) & set(by_task[1]))
    if not tasks:
        a_tasks, b_tasks = (", ".join(sorted(bt)) or "none" for bt in by_task)
        raise ReportError(
            f"--compare {a_spec} {b_spec}: the two run sets share no task with scores (A: {a_tasks}; B: {b_tasks})"
        )
    result = [
        Comparison(
            t,
            a_spec,
            b_spec,
            probability_of_improvement(by_task[0][t], by_task[1][t], reps=reps, seed=seed),
            len(by_task[0][t]),
            len(by_task[1][t]),
        )
        for t in tasks
    ]
    if len(tasks) > 1:
        ka, kb = (min(len(bt[t]) for t in tasks) for bt in by_task)
        xa = np.array([[by_task[0][t][i] for t in tasks] for i in range(ka)])
        xb = np.array([[by_task[1][t][i] for t in tasks] for i in range(kb)])
        result.append(
            Comparison(ALL_TASKS, a_spec, b_spec, probability_of_improvement(xa, xb, reps=reps, seed=seed), ka, kb)
        )
    return result


def _final_by_task(runs: Sequence[Run]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for run in sorted((r for r in runs if r.status != "failed"), key=lambda r: sort_key(r.config.get("seed"))):
        final, _ = final_and_best(run)
        if final is not None:
            out[run.task].append(final)
    return dict(out)
