"""Aggregate statistics with stratified bootstrap confidence intervals, computed by ``rliable``.

Following Agarwal et al. (NeurIPS 2021), scores are arranged as a (runs × tasks) matrix and every
estimate comes with a 95% stratified bootstrap interval (runs resampled within each task). The
estimators are rliable's own; this module only arranges the numbers, fixes the bootstrap's seed so
a report is reproducible, and declines to invent an interval from a single run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats
from rliable import library, metrics

ESTIMATORS = ("mean", "median", "iqm", "optimality_gap")
TITLES = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}
CONFIDENCE = 0.95
# Normalized scores are on D4RL's 0–100 scale, so the optimality gap measures the shortfall below 100.
OPTIMALITY_TARGET = 100.0
DEFAULT_REPS = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its confidence interval; ``low``/``high`` are None when n < 2."""

    value: float
    low: float | None
    high: float | None
    n: int  # runs per task that entered the estimate

    @property
    def has_interval(self) -> bool:
        return self.low is not None


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """rliable's stratified bootstrap draws from numpy's global generator; seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _estimator_funcs() -> dict[str, Callable[[np.ndarray], float]]:
    return {
        "mean": metrics.aggregate_mean,
        # rliable's median is the median of per-task means; within one task that would be the mean again,
        # so a single task's median is taken over its runs.
        "median": lambda s: metrics.aggregate_median(s) if s.shape[1] > 1 else float(np.median(s)),
        "iqm": metrics.aggregate_iqm,
        "optimality_gap": lambda s: metrics.aggregate_optimality_gap(s, gamma=OPTIMALITY_TARGET),
    }


def _as_matrix(scores: np.ndarray | Sequence[float]) -> np.ndarray:
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[:, None]  # one task
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (runs × tasks) matrix, got shape {matrix.shape}")
    return matrix


def aggregate_estimates(
    scores: np.ndarray | Sequence[float], *, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED
) -> dict[str, Estimate]:
    """Mean, median, IQM and optimality gap of a (runs × tasks) score matrix with 95% CIs.

    A 1-D array is one task. With one run per task there is nothing to resample: the point
    estimates are returned without an interval.
    """
    matrix = _as_matrix(scores)
    funcs = _estimator_funcs()
    n = matrix.shape[0]
    if n < 2:
        return {name: Estimate(float(f(matrix)), None, None, n) for name, f in funcs.items()}

    def all_estimators(s: np.ndarray) -> np.ndarray:
        return np.array([f(s) for f in funcs.values()])

    with _seeded(seed):
        points, intervals = library.get_interval_estimates(
            {"scores": matrix}, all_estimators, reps=reps, confidence_interval_size=CONFIDENCE
        )
    point, (low, high) = points["scores"], intervals["scores"]
    return {name: Estimate(float(point[i]), float(low[i]), float(high[i]), n) for i, name in enumerate(funcs)}


def probability_of_improvement(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    *,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """P(X > Y): the chance that a run of X beats a run of Y on the same task, averaged over tasks
    (ties count one half), with a stratified independent bootstrap CI. ``n`` is the smaller run count."""
    mx, my = _as_matrix(x), _as_matrix(y)
    if mx.shape[1] != my.shape[1]:
        raise ValueError(f"X has {mx.shape[1]} tasks but Y has {my.shape[1]}")
    n = min(mx.shape[0], my.shape[0])
    point = float(metrics.probability_of_improvement(mx, my))
    if n < 2:
        return Estimate(point, None, None, n)
    with _seeded(seed):
        _, intervals = library.get_interval_estimates(
            {"pair": [mx, my]},
            lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
    low, high = intervals["pair"][:, 0]
    return Estimate(point, float(low), float(high), n)


@dataclass(frozen=True)
class Profile:
    """Fraction of runs scoring above each threshold, with its pointwise CI (None when n < 2)."""

    thresholds: np.ndarray
    fraction: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    n: int


def performance_profiles(
    score_dict: Mapping[str, np.ndarray], thresholds: np.ndarray, *, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED
) -> dict[str, Profile]:
    """Score distributions (rliable's performance profiles) of each setting's (runs × tasks) scores."""
    profiles: dict[str, Profile] = {}
    matrices = {name: _as_matrix(s) for name, s in score_dict.items()}
    with _seeded(seed):
        for name, matrix in matrices.items():
            if matrix.shape[0] < 2:
                fraction = library.score_distributions(matrix, thresholds)
                profiles[name] = Profile(thresholds, np.asarray(fraction, dtype=float), None, None, 1)
                continue
            points, cis = library.create_performance_profile(
                {name: matrix}, thresholds, reps=reps, confidence_interval_size=CONFIDENCE
            )
            low, high = cis[name]
            profiles[name] = Profile(thresholds, np.asarray(points[name], dtype=float), low, high, matrix.shape[0])
    return profiles


def _iqm_per_step(block: np.ndarray) -> np.ndarray:
    """rliable's IQM (the 25% trimmed mean) of each step's runs, for a (runs × 1 × steps) block, in one call
    rather than one per step: the bootstrap calls this thousands of times."""
    return scipy.stats.trim_mean(block[:, 0, :], proportiontocut=0.25, axis=0)


@dataclass(frozen=True)
class BandCurve:
    """IQM over runs at each step with a pointwise bootstrap band (NaN where fewer than 2 runs)."""

    steps: np.ndarray
    iqm: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray


def iqm_curve(
    per_step: Mapping[int, Sequence[float]], *, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED
) -> BandCurve:
    """IQM across runs of a learning curve at each step, and its 95% bootstrap band.

    Steps with the same number of runs are bootstrapped together as one (runs × 1 × steps) array,
    as rliable does for sample-efficiency curves, so the cost is one bootstrap per distinct count.
    """
    steps = np.array(sorted(per_step))
    iqm, low, high = (np.full(len(steps), np.nan) for _ in range(3))
    counts = np.array([len(per_step[s]) for s in steps])
    with _seeded(seed):
        for count in sorted(set(counts.tolist())):
            idx = np.flatnonzero(counts == count)
            # (runs, 1 task, steps): each step's values in the order the runs were given.
            block = np.array([per_step[int(steps[i])] for i in idx], dtype=float).T[:, None, :]
            iqm[idx] = _iqm_per_step(block)
            if count < 2:
                continue
            _, cis = library.get_interval_estimates(
                {"curve": block}, _iqm_per_step, reps=reps, confidence_interval_size=CONFIDENCE
            )
            low[idx], high[idx] = cis["curve"]
    return BandCurve(steps, iqm, low, high, counts)
