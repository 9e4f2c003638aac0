"""The training loop and its cadences: log, evaluate, checkpoint, stop on preemption.

The trainer owns no math: it asks the agent for updates, the evaluator for returns and
the loggers to record. Metrics stay on the device between log steps, so a step costs
no host synchronisation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cql_runner.checkpoint import save_checkpoint
from cql_runner.config import TrainConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.evaluation import PolicyEvaluator
from cql_runner.logging.base import MultiLogger
from cql_runner.preemption import PreemptionFlag
from cql_runner.seeds import load_seed_states, seed_state
from cql_runner.torch_threads import torch_threads
from cql_runner.update_step import UpdateStep, make_update_step

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss or parameter became NaN/inf; the message names the last good checkpoint and fixes."""


@dataclass
class TrainerState:
    """Everything of the loop (beyond agent and sampler) that an exact resume needs."""

    step: int = 0
    # Seconds spent in updates, and wall seconds of the whole run, summed over resumes.
    elapsed_s: float = 0.0
    wall_s: float = 0.0
    # Per agent: the last and best normalized score seen at an evaluation.
    last_scores: list[float] = field(default_factory=list)
    best_scores: list[float] = field(default_factory=list)
    last_returns: list[float] = field(default_factory=list)
    last_checkpoint_step: int | None = None


