"""Online SAC: the project's CQLAgent with the conservative term off, trained in the env.

Nothing here is a second SAC: ``CQLAgent`` with ``alpha=0`` skips the CQL proposals, and
``deterministic_backup=False`` keeps the entropy term in the TD target, which is SAC. This
module adds only what online RL needs around it: stochastic acting (sampled with our own
seeded generator), a replay buffer, periodic deterministic evaluation with a policy
snapshot at every evaluation, and resumable checkpoints.

Resuming is exact: a checkpoint holds the agent, the buffer, every generator state, and for
each env the reset seed and the actions of the episode in progress; on resume each env is
reset with that seed and the actions are replayed, which puts a deterministic env (all of
Gymnasium's MuJoCo and classic-control envs) back into the same state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

from cql_runner.checkpoint import load_latest, save_checkpoint
from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.cql.losses import squashed_gaussian_sample
from cql_runner.data.spaces import from_unit_actions
from cql_runner.envs import EnvError, make_env, make_vector_env
from cql_runner.logging.console import ConsoleLogger

from .policies import EVAL_OFFSET, actor_policy, episode_seed, mean_return, numpy_generator, torch_generator
from .replay import ReplayBuffer

log = logging.getLogger(__name__)
PROGRESS_KEYS = ("train/return", "eval/return", "loss/critic", "alpha", "updates/s")


@dataclass
class Snapshot:
    """The actor after ``step`` env steps and its deterministic eval return."""

    step: int
    eval_return: float
    actor: dict[str, torch.Tensor]


@dataclass
class SACRun:
    snapshots: list[Snapshot]
    replay: ReplayBuffer
    # (env step at which it ended, return) of every finished training episode.
    episode_returns: list[tuple[int, float]]
    steps: int
    updates: int
    # Wall time and time inside agent.update(), summed over resumed sessions.
    seconds: float = 0.0
    update_seconds: float = 0.0
    complete: bool = True

    @property
    def updates_per_second(self) -> float:
        return self.updates / self.update_seconds if self.update_seconds > 0 else float("nan")


def make_sac_agent(obs_dim: int, act_dim: int, seed: int, sac: Any) -> CQLAgent:
    """CQLAgent configured as plain SAC (no conservative term, entropy in the backup)."""
    network = NetworkConfig(hidden=list(sac.hidden), n_critics=int(sac.n_critics))
    cql = CQLConfig(
        alpha=0.0,
        lagrange=False,
        n_actions=1,
        deterministic_backup=False,
        policy_lr=sac.lr,
        critic_lr=sac.lr,
        alpha_lr=sac.lr,
        discount=sac.discount,
        target_update_rate=sac.target_update_rate,
    )
    return CQLAgent(obs_dim, act_dim, [seed], network, cql)


def check_box_env(env: gym.Env, env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(obs_dim, action low, action high); flat Box observations only."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise EnvError(f"cql-collect needs a flat Box observation space; {env_id!r} has {space}")
    actions = cast(gym.spaces.Box, env.action_space)  # make_env refuses other action spaces
    return int(space.shape[0]), actions.low, actions.high


@dataclass
class _Slot:
    """One training env's episode in progress."""

    episode: int
    seed: int
    obs: np.ndarray
    actions: list[np.ndarray] = field(default_factory=list)
    ret: float = 0.0


