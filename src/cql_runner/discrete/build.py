"""Build the parts of a discrete run (evaluator, agent, sampler) from its config and data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import get_class

from cql_runner.config import ConfigError, EvalConfig
from cql_runner.data.types import OfflineData

from .agent import DiscreteCQLAgent
from .data import action_count
from .evaluation import DiscreteEvaluator
from .frames import FrameData, FrameSampler
from .sampler import DiscreteSampler


def build_discrete(
    cfg: Any, data: OfflineData | FrameData, seeds: Sequence[int], device: torch.device
) -> tuple[Any, DiscreteCQLAgent, DiscreteSampler | FrameSampler]:
    """(evaluator, agent, sampler). ``eval._target_`` still swaps the evaluator when it is set to
    something other than the continuous default."""
    n_actions = action_count(data)
    assert n_actions is not None, "check_action_space runs first"
    target = cfg.eval._target_
    if target == EvalConfig._target_:
        evaluator = DiscreteEvaluator(cfg.eval, data.meta, cfg.env, epsilon=cfg.discrete.eval_epsilon)
    else:
        evaluator = get_class(target)(cfg.eval, data.meta, cfg.env)
    d = cfg.discrete
    if isinstance(data, FrameData):
        if d.encoder != "nature_cnn":
            raise ConfigError(f"dataset {data.meta.dataset_id!r} holds image frames; pass discrete.encoder=nature_cnn")
        agent = DiscreteCQLAgent(
            math.prod(data.obs_shape), n_actions, seeds, cfg.network, cfg.cql, d, device, obs_shape=data.obs_shape
        )
        return evaluator, agent, FrameSampler(data, seeds, device, discount=cfg.cql.discount, n_step=d.n_step)
    if d.encoder == "nature_cnn":
        raise ConfigError(
            f"dataset {data.meta.dataset_id!r} holds vector observations; discrete.encoder=nature_cnn "
            "needs image frames, drop it"
        )
    agent = DiscreteCQLAgent(
        data.obs_dim,
        n_actions,
        seeds,
        cfg.network,
        cfg.cql,
        d,
        device,
        obs_mean=data.meta.extra.get("obs_mean"),
        obs_std=data.meta.extra.get("obs_std"),
    )
    sampler = DiscreteSampler(data, seeds, device, discount=cfg.cql.discount, n_step=d.n_step)
    return evaluator, agent, sampler
