"""Observation flattening and action scaling, shared by data loading and evaluation.

Dict observations (antmaze, pointmaze) are flattened by concatenating their entries in a
fixed key order: ``observation`` first, then ``achieved_goal``, then ``desired_goal``, then
any other keys in sorted order. Training and evaluation both go through
:func:`flatten_obs`, so the policy always sees the same vector layout. Dicts with Discrete or
Text entries (MiniGrid) follow the same key order through :class:`DictLayout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class DictLayout:
    """How a Dict observation with non-Box entries (MiniGrid's) becomes one vector.

    Entries are concatenated in ``keys`` order (the :func:`dict_obs_keys` rule); a Discrete entry
    becomes a one-hot vector of its ``n`` (as ``gymnasium.spaces.flatten`` does), a Box entry its
    values in row-major order; Text entries (``dropped``, e.g. MiniGrid's constant ``mission``)
    are left out. The loader flattens the data and the evaluator wraps the env with this layout,
    so both present the same vector.
    """

    keys: tuple[str, ...]
    one_hot: dict[str, int]
    dropped: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "one_hot": dict(self.one_hot), "dropped": list(self.dropped)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DictLayout:
        return cls(tuple(raw["keys"]), {str(k): int(v) for k, v in raw["one_hot"].items()}, tuple(raw["dropped"]))


def flatten_entries(obs: Mapping[str, Any], layout: DictLayout, batch_dims: int) -> np.ndarray:
    """One float32 vector per observation: (*batch, d) from entries with ``batch_dims`` leading dims."""
    parts = []
    for key in layout.keys:
        value = np.asarray(obs[key])
        batch = value.shape[:batch_dims]
        if key in layout.one_hot:
            width = layout.one_hot[key]
            index = value.reshape(batch).astype(np.int64)
            if index.size and (index.min() < 0 or index.max() >= width):
                raise ValueError(f"observation entry {key!r} holds values outside Discrete({width})")
            parts.append(np.eye(width, dtype=np.float32)[index])
        else:
            parts.append(value.reshape(*batch, -1).astype(np.float32))
    return np.concatenate(parts, axis=-1)
