"""The lower-bound check: is the learned Q̂(s0, π(s0)) below the policy's true discounted return?

For one finished seed run dir: rebuild the agent from its resolved config.yaml and checkpoints/last.pt,
roll out the deterministic policy tanh(mean) for ``episodes`` Monte-Carlo episodes in the eval env
(discrete agents: their evaluation policy and Q̂(s0, a0), see value_check_discrete.py),
and compare, on those same reset states s0, the discounted return with Q̂(s0, π(s0)). Where the env's
state can be rebuilt from an observation (Hopper, InvertedDoublePendulum: see mujoco_states.py), the same
comparison is made from ``episodes`` of the dataset's own episode starts (deterministic policy and
dynamics, so one rollout per state is its exact return).

Units: the critics were trained on the *transformed* reward r' = env.reward_scale · r + env.reward_bias,
so the Monte-Carlo return is computed on r' as well (identical to r for the suite's tasks, whose scale is 1
and bias 0). Time-limit truncation ends an episode while Q̂ bootstraps through it; with γ = 0.99 and
1000-step limits the missing tail is below γ^1000 ≈ 4e-5 of one step's value onwards, so we ignore it.

    cql-evidence value-check RUN_DIR [RUN_DIR ...] [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium.spaces import Box
from omegaconf import DictConfig, OmegaConf

from cql_runner.checkpoint import load_checkpoint
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.spaces import from_unit_actions
from cql_runner.data.types import OfflineData
from cql_runner.envs import make_env
from cql_runner.evaluation import resolve_env_id
from cql_runner.evidence.mujoco_states import restore, supported
from cql_runner.evidence.value_check_discrete import discrete_check, is_discrete
from cql_runner.rollout import run_episodes

# Env reset seeds are seed * 10_000 + offset + e; evaluation uses offset 100, so these episodes are new ones.
VALUE_SEED_OFFSET = 5_000
FILENAME = "value_check.json"


def discounted_return(rewards: Sequence[float] | np.ndarray, gamma: float) -> float:
    """Σ_t γ^t r_t, accumulated backwards in float64."""
    acc = 0.0
    for r in reversed(np.asarray(rewards, dtype=np.float64)):
        acc = float(r) + gamma * acc
    return acc


def transform_rewards(rewards: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """The reward the critics were trained on: scale · r + bias (as cql_runner.data.transforms does)."""
    return np.float64(scale) * np.asarray(rewards, dtype=np.float64) + bias


@torch.no_grad()
def q_estimates(agent: CQLAgent, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q̂(s, π(s)) of a one-seed agent on raw observations (M, obs_dim): (min over critics, mean over critics).

    The min is what the actor maximises and the TD target bootstraps from, so it is the value the agent
    believes in; the mean shows how much of the gap the min alone accounts for.
    """
    obs = np.asarray(obs, dtype=np.float32)[None]
    actions = agent.act(obs)
    x = agent.normalize(torch.as_tensor(obs, device=agent.device))
    a = torch.as_tensor(actions, dtype=torch.float32, device=agent.device)
    q = agent.critic(x, a).float()  # (1, n_critics, M)
    return q.min(dim=1).values[0].cpu().numpy(), q.mean(dim=1)[0].cpu().numpy()


def load_config(run_dir: Path) -> DictConfig:
    """The resolved config the run wrote (one seed's view of it)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert isinstance(cfg, DictConfig)
    return cfg


def load_agent(run_dir: Path, cfg: DictConfig, obs_dim: int, act_dim: int) -> CQLAgent:
    """The run's agent restored from checkpoints/last.pt on the CPU (observation statistics included)."""
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["agent"]
    agent = CQLAgent(obs_dim, act_dim, [int(s) for s in state["seeds"]], cfg.network, cfg.cql, "cpu")
    agent.load_checkpoint_state(state)
    agent.eval()
    return agent


def load_dataset(cfg: DictConfig) -> OfflineData:
    """The run's dataset as stored (raw observations), via the same source class training used."""
    from hydra.utils import get_class

    return get_class(cfg.dataset._target_)(cfg.dataset).load()


def dataset_initial_obs(data: OfflineData) -> np.ndarray:
    """Raw s0 of every episode in the dataset."""
    return data.observations[data.episode_starts]