def train_sac(
    env_id: str,
    sac: Any,
    seed: int,
    max_episode_steps: int | None = None,
    ckpt_dir: Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> SACRun:
    """Train for ``sac.steps`` env steps, resuming from ``ckpt_dir`` if it holds a checkpoint.

    ``stop_at`` ends early after that many steps (with a checkpoint), as an interruption would;
    the run returned then has ``complete=False``.
    """
    t0 = time.perf_counter()
    envs = [make_env(env_id, max_episode_steps) for _ in range(sac.envs)]
    obs_dim, low, high = check_box_env(envs[0], env_id)
    act_dim = low.shape[0]
    total, eval_every = int(sac.steps), int(sac.eval_every)
    agent = make_sac_agent(obs_dim, act_dim, seed, sac)
    rng, warm_rng = numpy_generator(seed, "train"), numpy_generator(seed, "warmup")
    noise = torch_generator(seed, "train")
    replay = ReplayBuffer(total, obs_dim, act_dim)
    warmup = min(int(sac.start_steps), total // 10)
    learn_from = max(warmup, int(sac.batch_size))
    ckpt_every = int(sac.checkpoint_every) if ckpt_dir is not None else 0
    snapshots: list[Snapshot] = []
    returns: list[tuple[int, float]] = []
    step = updates = 0
    seconds_before = update_seconds = 0.0

    def new_episode(i: int) -> _Slot:
        s = episode_seed(seed, "train", len(replay.episode_seeds))
        obs, _ = envs[i].reset(seed=s)
        return _Slot(replay.start_episode(s), s, np.asarray(obs, np.float64))

    resumed = load_latest(ckpt_dir) if ckpt_every and ckpt_dir is not None else None
    if resumed is not None:
        st = resumed[0]
        agent.load_checkpoint_state(st["agent"])
        replay = ReplayBuffer.from_state(st["replay"], total)
        rng.bit_generator.state, warm_rng.bit_generator.state = st["rng"], st["warm_rng"]
        noise.set_state(st["noise"])
        snapshots = [Snapshot(**s) for s in st["snapshots"]]
        returns = [tuple(r) for r in st["returns"]]
        step, updates = int(st["step"]), int(st["updates"])
        seconds_before, update_seconds = st.get("seconds", 0.0), st.get("update_seconds", 0.0)
        slots = [_replay_slot(env, s) for env, s in zip(envs, st["slots"])]
        log.info("resumed SAC from %s at step %d", resumed[1], step)
    else:
        slots = [new_episode(i) for i in range(len(envs))]

    eval_vec = make_vector_env(env_id, int(sac.eval_episodes), max_episode_steps)
    console = ConsoleLogger(total, step, enabled=progress, keys=PROGRESS_KEYS)
    log_every = max(1, min(eval_every, total // 20))
    metrics: dict[str, torch.Tensor] = {}
    try:
        while step < total:
            n = min(len(envs), total - step)
            obs = np.stack([slots[i].obs for i in range(n)])
            if step < warmup:
                unit = warm_rng.uniform(-1.0, 1.0, (n, act_dim)).astype(np.float32)
            else:
                unit = _explore(agent, obs, noise)
            env_actions = from_unit_actions(unit, low, high)
            for i in range(n):
                slot = slots[i]
                next_obs, reward, term, trunc, _ = envs[i].step(env_actions[i])
                next_obs = np.asarray(next_obs, np.float64)
                replay.add(slot.obs, unit[i], float(reward), next_obs, bool(term), bool(trunc), slot.episode)
                slot.actions.append(env_actions[i])
                slot.ret += float(reward)
                slot.obs = next_obs
                if term or trunc:
                    returns.append((step + i + 1, slot.ret))
                    slots[i] = new_episode(i)
            step += n

            if replay.size >= learn_from:
                u0 = time.perf_counter()
                for _ in range(n * int(sac.updates_per_step)):
                    metrics = agent.update(replay.sample(rng, int(sac.batch_size)))
                    updates += 1
                update_seconds += time.perf_counter() - u0

            row: dict[str, float] = {}
            if step % eval_every < n or step == total:
                ret = mean_return(eval_vec, actor_policy(agent.actor, True), seed, EVAL_OFFSET)
                actor_state = {k: v.detach().clone() for k, v in agent.actor.state_dict().items()}
                snapshots.append(Snapshot(step, ret, actor_state))
                row["eval/return"] = ret
            if row or step % log_every < n:
                if returns:
                    row["train/return"] = float(np.mean([r for _, r in returns[-10:]]))
                row.update({k: float(v[0]) for k, v in metrics.items() if k in PROGRESS_KEYS})
                if update_seconds > 0:
                    row["updates/s"] = updates / update_seconds
                console.log(row, step)
            else:
                console.advance(step)

            stopping = stop_at is not None and step >= stop_at and step < total
            # Also at the very end, so a failure after training never repeats it.
            if ckpt_every and ckpt_dir is not None and (step % ckpt_every < n or stopping or step == total):
                save_checkpoint(
                    ckpt_dir,
                    {
                        "agent": agent.checkpoint_state(),
                        "replay": replay.state(),
                        "rng": rng.bit_generator.state,
                        "warm_rng": warm_rng.bit_generator.state,
                        "noise": noise.get_state(),
                        "snapshots": [vars(s) for s in snapshots],
                        "returns": returns,
                        "step": step,
                        "updates": updates,
                        "seconds": seconds_before + time.perf_counter() - t0,
                        "update_seconds": update_seconds,
                        "slots": [
                            {
                                "seed": s.seed,
                                "episode": s.episode,
                                "ret": s.ret,
                                "actions": np.asarray(s.actions, np.float32).reshape(-1, act_dim),
                            }
                            for s in slots
                        ],
                    },
                    step,
                )
            if stopping:
                break
    finally:
        console.close()
        eval_vec.close()
        for env in envs:
            env.close()
    return SACRun(
        snapshots,
        replay,
        returns,
        step,
        updates,
        seconds_before + time.perf_counter() - t0,
        update_seconds,
        complete=step >= total,
    )


@torch.no_grad()
def _explore(agent: CQLAgent, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Sampled SAC actions in [-1, 1] for raw obs (n, obs_dim)."""
    x = agent.normalize(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
    mean, log_std = agent.actor(x)
    eps = torch.randn(mean.shape, generator=generator)
    return squashed_gaussian_sample(mean, log_std, eps)[0][0].numpy()


def _replay_slot(env: gym.Env, saved: dict[str, Any]) -> _Slot:
    """Reset with the episode's seed and replay its actions: the env is back where it was."""
    obs, _ = env.reset(seed=int(saved["seed"]))
    actions = list(saved["actions"])
    for a in actions:
        obs, *_ = env.step(a)
    return _Slot(int(saved["episode"]), int(saved["seed"]), np.asarray(obs, np.float64), actions, float(saved["ret"]))
