"""``run(cfg) -> summary``: build the parts named by the config, train, and close.

This is the plain function behind ``cql-train``; tests call it with a composed config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from cql_runner import strict_json
from cql_runner.checkpoint import CheckpointError, load_checkpoint, load_latest
from cql_runner.config import ConfigError, resolve_seeds, validate
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.transforms import (
    apply_reward_transform,
    normalize_observations,
    observation_stats,
    sparse_reward_neg,
)
from cql_runner.data.types import OfflineData
from cql_runner.data.validate import check_finite
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.build import build_discrete
from cql_runner.discrete.data import check_action_space
from cql_runner.discrete.frames import FrameData, FrameSampler, prepare_frames
from cql_runner.discrete.sampler import DiscreteSampler
from cql_runner.failed_start import record_failed_start
from cql_runner.logging import ConsoleLogger, JsonlLogger, MultiLogger
from cql_runner.logging.sweep import swept_keys, swept_values
from cql_runner.memory_estimate import check_batch, check_sizes
from cql_runner.online.checks import check_fine_tuning
from cql_runner.online.phase import OnlineResult, fine_tune
from cql_runner.resume_check import check_resume_config, check_resume_target, record_config_changes
from cql_runner.run_lock import RunLock
from cql_runner.thread_contention import contention_warning, current_load
from cql_runner.trainer import TrainerState
from cql_runner.video import VideoRecorder

log = logging.getLogger("cql_runner")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one configured run (or K seeds side by side) to completion or preemption.

    Returns the run's summary; with several seeds, the mean scores plus each seed's summary.
    """
    started = time.perf_counter()
    check_resume_target(cfg.resume)
    run_dir = resolve_run_dir(cfg)
    with RunLock(run_dir):
        try:
            return _run_locked(cfg, run_dir, started)
        except Exception as exc:
            record_failed_start(cfg, run_dir, exc)
            raise


