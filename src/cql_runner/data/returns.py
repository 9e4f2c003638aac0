"""Discounted Monte-Carlo returns-to-go, one episode at a time.

The same function serves the offline data (all episodes at load) and the online buffer (each
episode when it ends), so the Cal-QL bound sees the same quantity in both phases.
"""

from __future__ import annotations

import numpy as np


def episode_returns_to_go(
    *, rewards: np.ndarray, discount: float, sparse_reward_neg: float | None = None
) -> np.ndarray:
    """G_t = Σ_{j≥t} γ^{j−t} r_j over one episode's rewards (L,) → (L,) float32.

    The episode's own end stops the sum, whether it terminated (exact) or was truncated (the
    tail beyond the time limit is unknown; for non-negative rewards the cut sum is a lower
    bound of the value, the safe side for a lower bound on Q).

    ``sparse_reward_neg``: on sparse-reward tasks, the reward of a step that has not reached
    the goal. An episode whose every reward equals it never reached the goal, and each of its
    steps gets r_neg / (1 − γ), the value of never reaching it (Cal-QL), instead of a sum whose
    size would depend on where the time limit fell. Accumulated in float64.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    # Compared in float32, the precision rewards are stored in.
    if (
        r.size
        and sparse_reward_neg is not None
        and discount < 1
        and np.all(r.astype(np.float32) == np.float32(sparse_reward_neg))
    ):
        return np.full(r.size, sparse_reward_neg / (1.0 - discount), dtype=np.float32)
    out = np.empty(r.size, dtype=np.float64)
    acc = 0.0
    for t in range(r.size - 1, -1, -1):
        acc = r[t] + discount * acc
        out[t] = acc
    return out.astype(np.float32)


def returns_to_go(
    *, rewards: np.ndarray, episode_starts: np.ndarray, discount: float, sparse_reward_neg: float | None = None
) -> np.ndarray:
    """Returns-to-go of flat transitions (T,) whose episodes begin at ``episode_starts`` (E,)."""
    rewards = np.asarray(rewards)
    out = np.empty(rewards.shape[0], dtype=np.float32)
    ends = np.append(np.asarray(episode_starts)[1:], rewards.shape[0])
    for start, end in zip(episode_starts, ends):
        out[start:end] = episode_returns_to_go(
            rewards=rewards[start:end], discount=discount, sparse_reward_neg=sparse_reward_neg
        )
    return out
