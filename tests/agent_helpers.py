"""Shared builders for the CQLAgent tests: tiny agents, random batches, state comparisons."""

from __future__ import annotations

import io

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.types import Batch

OBS, ACT, HIDDEN, N_ACT, B = 3, 2, [16, 16], 3, 8


def make_agent(seeds=(0,), network: dict | None = None, bf16: bool = False, **cql) -> CQLAgent:
    cql.setdefault("n_actions", N_ACT)
    net = {"hidden": list(HIDDEN), **(network or {})}
    return CQLAgent(OBS, ACT, list(seeds), NetworkConfig(**net), CQLConfig(**cql), bf16=bf16)


def make_batch(k: int = 1, b: int = B, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(1000 + seed)
    terminals = (torch.rand(k, b, generator=g) < 0.25).float()
    return Batch(
        obs=torch.randn(k, b, OBS, generator=g),
        actions=(torch.rand(k, b, ACT, generator=g) * 2 - 1) * 0.95,
        rewards=torch.randn(k, b, generator=g),
        next_obs=torch.randn(k, b, OBS, generator=g),
        terminals=terminals,
    )


def stack_batches(batches: list[Batch]) -> Batch:
    return Batch(*(None if parts[0] is None else torch.cat(parts, dim=0) for parts in zip(*batches)))


def param_groups(agent: CQLAgent) -> dict[str, list[torch.Tensor]]:
    return {
        "actor": [p.detach().clone() for p in agent.actor.net.param_list()],
        "critic": [p.detach().clone() for p in agent.critic.net.param_list()],
        "target_critic": [p.detach().clone() for p in agent.target_critic.net.param_list()],
        "log_alpha": [agent.log_alpha.detach().clone()],
        "log_alpha_prime": [agent.log_alpha_prime.detach().clone()],
    }


def max_diff(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    assert len(xs) == len(ys)
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(xs, ys))


def tanh_normal_log_prob(mean, log_std, action):
    """Reference log-density of a tanh-squashed diagonal Gaussian (float64)."""
    mean, log_std, action = mean.double(), log_std.double(), action.double()
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    return dist.log_prob(action).sum(-1)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def assert_same_state(x, y, exact: bool, where: str = "") -> None:
    """Recursively compare two checkpoint dicts (tensors exactly or to 1e-5)."""
    if isinstance(x, dict):
        assert set(x) == set(y), where
        for key in x:
            assert_same_state(x[key], y[key], exact, f"{where}/{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (a, b) in enumerate(zip(x, y)):
            assert_same_state(a, b, exact, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert x.shape == y.shape and x.dtype == y.dtype, where
        if exact or x.dtype == torch.uint8:
            assert torch.equal(x, y), where
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=where)
    else:
        assert x == y, where
