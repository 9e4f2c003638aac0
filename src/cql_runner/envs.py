"""Building evaluation envs, with one-line errors that say what to do.

Every env the runner steps goes through :func:`make_env`, so an unknown id, a discrete task or
a missing optional dependency fails here with the fix in the message, not deep inside
gymnasium or halfway through a training run.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import error as gym_error
from gymnasium.vector import SyncVectorEnv

# Env families registered by gymnasium-robotics rather than gymnasium itself.
ROBOTICS_PREFIXES = ("AntMaze", "PointMaze", "Adroit", "FrankaKitchen")
ROBOTICS_INSTALL_HINT = 'pip install "cql-runner[robotics]"'
MINATAR_INSTALL_HINT = 'pip install "cql-runner[minatar]"'
ATARI_INSTALL_HINT = 'pip install "cql-runner[atari]"'
MINIGRID_INSTALL_HINT = 'pip install "cql-runner[minigrid]"'


class EnvError(RuntimeError):
    """An env cannot be built or is unsupported; the message names the fix."""


def _env_name(env_id: str) -> str:
    """The bare name of an id: no namespace, no version ("ns/Name-v3" -> "Name")."""
    name = env_id.rsplit("/", 1)[-1]
    return re.sub(r"-v\d+$", "", name)


def _needs_robotics(env_id: str) -> bool:
    return _env_name(env_id).startswith(ROBOTICS_PREFIXES)


def _ensure_robotics_registered(env_id: str) -> None:
    """Import gymnasium-robotics for its envs (importing registers them), or say how to get it."""
    if env_id in gym.registry or not _needs_robotics(env_id):
        return
    try:
        import gymnasium_robotics
    except ImportError as exc:
        raise EnvError(
            f"environment {env_id!r} comes from gymnasium-robotics, which is not installed; "
            f"install it with `{ROBOTICS_INSTALL_HINT}`"
        ) from exc
    gym.register_envs(gymnasium_robotics)


def _ensure_minatar_registered(env_id: str) -> None:
    """Register MinAtar's ``MinAtar/<Game>-v0|v1`` envs (its package does not on import)."""
    if env_id in gym.registry or not env_id.startswith("MinAtar/"):
        return
    # MinAtar warns through the root logger when matplotlib/seaborn (only needed to render) are absent.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import minatar.gym
    except ImportError as exc:
        raise EnvError(
            f"environment {env_id!r} comes from MinAtar, which is not installed; "
            f"install it with `{MINATAR_INSTALL_HINT}`"
        ) from exc
    finally:
        root.setLevel(level)
    minatar.gym.register_envs()


class Uint32ResetSeed(gym.Wrapper):
    """Folds reset seeds into [0, 2**32) for envs seeded through numpy's legacy RandomState (MinAtar).

    The runner's collection seeds reach 10**15; SeedSequence mixes every bit of them into 32, so
    distinct seeds stay distinct in practice and the same seed always gives the same episode.
    """

    @property
    def spec(self):  # type: ignore[override]
        # The env's own spec: datasets record the env, not this seeding detail of the runner.
        return self.env.spec

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            seed = int(np.random.SeedSequence(int(seed)).generate_state(1)[0])
        return self.env.reset(seed=seed, options=options)


def suggest_env_ids(env_id: str, n: int = 3) -> list[str]:
    """Registered ids closest to ``env_id``, ignoring case (typos like 'hopper-v5')."""
    by_lower = {key.lower(): key for key in gym.registry}
    matches = difflib.get_close_matches(env_id.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[m] for m in matches]


def _unknown_id_error(env_id: str) -> EnvError:
    close = suggest_env_ids(env_id)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return EnvError(f"unknown environment id {env_id!r}{hint}")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_action_space(env: gym.Env, env_id: str, discrete: bool = False) -> None:
    space = env.action_space
    if discrete:
        if not isinstance(space, gym.spaces.Discrete):
            raise EnvError(
                f"environment {env_id!r} has a {type(space).__name__} action space, not Discrete; "
                "drop action_space=discrete to train continuous CQL on it"
            )
        return
    if not isinstance(space, gym.spaces.Box):
        raise EnvError(
            f"environment {env_id!r} has a discrete action space ({type(space).__name__}); "
            "continuous (Box) CQL cannot act in it; use discrete CQL with action_space=discrete"
        )
    # Policies act in [-1, 1] and are rescaled to [low, high]; infinite bounds have no scale.
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise EnvError(
            f"environment {env_id!r} has an unbounded Box action space; "
            "CQL here needs finite action bounds to rescale its [-1, 1] policy"
        )


