"""ε-greedy evaluation of discrete policies, with the same seeding and scores as the continuous one.

Env (k, e) is reset with ``seeds[k] * 10_000 + seed_offset + e`` as in :mod:`cql_runner.rollout`.
The ε-draws of agent k come from its own generator, seeded by (seed, seed_offset) at every
evaluation and advanced once per vector step, so an agent's result depends neither on the
other agents it is batched with nor on earlier evaluations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation, TransformObservation

from cql_runner.data.spaces import DictLayout, flatten_entries, flatten_obs
from cql_runner.data.types import DatasetMeta
from cql_runner.envs import EnvError, make_env
from cql_runner.evaluation import MISSING_REFS, normalized_score, reference_scores, resolve_env_id
from cql_runner.rollout import Episode, RolloutResult, env_seeds

from .atari import DOPAMINE, make_atari_env

log = logging.getLogger(__name__)
# (K, E, obs_dim) float32 observations → (K, E) action indices.
DiscretePolicy = Callable[[np.ndarray], np.ndarray]
# Keeps the ε stream apart from everything else seeded by the same seed.
EPSILON_STREAM = 31_337


def epsilon_greedy(
    policy: DiscretePolicy, epsilon: float, n_actions: int, rngs: Sequence[np.random.Generator]
) -> DiscretePolicy:
    """With probability ε a uniform action, else the policy's; agent k draws from ``rngs[k]``."""

    def act(obs: np.ndarray) -> np.ndarray:
        greedy = np.asarray(policy(obs), dtype=np.int64)
        e = greedy.shape[1]
        explore = np.stack([r.random(e) for r in rngs]) < epsilon
        uniform = np.stack([r.integers(n_actions, size=e) for r in rngs])
        return np.where(explore, uniform, greedy) if epsilon > 0 else greedy

    return act


def discrete_rollout(
    vec: SyncVectorEnv,
    policy: DiscretePolicy,
    seeds: Sequence[int],
    episodes_per_seed: int,
    obs_keys: Sequence[str] | None = None,
    record: bool = False,
    seed_offset: int = 0,
) -> RolloutResult:
    """One seeded episode in each of the K·E envs of ``vec``; finished envs are not stepped again.

    Recorded episodes hold the action indices as ``actions`` and ``unit_actions``, (L,) int64.
    """
    k, e = len(seeds), episodes_per_seed
    all_seeds = env_seeds(seeds, e, seed_offset)
    n = len(all_seeds)
    if vec.num_envs != n:
        raise ValueError(f"the vector env has {vec.num_envs} envs; {k} seeds x {e} need {n}")
    spec = vec.envs[0].spec
    if spec is not None and spec.max_episode_steps is None:
        raise EnvError(f"environment {spec.id!r} has no time limit; pass eval.max_episode_steps=<steps>")
    # reset only reads the list; list is invariant, so list[int] needs the cast to list[int | None].
    first, _ = vec.reset(seed=cast("list[int | None]", all_seeds))
    flat = flatten_obs(first, obs_keys).reshape(n, -1).copy()
    raw: list[list[Any]] = [[np.array(first[i])] for i in range(n)] if record else []
    acts: list[list[int]] = [[] for _ in range(n)]
    rews: list[list[float]] = [[] for _ in range(n)]
    terms: list[list[bool]] = [[] for _ in range(n)]
    truncs: list[list[bool]] = [[] for _ in range(n)]
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    alive = np.ones(n, bool)
    while alive.any():
        actions = np.asarray(policy(flat.reshape(k, e, -1))).reshape(n)
        for i in np.flatnonzero(alive):
            obs, reward, term, trunc, _ = vec.envs[i].step(int(actions[i]))
            returns[i] += float(reward)
            lengths[i] += 1
            flat[i] = np.ravel(flatten_obs(obs, obs_keys))
            if record:
                raw[i].append(np.array(obs))
                acts[i].append(int(actions[i]))
                rews[i].append(float(reward))
                terms[i].append(bool(term))
                truncs[i].append(bool(trunc))
            if term or trunc:
                alive[i] = False
    episodes = None
    if record:
        episodes = [
            Episode(
                agent=i // e,
                index=i % e,
                seed=s,
                obs=np.stack(raw[i]),
                actions=np.asarray(acts[i], np.int64),
                unit_actions=np.asarray(acts[i], np.int64),
                rewards=np.asarray(rews[i]),
                terminations=np.asarray(terms[i]),
                truncations=np.asarray(truncs[i]),
            )
            for i, s in enumerate(all_seeds)
        ]
    return RolloutResult(returns.reshape(k, e), lengths.reshape(k, e), episodes)


