"""Reward transform and observation normalisation on random OfflineData."""

from __future__ import annotations

import numpy as np
import pytest

from cql_runner.data.transforms import (
    MIN_STD,
    apply_reward_transform,
    normalize_observations,
    observation_stats,
)
from cql_runner.data.types import DatasetMeta, OfflineData


@pytest.fixture
def data() -> OfflineData:
    rng = np.random.default_rng(0)
    n = 500
    obs = rng.normal(3.0, [1.0, 5.0, 0.2, 0.0], size=(n, 4)).astype(np.float32)
    obs[:, 3] = 7.0  # a constant feature
    nxt = rng.normal(3.0, 1.0, size=(n, 4)).astype(np.float32)
    return OfflineData(
        observations=obs,
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=nxt,
        terminals=np.zeros(n, np.float32),
        timeouts=np.zeros(n, np.float32),
        episode_starts=np.array([0, 200], np.int64),
        meta=DatasetMeta(dataset_id="synthetic", extra={"k": 1}),
    )


def test_reward_transform(data: OfflineData) -> None:
    before = data.rewards.copy()
    out = apply_reward_transform(data, scale=10.0, bias=-5.0)
    np.testing.assert_allclose(out.rewards, 10.0 * before.astype(np.float64) - 5.0, atol=1e-5)
    assert out.rewards.dtype == np.float32
    np.testing.assert_array_equal(data.rewards, before)  # input untouched
    assert out.meta.extra == {"k": 1, "reward_scale": 10.0, "reward_bias": -5.0}
    assert data.meta.extra == {"k": 1}
    np.testing.assert_allclose(
        out.episode_returns(), 10.0 * data.episode_returns() - 5.0 * np.array([200, 300]), rtol=1e-5
    )


def test_identity_reward_transform(data: OfflineData) -> None:
    out = apply_reward_transform(data, scale=1.0, bias=0.0)
    np.testing.assert_array_equal(out.rewards, data.rewards)
    assert out.rewards is not data.rewards


def test_observation_stats(data: OfflineData) -> None:
    mean, std = observation_stats(data)
    assert mean.dtype == np.float32 and std.dtype == np.float32
    assert mean.shape == std.shape == (4,)
    np.testing.assert_allclose(mean, data.observations.astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std[:3], data.observations[:, :3].astype(np.float64).std(0), rtol=1e-5)
    assert std[3] == pytest.approx(MIN_STD)  # constant column clamped, not zero


def test_normalize_observations(data: OfflineData) -> None:
    obs_before = data.observations.copy()
    mean, std = observation_stats(data)
    out = normalize_observations(data, mean, std)
    assert out.observations.dtype == np.float32 and out.next_observations.dtype == np.float32
    np.testing.assert_allclose(out.observations[:, :3].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.observations[:, :3].std(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out.observations[:, 3], 0.0)
    # Next observations use the same statistics, not their own.
    np.testing.assert_allclose(out.next_observations, (data.next_observations - mean) / std, rtol=1e-5)
    np.testing.assert_array_equal(data.observations, obs_before)
    assert out.meta.extra["obs_normalized"] is True and "obs_normalized" not in data.meta.extra
    np.testing.assert_array_equal(out.rewards, data.rewards)
