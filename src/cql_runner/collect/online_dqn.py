"""Online Double DQN: the project's discrete CQL agent with the conservative term off.

Nothing here is a second DQN: ``DiscreteCQLAgent`` with ``alpha=0`` is Double DQN (Huber TD,
hard target copies). This module adds what online RL needs around it: ε-greedy exploration
from seeded generators, a replay buffer (:class:`.replay.ReplayBuffer`, the action index kept
in its one action column), and a greedy evaluation with a Q-network snapshot at every
evaluation. The same (env, seed, config) gives the same snapshots, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from cql_runner.config import CQLConfig, DiscreteConfig, NetworkConfig
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.evaluation import DiscretePolicy, discrete_rollout
from cql_runner.discrete.sampler import DiscreteBatch
from cql_runner.envs import EnvError, make_env, make_vector_env
from cql_runner.logging.console import ConsoleLogger
from cql_runner.networks import EnsembleMLP
from cql_runner.rollout import Episode

from .policies import EVAL_OFFSET, episode_seed, numpy_generator
from .replay import ReplayBuffer

PROGRESS_KEYS = ("train/return", "eval/return", "loss/td", "epsilon")


@dataclass
class QSnapshot:
    """The Q-network after ``step`` env steps and its greedy eval return."""

    step: int
    eval_return: float
    q: dict[str, Tensor]


@dataclass
class DQNRun:
    snapshots: list[QSnapshot]
    replay: ReplayBuffer
    episode_returns: list[tuple[int, float]]
    obs_dim: int
    n_actions: int
    steps: int
    updates: int
    seconds: float
    update_seconds: float


def make_dqn_agent(obs_dim: int, n_actions: int, seed: int, dqn: Any) -> DiscreteCQLAgent:
    """DiscreteCQLAgent configured as plain online Double DQN."""
    return DiscreteCQLAgent(
        obs_dim,
        n_actions,
        [seed],
        NetworkConfig(hidden=list(dqn.hidden), n_critics=1),
        CQLConfig(alpha=0.0, lagrange=False, critic_lr=dqn.lr, discount=dqn.discount),
        DiscreteConfig(
            backbone="double_dqn",
            td_loss="huber",
            n_step=1,
            target_update="hard",
            target_update_every=int(dqn.target_update_every),
        ),
    )


def q_network(obs_dim: int, n_actions: int, hidden: Sequence[int], state: dict[str, Tensor]) -> EnsembleMLP:
    """A frozen single Q-network with the weights of a snapshot."""
    net = EnsembleMLP(1, obs_dim, n_actions, list(hidden))
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def greedy_policy(net: EnsembleMLP) -> DiscretePolicy:
    """argmax_a Q(s, a) for raw flat observations (1, E, obs_dim): the DQN never normalises them."""

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1, obs.shape[-1])
        return net(x).argmax(-1).numpy().reshape(obs.shape[:-1])

    return act


def greedy_return(
    env_id: str, policy: DiscretePolicy, seed: int, episodes: int, offset: int, max_episode_steps: int | None
) -> float:
    vec = make_vector_env(env_id, episodes, max_episode_steps, discrete=True)
    try:
        return float(discrete_rollout(vec, policy, [seed], episodes, seed_offset=offset).returns.mean())
    finally:
        vec.close()


def train_dqn(env_id: str, dqn: Any, seed: int, max_episode_steps: int | None = None, progress: bool = True) -> DQNRun:
    """Train for ``dqn.steps`` env steps in one env; evaluate greedily every ``dqn.eval_every``."""
    t0 = time.perf_counter()
    env = make_env(env_id, max_episode_steps, discrete=True)
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise EnvError(f"cql-collect needs a Box observation space; {env_id!r} has {space}")
    # Observations of any Box shape (MinAtar's 10×10×C grids) are flattened for the MLP.
    # gymnasium types action_space as Space, which has no .n; make_env(discrete=True) gives a Discrete one.
    obs_dim, n_actions = int(np.prod(space.shape)), int(env.action_space.n)  # type: ignore[attr-defined]
    total = int(dqn.steps)
    agent = make_dqn_agent(obs_dim, n_actions, seed, dqn)
    assert isinstance(agent.q, EnsembleMLP)  # make_dqn_agent keeps the default MLP encoder
    rng, warm_rng = numpy_generator(seed, "train"), numpy_generator(seed, "warmup")
    replay = ReplayBuffer(total, obs_dim, 1)
    warmup = min(int(dqn.start_steps), total // 10)
    decay = max(1, int(dqn.epsilon_fraction * total))
    snapshots: list[QSnapshot] = []
    returns: list[tuple[int, float]] = []
    updates, update_seconds = 0, 0.0
    metrics: dict[str, Tensor] = {}
    console = ConsoleLogger(total, 0, enabled=progress, keys=PROGRESS_KEYS)
    log_every = max(1, min(int(dqn.eval_every), total // 20))

    def reset() -> tuple[int, np.ndarray]:
        s = episode_seed(seed, "train", len(replay.episode_seeds))
        episode = replay.start_episode(s)
        return episode, np.asarray(env.reset(seed=s)[0], np.float64).reshape(-1)

    episode, obs = reset()
    ret = 0.0
    try:
        for step in range(1, total + 1):
            epsilon = max(float(dqn.epsilon_end), 1.0 - (step - 1) / decay * (1.0 - float(dqn.epsilon_end)))
            if step <= warmup:
                action = int(warm_rng.integers(n_actions))
            elif rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                action = int(agent.act(obs[None, None].astype(np.float32))[0, 0])
            next_obs, reward, term, trunc, _ = env.step(action)
            next_obs = np.asarray(next_obs, np.float64).reshape(-1)
            replay.add(obs, np.array([action], np.float32), float(reward), next_obs, bool(term), bool(trunc), episode)
            ret += float(reward)
            obs = next_obs
            if term or trunc:
                returns.append((step, ret))
                episode, obs = reset()
                ret = 0.0
            if replay.size >= max(warmup, int(dqn.batch_size)):
                u0 = time.perf_counter()
                metrics = agent.update(sample(replay, rng, int(dqn.batch_size), float(dqn.discount)))
                updates += 1
                update_seconds += time.perf_counter() - u0
            row: dict[str, float] = {}
            if step % int(dqn.eval_every) == 0 or step == total:
                value = greedy_return(
                    env_id, greedy_policy(agent.q), seed, int(dqn.eval_episodes), EVAL_OFFSET, max_episode_steps
                )
                weights = {k: v.detach().clone() for k, v in agent.q.state_dict().items()}
                snapshots.append(QSnapshot(step, value, weights))
                row["eval/return"] = value
            if row or step % log_every == 0:
                if returns:
                    row["train/return"] = float(np.mean([r for _, r in returns[-10:]]))
                row["epsilon"] = epsilon
                if "loss/td" in metrics:
                    row["loss/td"] = float(metrics["loss/td"][0])
                console.log(row, step)
            else:
                console.advance(step)
    finally:
        console.close()
        env.close()
    return DQNRun(
        snapshots, replay, returns, obs_dim, n_actions, total, updates, time.perf_counter() - t0, update_seconds
    )


def sample(replay: ReplayBuffer, rng: np.random.Generator, batch_size: int, discount: float) -> DiscreteBatch:
    """A uniform one-step batch with leading dims (1, B)."""
    idx = rng.integers(0, replay.size, batch_size)

    def take(a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[idx])).to(dtype).unsqueeze(0)

    discounts = discount * (1.0 - replay.terminated[idx].astype(np.float32))
    return DiscreteBatch(
        obs=take(replay.obs),
        actions=take(replay.actions[:, 0], torch.int64),
        rewards=take(replay.rewards),
        next_obs=take(replay.next_obs),
        discounts=torch.from_numpy(discounts).unsqueeze(0),
    )


def replay_episodes(replay: ReplayBuffer, end: int, obs_shape: Sequence[int]) -> list[Episode]:
    """Rows [0, end) of a one-env replay buffer as episodes (the last cut there is marked truncated),
    observations back in the env's ``obs_shape``."""
    end = min(int(end), replay.size)
    out: list[Episode] = []
    start = 0
    for t in range(end):
        last = t == end - 1 or replay.episode[t + 1] != replay.episode[t]
        if not last:
            continue
        rows = slice(start, t + 1)
        term, trunc = replay.terminated[rows].copy(), replay.truncated[rows].copy()
        if not (term[-1] or trunc[-1]):
            trunc[-1] = True
        actions = replay.actions[rows, 0].astype(np.int64)
        out.append(
            Episode(
                agent=0,
                index=len(out),
                seed=replay.episode_seeds[int(replay.episode[start])],
                obs=np.concatenate([replay.obs[rows], replay.next_obs[t : t + 1]]).reshape(-1, *obs_shape),
                actions=actions,
                unit_actions=actions.copy(),
                rewards=replay.rewards[rows].copy(),
                terminations=term,
                truncations=trunc,
            )
        )
        start = t + 1
    return out
