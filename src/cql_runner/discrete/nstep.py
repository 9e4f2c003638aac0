"""n-step returns over a flat dataset, cut at episode ends.

Row t of the result is the n-step transition from s_t: the discounted reward sum of the next
m = min(n, steps left in the episode) steps, the row whose ``next_observation`` it bootstraps
from (t + m − 1), and the bootstrap discount γ^m·(1 − terminal_{t+m−1}). A true termination
inside the window ends the return without a bootstrap; a time-limit truncation (or the cut
end of a recorded episode) ends the window early but still bootstraps from the state it
reached, with γ^m. The window never crosses into the next episode.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class NStepTransitions(NamedTuple):
    returns: np.ndarray  # (T,) float32: Σ_{k<m} γ^k r_{t+k}
    bootstrap_index: np.ndarray  # (T,) int64: t + m − 1, whose next observation is s_{t+m}
    discounts: np.ndarray  # (T,) float32: γ^m·(1 − terminal_{t+m−1})


def n_step_transitions(
    *, rewards: np.ndarray, terminals: np.ndarray, episode_starts: np.ndarray, discount: float, n: int
) -> NStepTransitions:
    """n-step returns for every row of a flat dataset whose episodes begin at ``episode_starts``.

    ``terminals`` (T,) marks true terminations; any other episode end (a truncation or the end of
    the data) bootstraps. With n = 1 this is (r_t, t, γ·(1 − d_t)).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    size = len(rewards)
    rewards64 = np.asarray(rewards, np.float64)
    done = np.asarray(terminals, bool)
    # Last row of each episode: the row before the next start, and the final row.
    episode_end = np.empty(size, np.int64)
    ends = np.append(np.asarray(episode_starts[1:], np.int64), size) - 1
    for start, end in zip(episode_starts, ends):
        episode_end[start : end + 1] = end
    returns = np.zeros(size, np.float64)
    last = np.arange(size, dtype=np.int64)
    alive = np.ones(size, bool)  # window still open (no termination seen yet)
    scale = np.ones(size, np.float64)  # γ^k for the next term
    rows = np.arange(size, dtype=np.int64)
    for k in range(n):
        idx = rows + k
        ok = alive & (idx <= episode_end)
        safe = np.minimum(idx, size - 1)
        returns += np.where(ok, scale * rewards64[safe], 0.0)
        last = np.where(ok, idx, last)
        # A termination at this step closes the window for the following steps.
        alive = ok & ~done[safe]
        scale *= discount
    m = last - rows + 1
    discounts = np.power(discount, m) * (1.0 - done[last])
    return NStepTransitions(returns.astype(np.float32), last, discounts.astype(np.float32))
