"""The one stepping loop behind evaluation and data collection.

K agents (one per base seed) each run E episodes; all K·E envs live in one SyncVectorEnv and
share one policy call per vector step. Env (k, e) is reset with seed
``seeds[k] * 10_000 + seed_offset + e`` and runs exactly one episode, so an agent's result
does not depend on which other agents it was batched with.

Why the sub-envs are stepped one by one instead of through ``SyncVectorEnv.step``: gymnasium
1.x vector envs have no step mask. In the default NEXT_STEP autoreset mode a finished env is
reset on the following ``step`` call and then keeps running a new, unwanted episode (with an
unseeded reset); in DISABLED mode stepping a finished env trips an assertion. Stepping only
the live ``vec.envs[i]`` is what ``SyncVectorEnv.step`` does internally anyway (a Python loop),
minus the wasted steps of finished envs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from gymnasium.spaces import Box
from gymnasium.vector import SyncVectorEnv

from cql_runner.data.spaces import flatten_obs, from_unit_actions
from cql_runner.envs import EnvError, make_vector_env

# Room for this many episodes per base seed before two agents' env seeds would collide.
SEED_STRIDE = 10_000

# (K, E, obs_dim) float32 flat observations -> (K, E, act_dim) actions in [-1, 1].
Policy = Callable[[np.ndarray], Any]
RawObs = np.ndarray | dict[str, np.ndarray]


@dataclass
class Episode:
    """One recorded episode of L steps. ``obs[t + 1]`` is the observation after ``actions[t]``.

    ``obs`` is raw (as the env returned it): an array (L+1, *obs_shape), or for Dict
    observations a dict of arrays (L+1, *entry_shape). Use :meth:`flat_obs` for the
    policy's layout.
    """

    agent: int  # k: index into the ``seeds`` list
    index: int  # e: episode index within the agent
    seed: int  # the env reset seed
    obs: RawObs  # (L+1, ...)
    actions: np.ndarray  # (L, act_dim) float32, env units (what env.step received)
    unit_actions: np.ndarray  # (L, act_dim) float32, in [-1, 1] (the policy output, clipped)
    rewards: np.ndarray  # (L,) float64
    terminations: np.ndarray  # (L,) bool
    truncations: np.ndarray  # (L,) bool

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

    def flat_obs(self, keys: Sequence[str] | None = None) -> np.ndarray:
        """(L+1, obs_dim) float32 observations in the policy's layout."""
        flat = flatten_obs(self.obs, keys)
        return flat.reshape(flat.shape[0], -1)

    @property
    def observations(self) -> RawObs:
        """Raw observations before each step, (L, ...)."""
        return _slice_obs(self.obs, slice(None, -1))

    @property
    def next_observations(self) -> RawObs:
        """Raw observations after each step, (L, ...)."""
        return _slice_obs(self.obs, slice(1, None))


@dataclass
class RolloutResult:
    """Per-env outcomes, indexed [k, e]."""

    returns: np.ndarray  # (K, E) float64, undiscounted
    lengths: np.ndarray  # (K, E) int64
    # With record=True: K·E episodes in env order (agent-major: position k * E + e).
    episodes: list[Episode] | None = None

    def agent_episodes(self, k: int) -> list[Episode]:
        if self.episodes is None:
            raise ValueError("no trajectories were recorded; pass record=True")
        return [ep for ep in self.episodes if ep.agent == k]


def _slice_obs(obs: RawObs, index: slice) -> RawObs:
    if isinstance(obs, Mapping):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def _copy_obs(obs: Any) -> RawObs:
    if isinstance(obs, Mapping):
        return {key: np.array(value) for key, value in obs.items()}
    return np.array(obs)


def _stack_obs(seq: list[RawObs]) -> RawObs:
    if isinstance(seq[0], Mapping):
        return {key: np.stack([o[key] for o in seq]) for key in seq[0]}
    return np.stack(cast(list[np.ndarray], seq))


