"""Dataset transforms applied once at load time. Pure numpy; inputs are never mutated.

The returned OfflineData shares the arrays a transform does not touch with its input (they
are read-only in practice), and carries a copy of the meta that records the transform.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cql_runner.data.types import DatasetMeta, OfflineData

# Below this a feature is (nearly) constant; dividing by its std would blow up noise.
MIN_STD = 1e-3


def _meta_with(data: OfflineData, **extra: object) -> DatasetMeta:
    return dataclasses.replace(data.meta, extra={**data.meta.extra, **extra})


def transform_rewards(rewards: np.ndarray | float, scale: float, bias: float) -> np.ndarray:
    """r' = scale * r + bias in float32: the one formula for dataset, online and r_neg rewards."""
    return (np.float64(scale) * np.asarray(rewards, np.float64) + bias).astype(np.float32)


def sparse_reward_neg(env: object) -> float | None:
    """``env.sparse_reward_neg`` in the units the learner sees (after the reward transform)."""
    raw = getattr(env, "sparse_reward_neg", None)
    if raw is None:
        return None
    return float(transform_rewards(raw, getattr(env, "reward_scale", 1.0), getattr(env, "reward_bias", 0.0)))


def apply_reward_transform(data: OfflineData, scale: float, bias: float) -> OfflineData:
    """r' = scale * r + bias (e.g. antmaze's r * 10 - 5), in float32."""
    rewards = transform_rewards(data.rewards, scale, bias)
    meta = _meta_with(data, reward_scale=float(scale), reward_bias=float(bias))
    return dataclasses.replace(data, rewards=rewards, meta=meta)


def observation_stats(data: OfflineData) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the dataset's observations, std clamped at MIN_STD."""
    obs = data.observations.astype(np.float64)
    mean = obs.mean(axis=0)
    std = np.maximum(obs.std(axis=0), MIN_STD)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_observations(data: OfflineData, mean: np.ndarray, std: np.ndarray) -> OfflineData:
    """(s - mean) / std for observations and next observations alike."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return dataclasses.replace(
        data,
        observations=((data.observations - mean) / std).astype(np.float32),
        next_observations=((data.next_observations - mean) / std).astype(np.float32),
        meta=_meta_with(data, obs_normalized=True),
    )
