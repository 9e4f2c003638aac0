"""D4RL reference returns (random / expert), the one place these numbers live.

Configs reach them through the ``${d4rl_ref:<task or env id>,min|max}`` resolver; dataset
metadata, when it has reference scores, takes precedence at evaluation time.
"""

from __future__ import annotations

import re

# (random, expert) undiscounted returns from D4RL, used for its normalized score.
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "pen": (-96.262799, 3076.8331),
    "door": (-56.512833, 2880.5693),
    "hammer": (-274.856578, 12794.1346),
    "relocate": (-6.425911, 4233.8773),
    "antmaze": (0.0, 1.0),
    "kitchen": (0.0, 4.0),
}


def d4rl_task(name: str) -> str | None:
    """The D4RL task family of a short name or Gymnasium id: 'Hopper-v4' → 'hopper'."""
    # The first token names the family: 'AntMaze_UMaze-v4' → 'antmaze', 'Pendulum-v1' → 'pendulum' (no match).
    first = re.split(r"[^a-z0-9]", name.lower(), maxsplit=1)[0]
    for prefix in ("adroithand", "franka"):
        first = first.removeprefix(prefix)
    return first if first in D4RL_REFERENCE else None


def d4rl_reference(name: str, which: str) -> float | None:
    """``which`` is 'min' or 'max'; None when ``name`` is not a D4RL task (the score is then NaN)."""
    if which not in ("min", "max"):
        raise ValueError(f"d4rl_ref takes 'min' or 'max', not {which!r}")
    task = d4rl_task(str(name))
    if task is None:
        return None
    return D4RL_REFERENCE[task][0 if which == "min" else 1]
