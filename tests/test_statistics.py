"""The report's statistics: rliable's estimators and stratified bootstrap, seeded and arranged by us."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from rliable import library, metrics

from cql_runner.report.statistics import (
    aggregate_estimates,
    iqm_curve,
    performance_profiles,
    probability_of_improvement,
)


def test_iqm_of_a_hand_checked_example() -> None:
    # 8 scores: the IQM drops the 2 lowest and the 2 highest and averages 3, 4, 5, 6.
    scores = np.array([[8.0, 1.0], [2.0, 7.0], [6.0, 3.0], [4.0, 5.0]])  # 4 runs × 2 tasks
    est = aggregate_estimates(scores, reps=200)
    assert est["iqm"].value == pytest.approx(4.5)
    assert est["mean"].value == pytest.approx(4.5)
    # Per-task means are 5 and 4: the median of two task means is their average.
    assert est["median"].value == pytest.approx(4.5)
    # Every score is below 100, so the gap is 100 minus the mean.
    assert est["optimality_gap"].value == pytest.approx(95.5)
    assert all(e.n == 4 and e.low <= e.value <= e.high for e in est.values())


def test_iqm_ignores_an_outlier_that_moves_the_mean() -> None:
    scores = np.array([10.0, 11.0, 12.0, 13.0, 1000.0])
    est = aggregate_estimates(scores, reps=200)
    assert est["median"].value == 12.0  # one task: the median over its runs
    # trim 25% of 5 values = 1 from each end: mean of 11, 12, 13.
    assert est["iqm"].value == pytest.approx(12.0)
    assert est["mean"].value == pytest.approx(209.2)


def test_estimates_equal_rliable_called_directly_with_the_same_seed() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(50, 20, size=(5, 3))
    ours = aggregate_estimates(scores, reps=500, seed=7)

    def funcs(s: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_mean(s),
                metrics.aggregate_median(s),
                metrics.aggregate_iqm(s),
                metrics.aggregate_optimality_gap(s, gamma=100.0),
            ]
        )

    np.random.seed(7)
    points, cis = library.get_interval_estimates({"x": scores}, funcs, reps=500)
    for i, name in enumerate(("mean", "median", "iqm", "optimality_gap")):
        assert ours[name].value == pytest.approx(points["x"][i])
        assert (ours[name].low, ours[name].high) == pytest.approx(tuple(cis["x"][:, i]))


def test_one_task_interval_agrees_with_scipy_percentile_bootstrap() -> None:
    # With one task, the stratified bootstrap is the plain bootstrap over runs, so scipy's
    # percentile bootstrap of the same statistic gives the same interval up to Monte-Carlo error.
    scores = np.random.default_rng(0).normal(60, 15, size=10)
    est = aggregate_estimates(scores, reps=4000)["iqm"]
    ref = scipy.stats.bootstrap(
        (scores,),
        lambda x, axis: scipy.stats.trim_mean(x, 0.25, axis=axis),
        n_resamples=4000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert est.low == pytest.approx(ref.low, abs=2.0)
    assert est.high == pytest.approx(ref.high, abs=2.0)


def test_seeded_bootstrap_is_reproducible_and_leaves_numpy_global_state_alone() -> None:
    scores = np.arange(12.0).reshape(6, 2)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = aggregate_estimates(scores, reps=300, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    assert a == aggregate_estimates(scores, reps=300, seed=5)


def test_one_run_has_no_interval() -> None:
    est = aggregate_estimates([42.0])
    assert est["mean"].value == 42.0 and est["iqm"].value == 42.0
    assert not any(e.has_interval for e in est.values())
    assert probability_of_improvement([1.0], [0.0]).low is None


def test_probability_of_improvement() -> None:
    a = np.array([[1.0], [2.0], [3.0]])
    assert probability_of_improvement(a, a, reps=300).value == 0.5
    same = probability_of_improvement(a, a, reps=300)
    assert same.low <= 0.5 <= same.high
    better = probability_of_improvement(a + 10, a, reps=300)
    assert better.value == 1.0
    # Hand count: pairs (x > y) among x in {1, 4}, y in {2, 3}: (4,2), (4,3) -> 2 of 4.
    assert probability_of_improvement([1.0, 4.0], [2.0, 3.0], reps=100).value == pytest.approx(0.5)
    assert probability_of_improvement([5.0, 4.0], [2.0, 4.0], reps=100).value == pytest.approx(3.5 / 4)
    np.random.seed(0)
    _, cis = library.get_interval_estimates(
        {"p": [a + 1, a]}, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=300
    )
    ours = probability_of_improvement(a + 1, a, reps=300, seed=0)
    assert (ours.low, ours.high) == pytest.approx(tuple(cis["p"][:, 0]))


def test_performance_profile_fractions() -> None:
    scores = {"a": np.array([10.0, 20.0, 30.0, 40.0]), "b": np.array([50.0])}
    taus = np.array([0.0, 15.0, 35.0, 60.0])
    prof = performance_profiles(scores, taus, reps=200)
    assert prof["a"].fraction == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert np.all(prof["a"].low <= prof["a"].fraction) and np.all(prof["a"].fraction <= prof["a"].high)
    assert prof["b"].fraction == pytest.approx([1.0, 1.0, 1.0, 0.0]) and prof["b"].low is None


def test_iqm_curve_matches_rliable_per_step() -> None:
    per_step = {100: [1.0, 2.0, 3.0, 100.0], 200: [5.0, 6.0, 7.0, 8.0], 300: [9.0]}
    c = iqm_curve(per_step, reps=300)
    assert list(c.steps) == [100, 200, 300]
    assert c.iqm == pytest.approx([metrics.aggregate_iqm(np.array(per_step[s])[:, None]) for s in (100, 200, 300)])
    assert np.all(c.low[:2] <= c.iqm[:2]) and np.all(c.iqm[:2] <= c.high[:2])
    assert np.isnan(c.low[2]) and list(c.n) == [4, 4, 1]
