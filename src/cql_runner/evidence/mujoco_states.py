"""Put a MuJoCo env into the state a dataset observation describes, so Monte-Carlo returns can start from the
dataset's own initial states (the issue's wording) rather than only from fresh env resets.

Only the suite's two tasks are known; for any other env :func:`restore` returns False and the value check
falls back to reset states. A restore is accepted only when the env then observes exactly the dataset's
observation again, so a wrong inversion can never pass silently.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

# obs -> (qpos, qvel), per bare env name.
Inverse = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
TOLERANCE = 1e-5


def _hopper(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hopper-v5 observes qpos[1:] and clip(qvel, ±10); x (qpos[0]) changes neither dynamics nor reward."""
    return np.concatenate([[0.0], obs[:5]]), np.asarray(obs[5:11], dtype=np.float64)


def _inverted_double_pendulum(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """InvertedDoublePendulum-v5 observes [x, sin θ1, sin θ2, cos θ1, cos θ2, clip(qvel), constraint force]."""
    angles = np.arctan2(obs[1:3], obs[3:5])
    return np.concatenate([obs[:1], angles]), np.asarray(obs[5:8], dtype=np.float64)


INVERSES: dict[str, Inverse] = {"Hopper": _hopper, "InvertedDoublePendulum": _inverted_double_pendulum}


def env_name(env_id: str) -> str:
    return env_id.rsplit("/", 1)[-1].split("-v")[0]


def supported(env_id: str) -> bool:
    return env_name(env_id) in INVERSES


def restore(env: gym.Env, env_id: str, obs: np.ndarray) -> bool:
    """Set a freshly reset ``env`` to the state behind ``obs``; True if the env now observes ``obs`` again."""
    inverse = INVERSES.get(env_name(env_id))
    if inverse is None:
        return False
    obs = np.asarray(obs, dtype=np.float64)
    qpos, qvel = inverse(obs)
    u = env.unwrapped
    u.set_state(qpos, qvel)  # type: ignore[attr-defined]
    again = np.asarray(u._get_obs(), dtype=np.float64)  # type: ignore[attr-defined]
    return again.shape == obs.shape and bool(np.allclose(again, obs, atol=TOLERANCE, rtol=0.0))
