"""The lower-bound check for discrete agents: Q̂(s0, a0) against the discounted return of the same policy.

The evaluation policy is the one cql-train scores (greedy in Q, ε-greedy with ``discrete.eval_epsilon``),
rolled out from fresh env resets; a0 is the action it actually took in s0, so Q̂(s0, a0) and the
Monte-Carlo return describe the same first step. One Q-network per seed: the min and the mean over
critics are the same number. ``Q̂(dataset s0)`` is Q̂ at the greedy action over every episode start of
the dataset; no env here can be put into a dataset state, so there are no matched dataset-start rollouts.

A BC run (``cql.bc_steps`` > 0) has policy logits, not Q-values: its record holds the Monte-Carlo return
and leaves the Q̂ fields empty (None), so the page shows '–' rather than comparing logits with returns.

CartPole-v1 truncates at 500 steps; with γ = 0.99 the return beyond it is at most γ^500 ≈ 0.7% of the
value of the rest of the episode, which the Monte-Carlo return leaves out while Q̂ bootstraps through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv
from omegaconf import DictConfig

from cql_runner.checkpoint import load_checkpoint
from cql_runner.data.types import OfflineData
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.data import action_count
from cql_runner.discrete.evaluation import EPSILON_STREAM, discrete_rollout, epsilon_greedy, make_eval_env
from cql_runner.evaluation import resolve_env_id


def load_discrete_agent(run_dir: Path, cfg: DictConfig, data: OfflineData) -> DiscreteCQLAgent:
    """The run's discrete agent restored from checkpoints/last.pt on the CPU."""
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["agent"]
    n_actions = action_count(data)
    if n_actions is None:
        raise ValueError(f"{run_dir} is a discrete run but its dataset has no discrete action count")
    agent = DiscreteCQLAgent(
        data.obs_dim,
        n_actions,
        [int(s) for s in state["seeds"]],
        cfg.network,
        cfg.cql,
        cfg.discrete,
        "cpu",
    )
    agent.load_checkpoint_state(state)
    # A run with env.normalize_obs saved its statistics in the checkpoint (the raw data has none here).
    agent.standardize = bool((agent.obs_mean != 0).any() or (agent.obs_std != 1).any())
    agent.eval()
    return agent


def greedy_q(agent: DiscreteCQLAgent, obs: np.ndarray) -> np.ndarray:
    """Q̂(s, argmax_a Q̂(s, a)) of a one-seed agent on raw observations (M, obs_dim) → (M,)."""
    obs = np.asarray(obs, dtype=np.float32)[None]
    return agent.q_value(obs, agent.act(obs))[0]


def check_discrete_run(
    agent: DiscreteCQLAgent, cfg: DictConfig, data: OfflineData, episodes: int, gamma: float, scale: float, bias: float
) -> dict[str, Any]:
    """The value_check.json record of one seed's discrete agent (the keys the continuous check writes)."""
    # Imported here: value_check imports this module for its dispatch.
    from cql_runner.evidence.value_check import (
        VALUE_SEED_OFFSET,
        dataset_initial_obs,
        discounted_return,
        transform_rewards,
    )

    env_id = resolve_env_id(cfg.eval, data.meta)
    max_steps = None if cfg.eval.max_episode_steps is None else int(cfg.eval.max_episode_steps)
    extra = dict(data.meta.extra)
    seed = int(agent.seeds[0])
    epsilon = float(cfg.discrete.eval_epsilon)
    vec = SyncVectorEnv([lambda: make_eval_env(env_id, max_steps, extra) for _ in range(episodes)])
    try:
        rngs = [np.random.default_rng([seed, VALUE_SEED_OFFSET, EPSILON_STREAM])]
        policy = epsilon_greedy(agent.act, epsilon, agent.n_actions, rngs)
        result = discrete_rollout(
            vec, policy, [seed], episodes, data.meta.obs_keys, record=True, seed_offset=VALUE_SEED_OFFSET
        )
    finally:
        vec.close()
    eps = result.agent_episodes(0)
    s0 = np.stack([ep.flat_obs(data.meta.obs_keys)[0] for ep in eps]).astype(np.float32)
    a0 = np.array([int(ep.actions[0]) for ep in eps], dtype=np.int64)
    mc = np.array([discounted_return(transform_rewards(ep.rewards, scale, bias), gamma) for ep in eps])
    mc_ret = float(mc.mean())
    record: dict[str, Any] = {
        "seed": seed,
        "step": int(agent.num_updates),
        "gamma": gamma,
        "n_episodes": len(eps),
        "reward_scale": scale,
        "reward_bias": bias,
        "action_space": "discrete",
        "eval_epsilon": epsilon,
        "mc_return_s0": mc_ret,
        "mc_return_s0_std": float(mc.std()),
        "undiscounted_return": float(np.mean([ep.episode_return for ep in eps])),
        "episode_length": float(np.mean([ep.length for ep in eps])),
        "n_dataset_episodes": len(data.episode_starts),
        "dataset_s0_rollouts": 0,
        "units": "transformed reward (reward_scale * r + reward_bias), discounted by gamma",
    }
    if agent.behaviour_cloning:
        return {
            **record,
            "q_function": False,
            "q_hat_s0": None,
            "q_hat_s0_mean_critics": None,
            "q_hat_minus_mc": None,
            "underestimates": None,
            "q_hat_dataset_s0": None,
        }
    q = agent.q_value(s0[None], a0[None])[0]
    q_hat = float(q.mean())
    d = greedy_q(agent, dataset_initial_obs(data))
    return {
        **record,
        "q_function": True,
        "q_hat_s0": q_hat,
        "q_hat_s0_mean_critics": q_hat,  # one Q-network per seed
        "q_hat_minus_mc": q_hat - mc_ret,
        "underestimates": bool(q_hat < mc_ret),
        "q_hat_dataset_s0": float(d.mean()),
    }


def is_discrete(cfg: DictConfig) -> bool:
    return str(cfg.get("action_space", "continuous")) == "discrete"


def discrete_check(run_dir: Path, cfg: DictConfig, data: OfflineData, episodes: int) -> dict[str, Any]:
    """Load the seed's agent and run :func:`check_discrete_run` in the run's reward units."""
    torch.set_num_threads(1)
    agent = load_discrete_agent(run_dir, cfg, data)
    gamma = float(cfg.cql.discount)
    scale, bias = float(cfg.env.reward_scale), float(cfg.env.reward_bias)
    return check_discrete_run(agent, cfg, data, episodes, gamma, scale, bias)