def _stack_actions(rows: list[np.ndarray], act_dim: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, act_dim)


def _batch_row(batch: Any, i: int) -> RawObs:
    if isinstance(batch, Mapping):
        return {key: np.array(value[i]) for key, value in batch.items()}
    return np.array(batch[i])


def env_seeds(seeds: Sequence[int], episodes_per_seed: int, seed_offset: int = 0) -> list[int]:
    """Reset seed of every env, agent-major: ``seeds[k] * 10_000 + seed_offset + e``."""
    if episodes_per_seed < 1:
        raise ValueError(f"episodes_per_seed must be >= 1 (got {episodes_per_seed})")
    if seed_offset < 0 or seed_offset + episodes_per_seed > SEED_STRIDE:
        # Past the stride, agent k's last envs would reuse agent k+1's seeds.
        raise ValueError(
            f"seed_offset + episodes_per_seed must lie in [0, {SEED_STRIDE}] (got {seed_offset} + {episodes_per_seed})"
        )
    out = [int(s) * SEED_STRIDE + seed_offset + e for s in seeds for e in range(episodes_per_seed)]
    if any(s < 0 for s in out):
        raise ValueError(f"seeds must be >= 0 (got {list(seeds)})")
    return out


def _action_bounds(
    vec: SyncVectorEnv, low: np.ndarray | None, high: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    space = cast(Box, vec.single_action_space)  # continuous actions
    low = np.asarray(space.low if low is None else low, dtype=np.float64)
    high = np.asarray(space.high if high is None else high, dtype=np.float64)
    if low.shape != space.shape or high.shape != space.shape:
        raise ValueError(
            f"action bounds have shapes {low.shape}/{high.shape} but the env's action space "
            f"has shape {space.shape}; the dataset was recorded in a different env"
        )
    if len(space.shape) != 1:
        raise EnvError(f"only 1-D Box action spaces are supported (got shape {space.shape})")
    return low, high


def _check_time_limit(vec: SyncVectorEnv) -> None:
    # Each env must finish on its own; without a time limit the loop could never end.
    spec = vec.envs[0].spec
    if spec is not None and spec.max_episode_steps is None:
        raise EnvError(
            f"environment {spec.id!r} has no time limit; pass max_episode_steps (eval.max_episode_steps=<steps>)"
        )


def _call_policy(policy: Policy, flat: np.ndarray, k: int, e: int, act_dim: int) -> np.ndarray:
    unit = np.asarray(policy(flat.reshape(k, e, -1)), dtype=np.float32)
    if unit.shape != (k, e, act_dim):
        raise ValueError(f"the policy returned actions of shape {unit.shape}; expected {(k, e, act_dim)}")
    if not np.isfinite(unit).all():
        raise ValueError("the policy returned non-finite actions (NaN or inf)")
    return unit.reshape(k * e, act_dim)


class _Recorder:
    """Per-env trajectory buffers, stacked into Episodes at the end."""

    def __init__(self, first_obs: Any, n: int) -> None:
        self.obs: list[list[RawObs]] = [[_batch_row(first_obs, i)] for i in range(n)]
        self.actions: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.units: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.rewards: list[list[float]] = [[] for _ in range(n)]
        self.terms: list[list[bool]] = [[] for _ in range(n)]
        self.truncs: list[list[bool]] = [[] for _ in range(n)]

    def add(
        self, i: int, obs: Any, action: np.ndarray, unit: np.ndarray, reward: float, term: bool, trunc: bool
    ) -> None:
        self.obs[i].append(_copy_obs(obs))
        self.actions[i].append(action)
        self.units[i].append(unit)
        self.rewards[i].append(reward)
        self.terms[i].append(term)
        self.truncs[i].append(trunc)

    def episodes(self, seeds: list[int], e: int, act_dim: int) -> list[Episode]:
        out = []
        for i, seed in enumerate(seeds):
            out.append(
                Episode(
                    agent=i // e,
                    index=i % e,
                    seed=seed,
                    obs=_stack_obs(self.obs[i]),
                    actions=_stack_actions(self.actions[i], act_dim),
                    unit_actions=_stack_actions(self.units[i], act_dim),
                    rewards=np.asarray(self.rewards[i], dtype=np.float64),
                    terminations=np.asarray(self.terms[i], dtype=bool),
                    truncations=np.asarray(self.truncs[i], dtype=bool),
                )
            )
        return out


def rollout(
    vec: SyncVectorEnv,
    policy: Policy,
    seeds: Sequence[int],
    episodes_per_seed: int,
    obs_keys: Sequence[str] | None = None,
    action_low: np.ndarray | None = None,
    action_high: np.ndarray | None = None,
    record: bool = False,
    seed_offset: int = 0,
) -> RolloutResult:
    """Run one episode in each env of ``vec`` (which must hold len(seeds) * episodes_per_seed).

    Reusable: every call resets all envs with explicit seeds, so repeating it with the same
    deterministic policy gives identical results. Bounds of None mean the env's own.
    """
    k, e = len(seeds), episodes_per_seed
    all_seeds = env_seeds(seeds, e, seed_offset)
    n = len(all_seeds)
    if n == 0:
        raise ValueError("rollout needs at least one seed")
    if vec.num_envs != n:
        raise ValueError(f"the vector env has {vec.num_envs} envs; {k} seeds x {e} need {n}")
    low, high = _action_bounds(vec, action_low, action_high)
    act_dim = low.shape[0]
    _check_time_limit(vec)

    reset_seeds: list[int | None] = list(all_seeds)
    first_obs, _ = vec.reset(seed=reset_seeds)
    flat = flatten_obs(first_obs, obs_keys).reshape(n, -1).copy()
    is_dict = isinstance(first_obs, Mapping)
    recorder = _Recorder(first_obs, n) if record else None
    returns = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    envs = vec.envs

    while alive.any():
        # Finished envs still occupy their row (with their last obs); their actions are unused.
        unit = _call_policy(policy, flat, k, e, act_dim)
        actions = from_unit_actions(unit, low, high)
        for i in np.flatnonzero(alive):
            obs, reward, term, trunc, _ = envs[i].step(actions[i])
            returns[i] += float(reward)
            lengths[i] += 1
            flat[i] = flatten_obs(obs, obs_keys).reshape(-1) if is_dict else np.ravel(obs)
            if recorder is not None:
                recorder.add(
                    int(i), obs, actions[i], np.clip(unit[i], -1.0, 1.0), float(reward), bool(term), bool(trunc)
                )
            if term or trunc:
                alive[i] = False

    episodes = recorder.episodes(all_seeds, e, act_dim) if recorder is not None else None
    return RolloutResult(returns.reshape(k, e), lengths.reshape(k, e), episodes)


def run_episodes(
    env_id: str,
    policy: Policy,
    seeds: list[int],
    episodes_per_seed: int,
    obs_keys: Sequence[str] | None,
    action_low: np.ndarray | None,
    action_high: np.ndarray | None,
    max_episode_steps: int | None = None,
    record: bool = False,
    seed_offset: int = 0,
) -> RolloutResult:
    """Build a K·E SyncVectorEnv for ``env_id``, run :func:`rollout` once, and close it."""
    if not seeds:
        raise ValueError("run_episodes needs at least one seed")
    env_seeds(seeds, episodes_per_seed, seed_offset)  # validate before building any env
    vec = make_vector_env(env_id, len(seeds) * episodes_per_seed, max_episode_steps)
    try:
        return rollout(
            vec,
            policy,
            seeds,
            episodes_per_seed,
            obs_keys,
            action_low,
            action_high,
            record=record,
            seed_offset=seed_offset,
        )
    finally:
        vec.close()
