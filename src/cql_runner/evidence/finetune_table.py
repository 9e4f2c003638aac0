"""The fine-tuning numbers of RESULTS.md, computed from a run's metrics.jsonl rows.

A run with an online phase logs every row on one step axis (offline gradient steps, then train.steps +
env steps) and marks each online row with its env step (``online/env_steps``). From the evaluation rows:

- pre-switch: the last evaluation without that mark (the end of offline pre-training);
- dip: the lowest evaluation whose env step is at most 10% of the online steps;
- final: the last online evaluation;
- cumulative regret: the mean over the online evaluations of (1 − normalized score / 100), as Cal-QL
  (Nakamoto et al., 2023) and CORL report it; 0 = expert-level at every evaluation, 1 = random-level.
  Scores above 100 count as negative regret (not clipped), so the number is the mean score read backwards.

Pure functions of plain rows (dicts), so they are tested on hand-made rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from cql_runner.logging.base import ONLINE_STEP_METRIC
from cql_runner.report.collect_runs import SCORE_KEY

DIP_WINDOW = 0.1  # share of the online env steps the dip is looked for in

Row = Mapping[str, Any]


class SeedNumbers(NamedTuple):
    """One seed's fine-tuning numbers (None where the run has no such evaluation)."""

    pre_switch: float | None
    dip: float | None
    final: float | None
    regret: float | None


def _score(row: Row) -> float | None:
    value = row.get(SCORE_KEY)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def is_online_row(row: Row) -> bool:
    return isinstance(row.get(ONLINE_STEP_METRIC), (int, float))


def has_online_phase(rows: Iterable[Row]) -> bool:
    return any(is_online_row(r) for r in rows)


def pre_switch_score(rows: Sequence[Row]) -> float | None:
    """The last offline evaluation (highest step without an env step); None for a run from scratch,
    whose only such evaluation is of the untrained policy at step 0."""
    offline = [
        (float(r["step"]), s)
        for r in rows
        if not is_online_row(r)
        and isinstance(r.get("step"), (int, float))
        and r["step"] > 0
        and (s := _score(r)) is not None
    ]
    return max(offline)[1] if offline else None


def online_evals(rows: Sequence[Row]) -> list[tuple[float, float]]:
    """(env step, normalized score) of every online evaluation, by env step."""
    return sorted((float(r[ONLINE_STEP_METRIC]), s) for r in rows if is_online_row(r) and (s := _score(r)) is not None)


def dip_score(rows: Sequence[Row], online_steps: float, window: float = DIP_WINDOW) -> float | None:
    """The lowest online evaluation at env step ≤ window · online_steps; None when none falls there."""
    limit = window * online_steps * (1 + 1e-9)  # the boundary counts, whatever float rounding does to it
    early = [s for step, s in online_evals(rows) if step <= limit]
    return min(early) if early else None


def final_online_score(rows: Sequence[Row]) -> float | None:
    evals = online_evals(rows)
    return evals[-1][1] if evals else None


def cumulative_regret(rows: Sequence[Row]) -> float | None:
    """Mean over the online evaluations of (1 − score/100)."""
    scores = [s for _, s in online_evals(rows)]
    return float(np.mean([1.0 - s / 100.0 for s in scores])) if scores else None


def seed_numbers(rows: Sequence[Row], online_steps: float) -> SeedNumbers:
    return SeedNumbers(
        pre_switch_score(rows), dip_score(rows, online_steps), final_online_score(rows), cumulative_regret(rows)
    )


def online_steps_of(config: Mapping[str, Any], rows: Sequence[Row]) -> float:
    """The run's online budget: its ``online.steps`` config, else the last env step it logged."""
    planned = config.get("online.steps")
    if isinstance(planned, (int, float)) and planned > 0:
        return float(planned)
    steps = [float(r[ONLINE_STEP_METRIC]) for r in rows if is_online_row(r)]
    return max(steps) if steps else 0.0


class Curve(NamedTuple):
    """Seed-mean ± std (ddof = 1; 0 for one seed) of the score at each env step; step 0 = the switch."""

    env_steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray


def online_curve(seed_rows: Sequence[Sequence[Row]]) -> Curve:
    """The online-phase curve over seeds, with each fine-tuned seed's pre-switch score at env step 0."""
    at: dict[float, list[float]] = defaultdict(list)
    for rows in seed_rows:
        pre = pre_switch_score(rows)
        if pre is not None:
            at[0.0].append(pre)
        for step, score in online_evals(rows):
            at[step].append(score)
    steps = sorted(at)
    mean = [float(np.mean(at[s])) for s in steps]
    std = [float(np.std(at[s], ddof=1)) if len(at[s]) > 1 else 0.0 for s in steps]
    return Curve(np.array(steps), np.array(mean), np.array(std), np.array([len(at[s]) for s in steps]))
