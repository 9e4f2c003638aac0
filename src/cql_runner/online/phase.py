"""The online phase: fine-tune the offline-trained agent in its env (or train it from scratch).

Per seed, ``online.envs`` envs in one SyncVectorEnv are stepped with the agent's sampled
actions (uniform ones for the first ``online.random_steps``); each finished episode gets its
returns-to-go and only then enters that seed's online buffer. After every env step the agent
takes ``online.utd`` updates on mixed batches (:class:`MixedSampler`), once that seed's buffer
holds a finished episode: each seed's schedule is its own, so seed k of a vectorised run
updates exactly when a single run with seed k would, and seeds not yet updating sit the
update out untouched (``CQLAgent.update(active=...)``). The agent, its optimizer and the
offline sampler are the offline phase's own: there is one CQL agent, and ``cql.alpha=0``
makes it SAC.

Env (k, e) runs episodes with reset seeds from the ``online`` stream of seed k
(:func:`cql_runner.collect.policies.episode_seed`), numbered in the order seed k starts them.
Sub-envs are stepped one by one through ``vec.envs`` for the reason rollout.py gives (a
finished env must be reset with its own seed, not auto-reset).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from gymnasium.spaces import Box
from gymnasium.vector import SyncVectorEnv

from cql_runner.collect.policies import episode_seed, numpy_generator
from cql_runner.cql.agent import CQLAgent
from cql_runner.cql.losses import squashed_gaussian_sample
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.spaces import flatten_obs, from_unit_actions
from cql_runner.data.transforms import sparse_reward_neg, transform_rewards
from cql_runner.data.types import OfflineData
from cql_runner.envs import make_vector_env
from cql_runner.evaluation import resolve_env_id
from cql_runner.logging.base import ONLINE_STEP_METRIC, MultiLogger
from cql_runner.online.checks import offline_ratio
from cql_runner.online.mixed import MixedSampler
from cql_runner.online.replay import OnlineReplay
from cql_runner.preemption import PreemptionFlag
from cql_runner.trainer import NonFiniteLossError

if TYPE_CHECKING:
    from cql_runner.discrete.agent import DiscreteCQLAgent
    from cql_runner.discrete.frames import FrameData, FrameSampler
    from cql_runner.discrete.sampler import DiscreteSampler

log = logging.getLogger(__name__)

# Keeps the exploration-noise stream apart from the seed's update-noise and sampling streams.
EXPLORATION_SEED_OFFSET = 32_452_843


@dataclass(frozen=True)
class OnlineSetup:
    """Everything the phase needs, decided once from the run config (see :func:`online_setup`)."""

    steps: int
    utd: int
    envs: int
    random_steps: int
    calibrate: bool
    offline_ratio: float
    batch_size: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    # The offline phase's last update step: online step s is logged at offline_steps + s.
    offline_steps: int
    discount: float
    reward_scale: float
    reward_bias: float
    sparse_reward_neg: float | None
    env_id: str
    max_episode_steps: int | None
    obs_keys: list[str] | None
    obs_mean: np.ndarray | None
    obs_std: np.ndarray | None
    action_low: np.ndarray | None
    action_high: np.ndarray | None


def online_setup(cfg: Any, data: OfflineData) -> OnlineSetup:
    meta = data.meta
    return OnlineSetup(
        steps=int(cfg.online.steps),
        utd=int(cfg.online.utd),
        envs=int(cfg.online.envs),
        random_steps=int(cfg.online.random_steps),
        calibrate=bool(cfg.online.calibrate_online),
        offline_ratio=offline_ratio(cfg),
        batch_size=int(cfg.train.batch_size),
        log_every=int(cfg.train.log_every),
        eval_every=int(cfg.eval.every),
        checkpoint_every=int(cfg.train.checkpoint_every),
        offline_steps=int(cfg.train.steps),
        discount=float(cfg.cql.discount),
        reward_scale=float(cfg.env.reward_scale),
        reward_bias=float(cfg.env.reward_bias),
        sparse_reward_neg=sparse_reward_neg(cfg.env),
        env_id=resolve_env_id(cfg.eval, meta),
        max_episode_steps=None if cfg.eval.max_episode_steps is None else int(cfg.eval.max_episode_steps),
        obs_keys=None if meta.obs_keys is None else list(meta.obs_keys),
        obs_mean=meta.extra.get("obs_mean"),
        obs_std=meta.extra.get("obs_std"),
        action_low=meta.action_low,
        action_high=meta.action_high,
    )


ROW_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")


@dataclass
class _Episode:
    """One env's episode in progress: rows wait here until it ends."""

    index: int  # the buffer's episode id
    seed: int
    obs: np.ndarray  # the learner's view of the current observation
    rows: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in ROW_FIELDS})
    env_return: float = 0.0  # undiscounted, in env units (before the reward transform)
    # What the env received: replayed after its reset seed to restore the env on resume.
    env_actions: list[np.ndarray] = field(default_factory=list)


