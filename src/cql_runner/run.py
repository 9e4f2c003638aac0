"""``run(cfg) -> summary``: build the parts named by the config, train, and close.

This is the plain function behind ``cql-train``; tests call it with a composed config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from cql_runner.checkpoint import load_latest
from cql_runner.config import validate
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.transforms import apply_reward_transform, normalize_observations, observation_stats
from cql_runner.data.types import OfflineData
from cql_runner.logging import ConsoleLogger, JsonlLogger, MultiLogger
from cql_runner.trainer import TrainerState

log = logging.getLogger("cql_runner")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one configured run to completion (or preemption) and return its summary."""
    started = time.perf_counter()
    validate(cfg)
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    warn_about_config(cfg, device)

    data = load_data(cfg)
    evaluator = get_class(cfg.eval._target_)(cfg.eval, data.meta, cfg.env)
    agent = CQLAgent(data.obs_dim, data.act_dim, [cfg.seed], cfg.network, cfg.cql, device,
                     obs_mean=data.meta.extra.get("obs_mean"), obs_std=data.meta.extra.get("obs_std"),
                     bf16=cfg.train.bf16)
    sampler = DeviceSampler(data, [cfg.seed], device)

    resumed = load_latest(ckpt_dir)
    start_step = int(resumed[0]["trainer"]["step"]) if resumed else 0
    if resumed:
        log.info("resuming from %s at step %d", resumed[1], start_step)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    logger = MultiLogger([
        JsonlLogger(run_dir / "metrics.jsonl", resume_step=start_step if resumed else None),
        ConsoleLogger(cfg.train.steps, start_step=start_step, enabled=cfg.train.progress),
        get_class(cfg.logger._target_)(cfg.logger, run_dir=run_dir,
                                       config=OmegaConf.to_container(cfg, resolve=True),
                                       run_name=f"{cfg.env.name}-seed{cfg.seed}",
                                       group=default_group(cfg, run_dir), tags=default_tags(cfg)),
    ])
    trainer = get_class(cfg.train._target_)(cfg.train, agent=agent, sampler=sampler, evaluator=evaluator,
                                            loggers=[logger], checkpoint_dirs=[ckpt_dir],
                                            eval_every=cfg.eval.every)
    if resumed:
        trainer.restore(resumed[0])
    trainer.wall_origin = started - trainer.state.wall_s

    status, error, result = "failed", None, None
    try:
        result = trainer.fit()
        status = result.status
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = make_summary(cfg, data, trainer.state, status, error,
                               time.perf_counter() - trainer.wall_origin)
        write_json(run_dir / "summary.json", summary)
        logger.log_summary(summary)
        logger.close()
        evaluator.close()
    if result is not None and result.preemption is not None:
        summary["interrupted_by"] = result.preemption.signal_name
        # After everything is on disk, let a launcher (submitit) requeue the job.
        result.preemption.forward()
    return summary


# ----- building blocks ----------------------------------------------------------------
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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or device=auto")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def seed_everything(seed: int) -> None:
    """Global seeds for anything outside the explicit per-seed generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(cfg: DictConfig) -> OfflineData:
    """Load, apply the env's reward transform and optional observation normalisation."""
    data: OfflineData = get_class(cfg.dataset._target_)(cfg.dataset).load()
    env = cfg.env
    if env.reward_scale != 1.0 or env.reward_bias != 0.0:
        data = apply_reward_transform(data, env.reward_scale, env.reward_bias)
    if env.normalize_obs:
        mean, std = observation_stats(data)
        data = normalize_observations(data, mean, std)
        data.meta.extra["obs_mean"], data.meta.extra["obs_std"] = mean, std
    return data


def warn_about_config(cfg: DictConfig, device: torch.device) -> None:
    """Flag settings that run but are almost certainly not what the user meant."""
    overrides = _task_overrides()
    if not cfg.cql.lagrange and any(o.split("=")[0].lstrip("+~") == "cql.tau" for o in overrides):
        log.warning("cql.tau is set but cql.lagrange=false, so tau has no effect; add cql.lagrange=true")
    if cfg.train.bf16 and device.type == "cpu" and not cpu_has_bf16():
        log.warning("train.bf16=true on a CPU without AMX/AVX512-BF16: bf16 matmuls run far slower "
                    "than fp32 here; use train.bf16=false")


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_group(cfg: DictConfig, run_dir: Path) -> str:
    """Runs of one sweep share a group: the sweep dir's name, else the env name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir).name
    return cfg.env.name


def default_tags(cfg: DictConfig) -> list[str]:
    c = cfg.cql
    tags = [cfg.env.name, f"alpha={c.alpha}", f"n_actions={c.n_actions}"]
    tags.append(f"tau={c.tau}" if c.lagrange else "fixed-alpha")
    return tags


def make_summary(cfg: DictConfig, data: OfflineData, state: TrainerState, status: str,
                 error: str | None, wall_time_s: float) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "status": status,
        "error": error,
        "env": cfg.env.name,
        "dataset_id": data.meta.dataset_id,
        "seed": int(cfg.seed),
        "steps": int(state.step),
        "final_normalized_score": num(state.last_scores[0]) if state.last_scores else None,
        "best_normalized_score": num(state.best_scores[0]) if state.best_scores else None,
        "final_return": num(state.last_returns[0]) if state.last_returns else None,
        "wall_time_s": round(wall_time_s, 3),
        "train_time_s": round(state.elapsed_s, 3),
        "steps_per_s": round(state.step / state.elapsed_s, 2) if state.elapsed_s > 0 else None,
        "behaviour_mean_return": float(np.mean(data.episode_returns())),
    }


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