def _run_locked(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    validate(cfg)
    seeds = resolve_seeds(cfg)
    # One seed writes into the run dir itself; K seeds each get <run_dir>/seed<k>, an ordinary run dir.
    seed_dirs = [run_dir] if len(seeds) == 1 else [run_dir / f"seed{s}" for s in seeds]
    config_changes = check_resume_config(
        seed_dirs, [seed_cfg(cfg, s, len(seeds)) for s in seeds], cfg.resume_allow_changes
    )
    for d in seed_dirs:
        d.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(seeds[0])
    device = resolve_device(cfg.device)
    if cfg.train.cuda_graph and device.type != "cuda":
        raise ConfigError(
            f"train.cuda_graph=true needs a CUDA device, but this run is on {device}; "
            "drop train.cuda_graph (train.compile=true also works on CPU)"
        )
    warn_about_config(cfg, device)

    data = load_data(cfg)
    check_fine_tuning(cfg, data)
    check_action_space(cfg.action_space, data)
    check_batch(cfg.train.batch_size, data.size)
    agent: CQLAgent | DiscreteCQLAgent
    sampler: DeviceSampler | DiscreteSampler | FrameSampler
    if cfg.action_space == "discrete":
        evaluator, agent, sampler = build_discrete(cfg, data, seeds, device)
    else:
        assert isinstance(data, OfflineData)  # frame data has discrete actions (check_action_space)
        # The memory estimate models the continuous step (N proposals per state); discrete steps are small.
        check_sizes(
            batch_size=cfg.train.batch_size,
            dataset_size=data.size,
            n_actions=cfg.cql.n_actions,
            obs_dim=data.obs_dim,
            act_dim=data.act_dim,
            critic_hidden=list(cfg.network.critic_hidden or cfg.network.hidden),
            n_critics=cfg.network.n_critics,
            n_seeds=len(seeds),
            conservative=cfg.cql.alpha > 0,
            max_backup=cfg.cql.max_backup,
            device=device,
        )
        evaluator = get_class(cfg.eval._target_)(cfg.eval, data.meta, cfg.env)
        agent = CQLAgent(
            data.obs_dim,
            data.act_dim,
            seeds,
            cfg.network,
            cfg.cql,
            device,
            obs_mean=data.meta.extra.get("obs_mean"),
            obs_std=data.meta.extra.get("obs_std"),
            bf16=cfg.train.bf16,
            compile=cfg.train.compile,
            capturable=cfg.train.cuda_graph,
        )
        sampler = DeviceSampler(
            data, seeds, device, discount=cfg.cql.discount, sparse_reward_neg=sparse_reward_neg(cfg.env)
        )

    resumed = latest_common_checkpoint([d / "checkpoints" for d in seed_dirs])
    start_step = int(resumed[0]["trainer"]["step"]) if resumed else 0
    if resumed:
        log.info("resuming %s at step %d", ", ".join(str(d) for d in seed_dirs), start_step)
        record_config_changes(seed_dirs, config_changes, start_step)
    loggers = [
        make_loggers(
            cfg,
            seed_cfg(cfg, s, len(seeds)),
            d,
            resume_step=start_step if resumed else None,
            console=k == 0,
            concurrent=len(seeds) > 1,
        )
        for k, (s, d) in enumerate(zip(seeds, seed_dirs))
    ]
    trainer = get_class(cfg.train._target_)(
        cfg.train,
        agent=agent,
        sampler=sampler,
        evaluator=evaluator,
        loggers=loggers,
        checkpoint_dirs=[d / "checkpoints" for d in seed_dirs],
        eval_every=cfg.eval.every,
        video=make_video_recorder(cfg, evaluator, data),
    )
    if resumed:
        trainer.restore(resumed)
    trainer.wall_origin = started - trainer.state.wall_s

    status, error, result = "failed", None, None
    online: OnlineResult | None = None
    try:
        result = trainer.fit()
        status = result.status
        if status == "completed":
            online = fine_tune(cfg, data, agent, sampler, trainer, loggers, resumed)
            if online is not None:
                result = dataclasses.replace(result, status=online.status, preemption=online.preemption)
                status = result.status
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        wall = time.perf_counter() - trainer.wall_origin
        summaries = []
        for k, (s, d, logger) in enumerate(zip(seeds, seed_dirs, loggers)):
            summary = make_summary(cfg, s, data, trainer.state, k, status, error, wall, online)
            if result is not None and result.preemption is not None:
                summary["interrupted_by"] = result.preemption.signal_name
            write_summary(d / "summary.json", summary)
            logger.log_summary(summary)
            logger.close()
            summaries.append(summary)
        evaluator.close()
    if result is not None and result.preemption is not None:
        # After everything is on disk, let a launcher (submitit) requeue the job.
        result.preemption.forward()
    return summaries[0] if len(seeds) == 1 else aggregate_summaries(summaries)


# ----- building blocks ----------------------------------------------------------------
def seed_cfg(cfg: DictConfig, seed: int, n_seeds: int) -> DictConfig:
    """The config of one seed's run, as an ordinary single-seed run would have it."""
    if n_seeds == 1:
        return cfg
    one = cfg.copy()
    one.seed, one.seeds, one.train.num_seeds = seed, None, 1
    return one


def make_loggers(
    cfg: DictConfig, one: DictConfig, run_dir: Path, resume_step: int | None, console: bool, concurrent: bool
) -> MultiLogger:
    """jsonl (critical: the local record), console, and every configured mirror (logger.<name>) for one
    seed's run. The mirrors' config carries ``sweep``: the values of the keys a multirun varies."""
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(one, resolve=True))
    loggers: list[Any] = [JsonlLogger(run_dir / "metrics.jsonl", resume_step=resume_step)]
    if console:
        loggers.append(
            ConsoleLogger(
                cfg.train.steps + cfg.online.steps,
                start_step=resume_step or 0,
                enabled=cfg.train.progress,
                online_from=cfg.train.steps if cfg.online.steps > 0 else None,
            )
        )
    config = cast(dict[str, Any], OmegaConf.to_container(one, resolve=True))  # a DictConfig gives a dict
    swept = swept_keys()
    if swept:
        config["sweep"] = swept_values(one, swept)
    for node in cfg.logger.values():
        if node is None:
            continue
        loggers.append(
            get_class(node._target_)(
                node,
                run_dir=run_dir,
                config=config,
                run_name=f"{cfg.env.name}-seed{one.seed}",
                group=default_group(cfg, run_dir),
                tags=default_tags(cfg),
                resume_step=resume_step,
                **({"concurrent": True} if concurrent else {}),
            )
        )
    return MultiLogger(loggers)


def make_video_recorder(cfg: DictConfig, evaluator: Any, data: OfflineData | FrameData) -> VideoRecorder | None:
    if cfg.eval.video_every <= 0:
        return None
    return VideoRecorder(evaluator.env_id, data.meta.obs_keys, cfg.eval.video_every, cfg.eval.video_max_frames)