@dataclass
class OnlineEnvs:
    """Every seed's envs and the episode each sub-env is in (see :meth:`OnlinePhase.open_envs`)."""

    vecs: list[SyncVectorEnv]
    episodes: list[list[_Episode]]  # [seed][sub-env]
    low: np.ndarray  # env action bounds the unit actions are mapped to
    high: np.ndarray


@dataclass
class OnlineResult:
    status: str  # "completed" | "interrupted"
    env_steps: int
    updates: list[int]  # per seed
    # Seconds spent stepping envs and updating (not evaluating, logging or checkpointing),
    # summed over resumes: the online counterpart of the offline phase's train_time_s.
    elapsed_s: float = 0.0
    preemption: PreemptionFlag | None = None

    @classmethod
    def from_states(cls, states: Sequence[dict[str, Any]], status: str = "completed") -> OnlineResult:
        """The result recorded in per-seed online checkpoint states."""
        first = states[0]
        return cls(
            status, int(first["env_steps"]), [int(st["updates"]) for st in states], float(first.get("elapsed_s", 0.0))
        )


class OnlinePhase:
    def __init__(
        self,
        setup: OnlineSetup,
        agent: CQLAgent,
        offline: DeviceSampler,
        trainer: Any,
        loggers: Sequence[MultiLogger],
        checkpoint: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """``checkpoint`` writes one payload per seed (the online part of each seed's checkpoint)."""
        self.setup, self.agent, self.trainer = setup, agent, trainer
        self.loggers = list(loggers)
        self.checkpoint = checkpoint
        self._restored: list[dict[str, Any]] | None = None
        self.seeds = list(agent.seeds)
        k = len(self.seeds)
        self.buffers = [OnlineReplay(setup.steps, agent.obs_dim, agent.act_dim) for _ in range(k)]
        self.sampler = MixedSampler(
            offline, self.buffers, self.seeds, setup.batch_size, setup.offline_ratio, agent.device
        )
        self.uniform_rngs = [numpy_generator(s, "online") for s in self.seeds]
        self.noise = [torch.Generator(agent.device).manual_seed(s + EXPLORATION_SEED_OFFSET) for s in self.seeds]
        self.env_steps = 0
        self.elapsed_s = 0.0
        self.updates = [0] * k  # per seed: each starts when its own first episode ends
        self._episodes_started = [0] * k
        self._finished: list[list[float]] = [[] for _ in range(k)]
        self._sums: dict[str, torch.Tensor] = {}
        self._count = [0] * k

    # ----- envs ---------------------------------------------------------------------------
    def _learner_obs(self, raw: Any) -> np.ndarray:
        flat = flatten_obs(raw, self.setup.obs_keys).reshape(-1).astype(np.float32)
        s = self.setup
        if s.obs_mean is not None:
            flat = ((flat - np.asarray(s.obs_mean, np.float32)) / np.asarray(s.obs_std, np.float32)).astype(np.float32)
        return flat

    def _new_episode(self, k: int, env: Any) -> _Episode:
        seed = episode_seed(self.seeds[k], "online", self._episodes_started[k])
        self._episodes_started[k] += 1
        raw, _ = env.reset(seed=seed)
        return _Episode(self.buffers[k].start_episode(seed), seed, self._learner_obs(raw))

    def _end_episode(self, k: int, ep: _Episode) -> None:
        rows = {name: np.asarray(v) for name, v in ep.rows.items()}
        self.buffers[k].add_episode(
            ep.index,
            rows["obs"],
            rows["actions"],
            rows["rewards"],
            rows["next_obs"],
            rows["terminated"],
            rows["truncated"],
            discount=self.setup.discount,
            sparse_reward_neg=self.setup.sparse_reward_neg,
        )
        self._finished[k].append(ep.env_return)

    def _replay_episode(self, env: Any, saved: dict[str, Any]) -> _Episode:
        """Reset with the episode's seed and replay its actions: a deterministic env (Gymnasium's
        MuJoCo and classic-control envs) is back in the state it was checkpointed in."""
        raw, _ = env.reset(seed=int(saved["seed"]))
        for action in saved["env_actions"]:
            raw, *_ = env.step(action)
        obs = self._learner_obs(raw)
        rows = {name: list(saved["rows"][name]) for name in ROW_FIELDS}
        if rows["next_obs"] and not np.array_equal(obs, rows["next_obs"][-1]):
            log.warning(
                "%s did not return to its checkpointed state on replay; the resumed online "
                "phase will not match an uninterrupted one exactly",
                self.setup.env_id,
            )
        return _Episode(
            int(saved["index"]), int(saved["seed"]), obs, rows, float(saved["env_return"]), list(saved["env_actions"])
        )

    # ----- acting -------------------------------------------------------------------------
    @torch.no_grad()
    def _actions(self, obs: np.ndarray) -> np.ndarray:
        """(K, n, A) unit actions for learner observations (K, n, obs_dim)."""
        n = obs.shape[1]
        if self.env_steps < self.setup.random_steps:
            return np.stack(
                [rng.uniform(-1.0, 1.0, (n, self.agent.act_dim)).astype(np.float32) for rng in self.uniform_rngs]
            )
        mean, log_std = self.agent.actor(torch.as_tensor(obs, device=self.agent.device))
        eps = torch.stack(
            [torch.randn((n, self.agent.act_dim), generator=g, device=self.agent.device) for g in self.noise]
        )
        return squashed_gaussian_sample(mean.float(), log_std.float(), eps)[0].cpu().numpy()

    # ----- the loop -----------------------------------------------------------------------
    @contextmanager
    def open_envs(self) -> Iterator[OnlineEnvs]:
        """Every seed's envs, each in a fresh episode (or the checkpointed one, after
        :meth:`restore`), closed on exit."""
        s = self.setup
        self.agent.set_calibration(s.calibrate)
        vecs = [make_vector_env(s.env_id, s.envs, s.max_episode_steps) for _ in self.seeds]
        try:
            space = cast(Box, vecs[0].single_action_space)  # make_env admits bounded Box actions only
            low = s.action_low if s.action_low is not None else space.low
            high = s.action_high if s.action_high is not None else space.high
            if self._restored is None:
                episodes = [[self._new_episode(k, env) for env in vec.envs] for k, vec in enumerate(vecs)]
            else:
                episodes = [
                    [self._replay_episode(env, saved) for env, saved in zip(vec.envs, st["episodes"])]
                    for vec, st in zip(vecs, self._restored)
                ]
            yield OnlineEnvs(vecs, episodes, low, high)
        finally:
            for vec in vecs:
                vec.close()

    def run(self) -> OnlineResult:
        with self.open_envs() as envs:
            return self._loop(envs)

    def advance(self, envs: OnlineEnvs) -> int:
        """One vector step of every seed's envs, then ``online.utd`` updates per env step for each
        seed whose buffer is ready: the unit of work of the phase. Returns the env steps per seed."""
        s = self.setup
        start = time.perf_counter()
        n = min(s.envs, s.steps - self.env_steps)
        episodes = envs.episodes
        obs = np.stack([[episodes[k][i].obs for i in range(n)] for k in range(len(envs.vecs))])
        unit = self._actions(obs)
        env_actions = from_unit_actions(unit, envs.low, envs.high)
        for k, vec in enumerate(envs.vecs):
            for i in range(n):
                self._step_env(k, i, vec.envs[i], episodes, unit[k, i], env_actions[k, i])
        self.env_steps += n
        ready = self.sampler.ready()
        if any(ready):
            for _ in range(n * s.utd):
                self._update(ready)
        self.elapsed_s += time.perf_counter() - start
        return n

    def _loop(self, envs: OnlineEnvs) -> OnlineResult:
        s = self.setup
        with PreemptionFlag() as preempt:
            window_start, window_steps = time.perf_counter(), 0
            while self.env_steps < s.steps:
                n = self.advance(envs)
                window_steps += n

                step = s.offline_steps + self.env_steps
                for lg in self.loggers:
                    lg.advance(step)
                record: list[dict[str, float]] | None = None
                done = self.env_steps >= s.steps
                if self.env_steps % s.log_every < n or done:
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    record = self._drain(rate)
                if (s.eval_every and self.env_steps % s.eval_every < n) or done:
                    results = self.trainer.evaluate()
                    record = results if record is None else [{**a, **b} for a, b in zip(record, results)]
                if record is not None:
                    for lg, rec in zip(self.loggers, record):
                        # Every online record names its env step: the mirrors' x-axis for the phase.
                        lg.log({**rec, ONLINE_STEP_METRIC: float(self.env_steps)}, step)
                    window_start, window_steps = time.perf_counter(), 0
                if preempt.requested and not done:
                    self._save(envs.episodes)
                    return OnlineResult("interrupted", self.env_steps, list(self.updates), self.elapsed_s, preempt)
                # At the end too, marked complete, so rerunning the command does not repeat it.
                if (s.checkpoint_every and self.env_steps % s.checkpoint_every < n) or done:
                    self._save(envs.episodes, complete=done)
        return OnlineResult("completed", self.env_steps, list(self.updates), self.elapsed_s)

    # ----- exact resume -------------------------------------------------------------------
    def _save(self, episodes: list[list[_Episode]], complete: bool = False) -> None:
        if self.checkpoint is not None:
            self.checkpoint([self.seed_state(k, episodes[k], complete) for k in range(len(self.seeds))])

    def seed_state(self, k: int, episodes: Sequence[_Episode], complete: bool = False) -> dict[str, Any]:
        """Seed k's online progress: buffer, generators, episodes in progress, metrics window."""
        return {
            "env_steps": self.env_steps,
            "elapsed_s": self.elapsed_s,
            "updates": self.updates[k],
            "complete": complete,
            "episodes_started": self._episodes_started[k],
            "buffer": self.buffers[k].state(),
            "sampler": self.sampler.generators[k].get_state(),
            "uniform_rng": self.uniform_rngs[k].bit_generator.state,
            "noise": self.noise[k].get_state(),
            "episodes": [
                {
                    "index": ep.index,
                    "seed": ep.seed,
                    "env_return": ep.env_return,
                    "env_actions": np.asarray(ep.env_actions, np.float32).reshape(-1, self.agent.act_dim),
                    "rows": {name: np.asarray(v) for name, v in ep.rows.items()},
                }
                for ep in episodes
            ],
            "finished": list(self._finished[k]),
            "metric_sums": {n: v[k : k + 1].cpu().clone() for n, v in self._sums.items()},
            "metric_count": self._count[k],
        }

    def restore(self, states: Sequence[dict[str, Any]]) -> None:
        """Continue from per-seed online states written at the same env step."""
        first = states[0]
        self.env_steps = int(first["env_steps"])
        self.elapsed_s = float(first.get("elapsed_s", 0.0))
        self.updates = [int(st["updates"]) for st in states]
        self._count = [int(st["metric_count"]) for st in states]
        for k, st in enumerate(states):
            self._episodes_started[k] = int(st["episodes_started"])
            self.buffers[k] = OnlineReplay.from_state(st["buffer"], self.setup.steps)
            self.sampler.online[k] = self.buffers[k]
            self.sampler.generators[k].set_state(st["sampler"])
            self.uniform_rngs[k].bit_generator.state = st["uniform_rng"]
            self.noise[k].set_state(st["noise"])
            self._finished[k] = list(st["finished"])
        device = self.agent.device
        self._sums = {n: torch.cat([st["metric_sums"][n] for st in states]).to(device) for n in first["metric_sums"]}
        self._restored = list(states)

    def _step_env(
        self, k: int, i: int, env: Any, episodes: list[list[_Episode]], unit: np.ndarray, env_action: np.ndarray
    ) -> None:
        ep = episodes[k][i]
        raw, reward, terminated, truncated, _ = env.step(env_action)
        next_obs = self._learner_obs(raw)
        rows = ep.rows
        rows["obs"].append(ep.obs)
        rows["actions"].append(unit)
        rows["rewards"].append(float(transform_rewards(reward, self.setup.reward_scale, self.setup.reward_bias)))
        rows["next_obs"].append(next_obs)
        rows["terminated"].append(bool(terminated))
        rows["truncated"].append(bool(truncated))
        ep.env_return += float(reward)
        ep.env_actions.append(env_action)
        ep.obs = next_obs
        if terminated or truncated:
            self._end_episode(k, ep)
            episodes[k][i] = self._new_episode(k, env)

    def _update(self, active: list[bool]) -> None:
        """One update of the ``active`` seeds; the others' metrics are not accumulated."""
        batch = self.sampler.sample(active)
        metrics = self.agent.update(batch, active)
        assert batch.returns_to_go is not None
        # The same Q diagnostics as offline: Q on data and policy actions against the batch's
        # Monte-Carlo return, here over the mixed batch.
        metrics["q/dataset_mc_return"] = batch.returns_to_go.mean(-1)
        metrics["online/offline_share"] = torch.full_like(
            metrics["q/dataset_mc_return"], self.sampler.n_offline / batch.obs.shape[1]
        )
        if not self._sums:
            self._sums = {name: torch.zeros_like(v) for name, v in metrics.items()}
        if all(active):
            torch._foreach_add_(list(self._sums.values()), [metrics[n] for n in self._sums])
        else:
            mask = torch.as_tensor(active, device=self.agent.device)
            torch._foreach_add_(list(self._sums.values()), [torch.where(mask, metrics[n], 0.0) for n in self._sums])
        for k, on in enumerate(active):
            self.updates[k] += on
            self._count[k] += on

    def _drain(self, env_steps_per_s: float) -> list[dict[str, float]]:
        # A seed that took no update in the window logs no update metrics (as a single run would).
        counts = self._count
        names = list(self._sums) if any(counts) else []
        means = (
            (torch.stack([self._sums[n] for n in names]) / torch.as_tensor(counts).clamp(min=1).to(self.agent.device))
            .float()
            .cpu()
            if names
            else torch.zeros(0, len(self.seeds))
        )
        self._sums, self._count = {}, [0] * len(self.seeds)
        updating = [c > 0 for c in counts]
        bad = [n for i, n in enumerate(names) if not torch.isfinite(means[i][updating]).all()]
        if bad:
            raise NonFiniteLossError(
                f"{', '.join(bad)} became NaN/inf in the online phase before env step {self.env_steps}; "
                "try a lower cql.critic_lr or cql.policy_lr, or network.layer_norm=true"
            )
        records = []
        for k in range(len(self.seeds)):
            rec = {n: float(means[i, k]) for i, n in enumerate(names)} if updating[k] else {}
            rec.update(
                {
                    "online/updates": float(self.updates[k]),
                    "perf/env_steps_per_s": env_steps_per_s,
                }
            )
            if self._finished[k]:
                rec["online/return"] = float(np.mean(self._finished[k]))
                rec["online/episodes"] = float(len(self._finished[k]))
            records.append(rec)
        self._finished = [[] for _ in self.seeds]
        return records


def finished(payloads: Sequence[dict[str, Any]] | None, steps: int) -> bool:
    """Whether resumed checkpoints were written after this run's online phase completed."""
    if not payloads:
        return False
    online = payloads[0].get("online")
    if not online:
        return False
    return int(online.get("env_steps", 0)) >= steps and bool(online.get("complete"))


def fine_tune(
    cfg: Any,
    data: OfflineData | FrameData,
    agent: CQLAgent | DiscreteCQLAgent,
    offline: DeviceSampler | DiscreteSampler | FrameSampler,
    trainer: Any,
    loggers: Sequence[MultiLogger],
    resumed: Sequence[dict[str, Any]] | None,
) -> OnlineResult | None:
    """Run the online phase after a completed offline phase; None when there is none.

    A phase that an earlier invocation completed is not repeated: its recorded result is returned.
    The online phase checkpoints every ``train.checkpoint_every`` env steps, on SIGTERM/SIGUSR1
    and at its end (marked complete, so rerunning the command does not repeat it), at step
    train.steps + env steps; rerunning an interrupted command continues it exactly.
    """
    steps = int(cfg.online.steps)
    if steps <= 0:
        return None
    if resumed and finished(resumed, steps):
        return OnlineResult.from_states([p["online"] for p in resumed])
    # online.steps > 0 only with continuous actions (check_fine_tuning): a CQLAgent on flat transitions.
    assert isinstance(data, OfflineData) and isinstance(agent, CQLAgent) and isinstance(offline, DeviceSampler)
    setup = online_setup(cfg, data)

    def checkpoint(states: list[dict[str, Any]]) -> None:
        # One axis: the online phase's checkpoints sit at step train.steps + env steps.
        trainer.state.step = setup.offline_steps + int(states[0]["env_steps"])
        trainer.checkpoint([{"online": st} for st in states])

    phase = OnlinePhase(setup, agent, offline, trainer, loggers, checkpoint)
    online = [p["online"] for p in resumed or [] if p.get("online")]
    if online and len(online) == len(resumed or []):
        phase.restore(online)
        log.info("resuming the online phase at env step %d", phase.env_steps)
    log.info(
        "online phase: %d env steps per seed in %d env(s), utd %d, offline share %.3g, calibration %s",
        steps,
        setup.envs,
        setup.utd,
        setup.offline_ratio,
        "on" if agent.calibrate and setup.calibrate else "off",
    )
    return phase.run()