@dataclass
class TrainResult:
    state: TrainerState
    # "completed" | "interrupted"
    status: str
    # The flag that stopped the run, so the caller can forward the signal after cleanup.
    preemption: PreemptionFlag | None = None


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig | DictConfig,
        agent: CQLAgent,
        sampler: DeviceSampler,
        evaluator: PolicyEvaluator,
        loggers: Sequence[MultiLogger],
        checkpoint_dirs: Sequence[Path],
        eval_every: int,
        state: TrainerState | None = None,
        video: Any = None,
        step: UpdateStep | None = None,
    ) -> None:
        self.cfg = cfg
        self.agent = agent
        self.sampler = sampler
        self.evaluator = evaluator
        self.loggers = list(loggers)
        self.checkpoint_dirs = list(checkpoint_dirs)
        self.eval_every = eval_every
        self.video = video
        self.step = step or make_update_step(agent, sampler, cfg.batch_size, cfg.cuda_graph)
        self.state = state or TrainerState()
        k = agent.n_agents
        if not self.state.best_scores:
            self.state.best_scores = [-math.inf] * k
            self.state.last_scores = [math.nan] * k
            self.state.last_returns = [math.nan] * k
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._warned_runaway = False
        # perf_counter() value at which wall_s was 0; the run sets it to include start-up.
        self.wall_origin = time.perf_counter()

    # ----- the loop -------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        with PreemptionFlag() as preempt:
            window_start, window_steps = time.perf_counter(), 0
            while st.step < cfg.steps:
                step_start = time.perf_counter()
                self._accumulate(self.step())
                st.step += 1
                window_steps += 1
                st.elapsed_s += time.perf_counter() - step_start
                for lg in self.loggers:
                    lg.advance(st.step)

                record: list[dict[str, float]] | None = None
                if st.step % cfg.log_every == 0 or st.step == cfg.steps:
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    record = self._drain(rate)
                    self._warn_once_about_dynamics(record)
                if (self.eval_every and st.step % self.eval_every == 0) or st.step == cfg.steps:
                    record = self._merge(record, self._evaluate())
                if record is not None:
                    for lg, rec in zip(self.loggers, record):
                        lg.log(rec, st.step)
                    window_start, window_steps = time.perf_counter(), 0
                if preempt.requested:
                    self.checkpoint()
                    return TrainResult(st, "interrupted", preempt)
                if st.step % cfg.checkpoint_every == 0 or st.step == cfg.steps:
                    self.checkpoint()
        st.wall_s = time.perf_counter() - self.wall_origin
        return TrainResult(st, "completed")

    # ----- metrics --------------------------------------------------------------------
    def _accumulate(self, metrics: dict[str, torch.Tensor]) -> None:
        if not self._sums:
            self._sums = {k: torch.zeros_like(v) for k, v in metrics.items()}
        torch._foreach_add_(list(self._sums.values()), list(metrics.values()))
        self._count += 1

    def _drain(self, steps_per_s: float) -> list[dict[str, float]]:
        """Mean metrics since the last drain, one dict per agent; raises on NaN/inf."""
        if not self._count:
            return [{} for _ in self.loggers]
        names = list(self._sums)
        means = (torch.stack([self._sums[n] for n in names]) / self._count).float().cpu()
        self._sums, self._count = {}, 0
        self._raise_if_nonfinite(names, means)
        return [
            {**{n: float(means[i, k]) for i, n in enumerate(names)}, "perf/steps_per_s": steps_per_s}
            for k in range(means.shape[1])
        ]

    def _warn_once_about_dynamics(self, records: list[dict[str, float]]) -> None:
        """The agent's own diagnosis of its logged means (e.g. a runaway Lagrange multiplier), once per run."""
        if self._warned_runaway:
            return
        for k, rec in enumerate(records):
            message = self.agent.diagnose(rec)
            if message is not None:
                who = f" (seed index {k})" if len(records) > 1 else ""
                log.warning("step %d%s: %s", self.state.step, who, message)
                self._warned_runaway = True
                return

    def _raise_if_nonfinite(self, names: list[str], means: torch.Tensor) -> None:
        bad = [n for i, n in enumerate(names) if not torch.isfinite(means[i]).all()]
        if not bad:
            return
        last = self.state.last_checkpoint_step
        where = (
            f"the last good checkpoint (step {last}) is in {self.checkpoint_dirs[0]}"
            if last is not None
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(
            f"{', '.join(bad)} became NaN/inf before step {self.state.step}; {where}. "
            "Try a lower cql.critic_lr or cql.policy_lr, a finite cql.clip_diff_max, "
            "network.layer_norm=true, or env.reward_scale to shrink the rewards"
        )

    @staticmethod
    def _merge(a: list[dict[str, float]] | None, b: list[dict[str, float]]) -> list[dict[str, float]]:
        return b if a is None else [{**x, **y} for x, y in zip(a, b)]

    # ----- evaluation and checkpoints -------------------------------------------------
    def _evaluate(self) -> list[dict[str, float]]:
        st = self.state
        # Tiny per-step policy calls run faster on one thread than fighting for two.
        with torch_threads(1):
            results = self.evaluator.evaluate(self.agent.act, self.agent.seeds)
        for k, res in enumerate(results):
            score = res["eval/normalized_score"]
            st.last_scores[k] = score
            st.last_returns[k] = res["eval/return"]
            if not math.isnan(score) and score > st.best_scores[k]:
                st.best_scores[k] = score
            res["eval/best_normalized_score"] = st.best_scores[k]
        if self.video is not None:
            run_dirs = [d.parent for d in self.checkpoint_dirs]
            clips = self.video.maybe_record(self.agent.act, self.agent.seeds, run_dirs, st.step)
            for lg, clip in zip(self.loggers, clips):
                if clip is not None:
                    lg.log_video("eval/video", clip, st.step)
        return results

    def evaluate(self) -> list[dict[str, float]]:
        """Evaluate now and update the last/best scores (the online phase evaluates through this)."""
        return self._evaluate()

    def checkpoint(self, extra: Sequence[dict[str, Any]] | None = None) -> None:
        """Write each seed's last.pt (keeping prev.pt) after checking that nothing became NaN.

        ``extra[k]`` entries are added to seed k's payload (the online phase's progress)."""
        if self._count:
            names = list(self._sums)
            self._raise_if_nonfinite(names, torch.stack([self._sums[n] for n in names]).cpu())
        self.state.last_checkpoint_step = self.state.step
        self.state.wall_s = time.perf_counter() - self.wall_origin
        for k, d in enumerate(self.checkpoint_dirs):
            save_checkpoint(d, {**self._seed_payload(k), **(extra[k] if extra else {})}, self.state.step)

    def _seed_payload(self, k: int) -> dict[str, Any]:
        """Seed k's checkpoint: the same format a single-seed run writes, so either can resume it."""
        st = self.state
        return {
            "agent": seed_state(self.agent, k),
            "sampler": {"generators": [self.sampler.generators[k].get_state()]},
            "trainer": {
                **vars(st),
                "last_scores": [st.last_scores[k]],
                "best_scores": [st.best_scores[k]],
                "last_returns": [st.last_returns[k]],
            },
            "metric_sums": {n: v[k : k + 1].cpu() for n, v in self._sums.items()},
            "metric_count": self._count,
        }

    def restore(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Continue from per-seed checkpoints written at the same step."""
        load_seed_states(self.agent, [p["agent"] for p in payloads])
        self.sampler.load_state_dict({"generators": [p["sampler"]["generators"][0] for p in payloads]})
        merged = dict(payloads[0]["trainer"])
        for key in ("last_scores", "best_scores", "last_returns"):
            merged[key] = [p["trainer"][key][0] for p in payloads]
        self.state = TrainerState(**merged)
        device = self.agent.device
        names = list(payloads[0].get("metric_sums", {}))
        self._sums = {n: torch.cat([p["metric_sums"][n] for p in payloads]).to(device) for n in names}
        self._count = int(payloads[0].get("metric_count", 0))