def latest_common_checkpoint(ckpt_dirs: list[Path]) -> list[dict[str, Any]] | None:
    """Each seed's newest valid checkpoint at the newest step that every seed has.

    Seeds are checkpointed one after another, so a crash in between can leave them one
    checkpoint apart; prev.pt then supplies the common step.
    """
    if len(ckpt_dirs) == 1:
        found = load_latest(ckpt_dirs[0])
        return None if found is None else [found[0]]
    candidates: list[dict[int, dict[str, Any]]] = []
    for d in ckpt_dirs:
        by_step: dict[int, dict[str, Any]] = {}
        for name in ("last.pt", "prev.pt"):
            path = d / name
            if path.exists():
                try:
                    payload = load_checkpoint(path)
                except CheckpointError as exc:
                    log.warning("%s; ignoring it", exc)
                    continue
                by_step.setdefault(int(payload["trainer"]["step"]), payload)
        candidates.append(by_step)
    if not any(candidates):
        return None
    common = set.intersection(*(set(c) for c in candidates))
    if not common:
        raise CheckpointError(
            f"the seed checkpoints under {ckpt_dirs[0].parent.parent} share no step; "
            "delete their checkpoints/ dirs or start a new run dir"
        )
    step = max(common)
    return [c[step] for c in candidates]


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.resume:
        return Path(cfg.resume)
    if cfg.run_dir:
        return Path(cfg.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(os.getcwd())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or device=auto")
    if device.type == "cuda":
        # TF32 tensor cores for fp32 matmuls: the default on GPU (accuracy checked in the bench).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def seed_everything(seed: int) -> None:
    """Global seeds for anything outside the explicit per-seed generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(cfg: DictConfig) -> OfflineData | FrameData:
    """Load, apply the env's reward transform and optional observation normalisation."""
    data: OfflineData | FrameData = get_class(cfg.dataset._target_)(cfg.dataset).load()
    env = cfg.env
    if isinstance(data, FrameData):  # uint8 image frames (discrete runs), stacked by their sampler
        return prepare_frames(data, env.reward_scale, env.reward_bias, env.normalize_obs)
    check_finite(data)
    if env.reward_scale != 1.0 or env.reward_bias != 0.0:
        data = apply_reward_transform(data, env.reward_scale, env.reward_bias)
    if env.normalize_obs:
        mean, std = observation_stats(data)
        data = normalize_observations(data, mean, std)
        data.meta.extra["obs_mean"], data.meta.extra["obs_std"] = mean, std
    return data


def warn_about_config(cfg: DictConfig, device: torch.device) -> None:
    """Flag device settings that run but are almost certainly not what the user meant (config-only
    checks are :func:`cql_runner.config.unused_settings`, run by the CLI)."""
    if device.type == "cpu":
        contention = contention_warning(
            threads_set=cfg.train.threads, torch_threads=torch.get_num_threads(), load_1min=current_load()
        )
        if contention:
            log.warning(contention)
    if cfg.train.bf16 and device.type == "cpu" and not cpu_has_bf16():
        log.warning(
            "train.bf16=true on a CPU without AMX/AVX512-BF16: bf16 matmuls run far slower "
            "than fp32 here; use train.bf16=false"
        )


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_group(cfg: DictConfig, run_dir: Path) -> str:
    """Runs of one sweep share a group: the sweep dir's name, else the env name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # Hydra sets the mode of every job it launches.
    if HydraConfig.initialized() and cast(RunMode, HydraConfig.get().mode).name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir).name
    return cfg.env.name


def default_tags(cfg: DictConfig) -> list[str]:
    c = cfg.cql
    tags = [cfg.env.name, f"alpha={c.alpha}", f"n_actions={c.n_actions}"]
    tags.append(f"tau={c.tau}" if c.lagrange else "fixed-alpha")
    return tags


def make_summary(
    cfg: DictConfig,
    seed: int,
    data: OfflineData | FrameData,
    state: TrainerState,
    k: int,
    status: str,
    error: str | None,
    wall_time_s: float,
    online: OnlineResult | None = None,
) -> dict[str, Any]:
    """summary.json. ``steps`` is the shared axis (offline updates, then env steps);
    ``steps_per_s`` is offline gradient steps per second of update time, and a fine-tuning run
    adds the online phase's own rate: env steps per second, each with its online.utd updates."""
    offline_steps = min(int(state.step), int(cfg.train.steps))
    summary = {
        "status": status,
        "error": error,
        "env": cfg.env.name,
        "dataset_id": data.meta.dataset_id,
        "seed": int(seed),
        "steps": int(state.step),
        "final_normalized_score": _finite_or_none(state.last_scores[k]),
        "best_normalized_score": _finite_or_none(state.best_scores[k]),
        "final_return": _finite_or_none(state.last_returns[k]),
        "wall_time_s": round(wall_time_s, 3),
        "train_time_s": round(state.elapsed_s, 3),
        "steps_per_s": round(offline_steps / state.elapsed_s, 2) if state.elapsed_s > 0 else None,
        "behaviour_mean_return": float(np.mean(data.episode_returns())),
    }
    if online is not None:
        summary.update(
            {
                "online_env_steps": online.env_steps,
                "online_updates": online.updates[k],
                "online_time_s": round(online.elapsed_s, 3),
                "online_env_steps_per_s": (
                    round(online.env_steps / online.elapsed_s, 2) if online.elapsed_s > 0 else None
                ),
            }
        )
    return summary


def aggregate_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """What a K-seed run returns: mean scores (the sweep objective) plus every seed's summary."""

    def mean(key: str) -> float | None:
        values = [s[key] for s in summaries if s[key] is not None]
        return float(np.mean(values)) if values else None

    first = summaries[0]
    return {
        "status": first["status"],
        "env": first["env"],
        "seeds": [s["seed"] for s in summaries],
        "steps": first["steps"],
        "final_normalized_score": mean("final_normalized_score"),
        "best_normalized_score": mean("best_normalized_score"),
        "wall_time_s": first["wall_time_s"],
        "runs": summaries,
    }


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write summary.json; on a full disk warn in one line rather than hide the run's own error."""
    try:
        write_json(path, summary)
    except OSError as exc:
        path.with_suffix(path.suffix + ".tmp").unlink(missing_ok=True)
        log.warning("could not write %s (%s)", path, exc.strerror or exc)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(strict_json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
