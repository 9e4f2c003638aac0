"""Observation flattening and action scaling, shared by data loading and evaluation.

Dict observations (antmaze, pointmaze) are flattened by concatenating their entries in a
fixed key order: ``observation`` first, then ``achieved_goal``, then ``desired_goal``, then
any other keys in sorted order. Training and evaluation both go through
:func:`flatten_obs`, so the policy always sees the same vector layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PREFERRED_KEY_ORDER = ("observation", "achieved_goal", "desired_goal")


def dict_obs_keys(keys: Sequence[str]) -> list[str]:
    """The documented flattening order for a Dict observation's keys."""
    first = [k for k in PREFERRED_KEY_ORDER if k in keys]
    rest = sorted(k for k in keys if k not in PREFERRED_KEY_ORDER)
    return first + rest


def flatten_obs(obs: np.ndarray | Mapping[str, np.ndarray], keys: Sequence[str] | None) -> np.ndarray:
    """Concatenate a Dict observation along its last axis in ``keys`` order; pass arrays through.

    Works on a single observation (each entry 1-D) and on batches (entries (..., d_k)).
    """
    if isinstance(obs, Mapping):
        if keys is None:
            keys = dict_obs_keys(list(obs.keys()))
        parts = [np.asarray(obs[k], dtype=np.float32) for k in keys]
        # Scalars inside a dict observation become length-1 features.
        parts = [p[..., None] if p.ndim == 0 else p for p in parts]
        return np.concatenate(parts, axis=-1)
    return np.asarray(obs, dtype=np.float32)


def to_unit_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map env actions in [low, high] to [-1, 1], the range of the tanh policy."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    unit = 2.0 * (np.asarray(actions, dtype=np.float64) - low) / (high - low) - 1.0
    return np.clip(unit, -1.0, 1.0).astype(np.float32)


def from_unit_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map policy actions in [-1, 1] back to the env's [low, high]."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    env = low + (np.asarray(actions, dtype=np.float64) + 1.0) * 0.5 * (high - low)
    return np.clip(env, low, high).astype(np.float32)