def pick_states(obs: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows spread evenly over ``obs`` (all of them when there are fewer), so the choice is reproducible."""
    if len(obs) <= n:
        return obs
    return obs[np.linspace(0, len(obs) - 1, n).round().astype(int)]


def rollouts_from_states(
    env_id: str,
    agent: CQLAgent,
    states: np.ndarray,
    low: np.ndarray | None,
    high: np.ndarray | None,
    max_episode_steps: int | None,
) -> list[np.ndarray] | None:
    """Rewards of the deterministic policy from each of ``states`` (set with mujoco_states.restore), in lockstep.

    None when the env is not one whose state can be rebuilt from an observation, or a restore fails.
    """
    if not supported(env_id):
        return None
    envs = [make_env(env_id, max_episode_steps) for _ in states]
    try:
        obs = np.array(states, dtype=np.float32)
        for i, env in enumerate(envs):
            env.reset(seed=VALUE_SEED_OFFSET + i)
            if not restore(env, env_id, states[i]):
                return None
        space = cast(Box, envs[0].action_space)  # the MuJoCo tasks restore() supports act in a Box
        low = space.low if low is None else low
        high = space.high if high is None else high
        rewards: list[list[float]] = [[] for _ in envs]
        alive = np.ones(len(envs), dtype=bool)
        while alive.any():
            actions = from_unit_actions(agent.act(obs[None])[0], low, high)
            for i in np.flatnonzero(alive).tolist():
                nxt, r, term, trunc, _ = envs[i].step(actions[i])
                rewards[i].append(float(r))
                obs[i] = np.ravel(nxt)
                alive[i] = not (term or trunc)
        return [np.asarray(r, dtype=np.float64) for r in rewards]
    finally:
        for env in envs:
            env.close()


def check_run(run_dir: Path, episodes: int, data: OfflineData | None = None) -> dict[str, Any]:
    """Monte-Carlo vs Q̂ for one seed run dir; returns the record value_check.json holds."""
    torch.set_num_threads(1)
    cfg = load_config(run_dir)
    data = load_dataset(cfg) if data is None else data
    if is_discrete(cfg):  # one Q-network, integer actions: value_check_discrete.py
        return discrete_check(run_dir, cfg, data, episodes)
    agent = load_agent(run_dir, cfg, data.obs_dim, data.act_dim)
    gamma = float(cfg.cql.discount)
    scale, bias = float(cfg.env.reward_scale), float(cfg.env.reward_bias)
    result = run_episodes(
        resolve_env_id(cfg.eval, data.meta),
        agent.act,
        list(agent.seeds),
        episodes,
        data.meta.obs_keys,
        data.meta.action_low,
        data.meta.action_high,
        cfg.eval.max_episode_steps,
        record=True,
        seed_offset=VALUE_SEED_OFFSET,
    )
    eps = result.agent_episodes(0)
    s0 = np.stack([ep.flat_obs(data.meta.obs_keys)[0] for ep in eps])
    mc = np.array([discounted_return(transform_rewards(ep.rewards, scale, bias), gamma) for ep in eps])
    q_min, q_mean = q_estimates(agent, s0)
    d_min, d_mean = q_estimates(agent, dataset_initial_obs(data))
    q_hat, mc_ret = float(q_min.mean()), float(mc.mean())
    record = {
        "seed": int(agent.seeds[0]),
        "step": int(agent.num_updates),
        "gamma": gamma,
        "n_episodes": len(eps),
        "reward_scale": scale,
        "reward_bias": bias,
        "q_hat_s0": q_hat,
        "q_hat_s0_mean_critics": float(q_mean.mean()),
        "mc_return_s0": mc_ret,
        "mc_return_s0_std": float(mc.std()),
        "undiscounted_return": float(np.mean([ep.episode_return for ep in eps])),
        "episode_length": float(np.mean([ep.length for ep in eps])),
        "q_hat_minus_mc": q_hat - mc_ret,
        "underestimates": bool(q_hat < mc_ret),
        "q_hat_dataset_s0": float(d_min.mean()),
        "q_hat_dataset_s0_mean_critics": float(d_mean.mean()),
        "n_dataset_episodes": len(data.episode_starts),
        "units": "transformed reward (reward_scale * r + reward_bias), discounted by gamma",
    }
    return {**record, **dataset_start_check(cfg, agent, data, episodes, gamma, scale, bias)}


def dataset_start_check(
    cfg: DictConfig, agent: CQLAgent, data: OfflineData, episodes: int, gamma: float, scale: float, bias: float
) -> dict[str, Any]:
    """Monte-Carlo return and Q̂ on ``episodes`` of the dataset's own initial states, where the env can be put there."""
    states = pick_states(dataset_initial_obs(data), episodes)
    env_id = resolve_env_id(cfg.eval, data.meta)
    if data.meta.obs_keys is not None:
        return {"dataset_s0_rollouts": 0}
    runs = rollouts_from_states(
        env_id, agent, states, data.meta.action_low, data.meta.action_high, cfg.eval.max_episode_steps
    )
    if runs is None:
        return {"dataset_s0_rollouts": 0}
    mc = np.array([discounted_return(transform_rewards(r, scale, bias), gamma) for r in runs])
    q_min, _ = q_estimates(agent, states)
    return {
        "dataset_s0_rollouts": len(runs),
        "mc_return_dataset_s0": float(mc.mean()),
        "q_hat_dataset_s0_matched": float(q_min.mean()),
        "underestimates_dataset_s0": bool(q_min.mean() < mc.mean()),
    }


def write_check(run_dir: Path, episodes: int, data: OfflineData | None = None) -> dict[str, Any]:
    """Run :func:`check_run` and write ``value_check.json`` atomically (its existence marks the step done)."""
    record = check_run(run_dir, episodes, data)
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        record["nonfinite"] = bad
    tmp = run_dir / (FILENAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(run_dir / FILENAME)
    return record


def summary_line(rec: dict[str, Any]) -> str:
    """Q̂ and MC of one record in a line; a BC run's empty Q̂ (policy logits, no Q-function) shows as '–'."""

    def num(key: str) -> str:
        value = rec.get(key)
        return "–" if value is None else f"{value:.2f}"

    return f"Q̂(s0)={num('q_hat_s0')}  MC return={num('mc_return_s0')}  Q̂(dataset s0)={num('q_hat_dataset_s0')}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cql-evidence value-check", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path, help="seed run dirs (config.yaml + checkpoints/last.pt)")
    p.add_argument("--episodes", type=int, default=10, help="Monte-Carlo episodes per run")
    args = p.parse_args(argv)
    for d in args.run_dirs:
        rec = write_check(d, args.episodes)
        print(f"{d}: {summary_line(rec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