def _ensure_ale_registered(env_id: str) -> None:
    """Register ale-py's ``ALE/<Game>-v5`` envs (it ships the ROMs), or say how to get it."""
    if env_id in gym.registry or not env_id.startswith("ALE/"):
        return
    try:
        import ale_py
    except ImportError as exc:
        raise EnvError(
            f"environment {env_id!r} comes from ale-py, which is not installed; install it with `{ATARI_INSTALL_HINT}`"
        ) from exc
    gym.register_envs(ale_py)


def _ensure_minigrid_registered(env_id: str) -> None:
    """Register the ``MiniGrid-*`` / ``BabyAI-*`` envs (importing minigrid does), or say how to get it."""
    if env_id in gym.registry or not env_id.startswith(("MiniGrid-", "BabyAI-")):
        return
    try:
        import minigrid  # noqa: F401 (importing registers the envs)
    except ImportError as exc:
        raise EnvError(
            f"environment {env_id!r} comes from minigrid, which is not installed; "
            f"install it with `{MINIGRID_INSTALL_HINT}`"
        ) from exc


def _make_unchecked(env_id: str, max_episode_steps: int | None = None, **make_kwargs: object) -> gym.Env:
    """``gym.make`` with one-line errors for unknown ids and missing extras; no action-space check."""
    _ensure_robotics_registered(env_id)
    _ensure_minatar_registered(env_id)
    _ensure_ale_registered(env_id)
    _ensure_minigrid_registered(env_id)
    kwargs: dict[str, Any] = dict(make_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        env = gym.make(env_id, **kwargs)
        return Uint32ResetSeed(env) if env_id.startswith("MinAtar/") else env
    except gym_error.UnregisteredEnv as exc:
        raise _unknown_id_error(env_id) from exc
    except (gym_error.DeprecatedEnv, gym_error.DependencyNotInstalled, ImportError) as exc:
        # e.g. Hopper-v3 needs mujoco-py, which moved out of gymnasium.
        raise EnvError(f"cannot build environment {env_id!r}: {_one_line(exc)}") from exc


def has_discrete_actions(env_id: str, max_episode_steps: int | None = None) -> bool:
    """Whether ``env_id`` has a Discrete action space (EnvError for an unknown id)."""
    env = _make_unchecked(env_id, max_episode_steps)
    try:
        return isinstance(env.action_space, gym.spaces.Discrete)
    finally:
        env.close()


def make_env(
    env_id: str, max_episode_steps: int | None = None, *, discrete: bool = False, **make_kwargs: object
) -> gym.Env:
    """``gym.make`` with checks: a known id, installed extras, and bounded Box actions
    (a Discrete action space instead with ``discrete=True``).

    ``max_episode_steps`` overrides the registered time limit; None keeps the env's own.
    Raises :class:`EnvError` with a one-line message naming the fix.
    """
    env = _make_unchecked(env_id, max_episode_steps, **make_kwargs)
    try:
        _check_action_space(env, env_id, discrete)
    except EnvError:
        env.close()
        raise
    return env


def make_vector_env(
    env_id: str, n: int, max_episode_steps: int | None = None, *, discrete: bool = False
) -> SyncVectorEnv:
    """``n`` copies of :func:`make_env` in one SyncVectorEnv.

    Sync, not Async: MuJoCo steps are microseconds, so on few cores the inter-process
    round trip of AsyncVectorEnv costs more than it parallelises (measured 2-3x slower).
    """
    if n < 1:
        raise ValueError(f"make_vector_env needs n >= 1 (got {n})")
    # Build the first env eagerly so a bad id fails once, with our message.
    first = make_env(env_id, max_episode_steps, discrete=discrete)
    fns: list[Callable[[], gym.Env]] = [lambda: first]
    fns += [lambda: make_env(env_id, max_episode_steps, discrete=discrete) for _ in range(n - 1)]
    return SyncVectorEnv(fns)