def make_eval_env(env_id: str, max_episode_steps: int | None, extra: dict[str, Any]) -> gym.Env:
    """The eval env as the data saw it: Atari frames through the dataset's own pipeline
    (:mod:`cql_runner.discrete.atari`) and its frame stack; a Dict observation with Discrete or Text
    entries (MiniGrid) flattened by the dataset's :class:`DictLayout`."""
    atari = extra.get("atari")
    if atari and env_id.startswith("ALE/"):
        # Datasets whose metadata says only `atari: true` came from the DQN Replay Dataset.
        env = make_atari_env(env_id, max_episode_steps, DOPAMINE if atari is True else atari)
    else:
        env = make_env(env_id, max_episode_steps, discrete=True)
    layout = extra.get("obs_layout")
    if layout is not None:
        env = flatten_dict_env(env, DictLayout.from_json(layout))
    stack = extra.get("frame_stack")
    return FrameStackObservation(env, int(stack)) if stack else env


def flatten_dict_env(env: gym.Env, layout: DictLayout) -> gym.Env:
    """The env's Dict observations as the loader flattened the data: one float32 vector each."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Dict) or not set(layout.keys) <= set(space.spaces):
        raise EnvError(
            f"the dataset's observations are Dict entries {list(layout.keys)}, but the eval env observes {space}; "
            "check eval.env_id"
        )
    width = sum(layout.one_hot.get(k, math.prod(space[k].shape or ())) for k in layout.keys)
    box = gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)
    return TransformObservation(env, lambda obs: flatten_entries(obs, layout, batch_dims=0), box)


class DiscreteEvaluator:
    """``cfg.episodes`` ε-greedy episodes per agent → the same ``eval/*`` metrics as :class:`Evaluator`."""

    def __init__(self, cfg: Any, meta: DatasetMeta, env_cfg: Any, *, epsilon: float) -> None:
        self.env_id = resolve_env_id(cfg, meta)
        self.episodes = int(cfg.episodes)
        self.max_episode_steps = None if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
        self.seed_offset = int(cfg.seed_offset)
        self.epsilon = float(epsilon)
        self.obs_keys = list(meta.obs_keys) if meta.obs_keys is not None else None
        self.ref_min, self.ref_max = reference_scores(meta, env_cfg)
        if self.ref_min is None:
            log.warning("eval/normalized_score will be NaN: %s", MISSING_REFS)
        else:
            normalized_score(0.0, self.ref_min, self.ref_max)
        env_seeds([0], self.episodes, self.seed_offset)
        self.extra = dict(meta.extra)
        env = make_eval_env(self.env_id, self.max_episode_steps, self.extra)
        # gymnasium types action_space as Space, which has no .n; a discrete eval env's is Discrete.
        self.n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
        env.close()
        n_data = meta.extra.get("n_actions")
        # Data inferred from logged actions (DQN replay) may never use the highest action indices.
        if n_data is not None and int(n_data) > self.n_actions:
            raise EnvError(
                f"the dataset has {n_data} actions but {self.env_id} has {self.n_actions}; check eval.env_id"
            )
        self._vec: SyncVectorEnv | None = None

    def evaluate(self, policy: DiscretePolicy, seeds: list[int]) -> list[dict[str, float]]:
        seeds = [int(s) for s in seeds]
        n = len(seeds) * self.episodes
        if self._vec is None or self._vec.num_envs != n:
            self.close()
            self._vec = SyncVectorEnv(
                [lambda: make_eval_env(self.env_id, self.max_episode_steps, self.extra) for _ in range(n)]
            )
        rngs = [np.random.default_rng([s, self.seed_offset, EPSILON_STREAM]) for s in seeds]
        act = epsilon_greedy(policy, self.epsilon, self.n_actions, rngs)
        result = discrete_rollout(self._vec, act, seeds, self.episodes, self.obs_keys, seed_offset=self.seed_offset)
        out = []
        for returns, lengths in zip(result.returns, result.lengths):
            mean = float(returns.mean())
            score = math.nan if self.ref_min is None else normalized_score(mean, self.ref_min, self.ref_max)
            out.append(
                {
                    "eval/return": mean,
                    "eval/return_std": float(returns.std()),
                    "eval/length": float(lengths.mean()),
                    "eval/normalized_score": score,
                    "eval/episodes": float(self.episodes),
                }
            )
        return out

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None
