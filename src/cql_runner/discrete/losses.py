"""The discrete-action CQL math, as pure functions of tensors.

Nothing here holds an optimizer, a config object or a logger. Shapes use K = independent
agents (seeds), B = batch, A = number of actions, N = quantiles. Every loss is returned per
agent, shape (K,), so K agents trained side by side get exactly the gradients each would
get alone.

The penalty on the gap (fixed α, or Lagrange α′ in the weighted or raw form) is the continuous
agent's own :func:`cql_runner.cql.losses.cql_penalty`, applied to the gap of the one Q-network,
so both action spaces share one Lagrange convention.

On discrete actions the CQL(H) logsumexp is exact: it runs over all |A| Q-values, with no
sampled proposals and no importance weights:

    gap = E_s[ T·logsumexp_a(Q(s, a) / T) ] − E_{(s,a)∈D}[ Q(s, a) ]

With QR-DQN the Q-value of an action is the mean over its quantiles, and the gap is taken
on those means.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

TDKind = Literal["mse", "huber"]


class ConservativeGap(NamedTuple):
    gap: Tensor  # (K,): logsumexp − data, batch means
    logsumexp: Tensor  # (K,): E_s[T·logsumexp_a(Q(s, a)/T)]
    q_data: Tensor  # (K,): E[Q(s, a_data)]


def conservative_gap(*, q_values: Tensor, actions: Tensor, temperature: float = 1.0) -> ConservativeGap:
    """The exact CQL(H) gap: ``q_values`` (K, B, A), dataset ``actions`` (K, B) int64."""
    # T = 1 (the default) skips two ops that would scale by 1: a small network's step is mostly per-op cost.
    lse = (
        torch.logsumexp(q_values, dim=-1)
        if temperature == 1.0
        else temperature * torch.logsumexp(q_values / temperature, dim=-1)
    )  # (K, B)
    q_data = q_values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (K, B)
    return ConservativeGap(gap=(lse - q_data).mean(-1), logsumexp=lse.mean(-1), q_data=q_data.mean(-1))


def double_dqn_target(*, rewards: Tensor, discounts: Tensor, next_q_online: Tensor, next_q_target: Tensor) -> Tensor:
    """y = r + discount·Q̄(s′, argmax_a Q(s′, a)): the online net picks, the target net values.

    ``rewards`` (K, B) are (n-step) returns and ``discounts`` (K, B) are γ^m·(1 − terminal), so a
    termination inside the n steps cuts the bootstrap and a truncation keeps it. Q-values of s′
    are (K, B, A). Returned detached.
    """
    best = next_q_online.argmax(-1, keepdim=True)
    value = next_q_target.gather(-1, best).squeeze(-1)
    return (rewards + discounts * value).detach()


def td_loss(*, q_data: Tensor, target: Tensor, kind: TDKind = "mse", huber_delta: float = 1.0) -> Tensor:
    """Per-agent TD loss of ``q_data`` (K, B) against ``target`` (K, B) → (K,).

    ``mse`` is ½·mean((Q − y)²), the ½ of the CQL paper and of the continuous loss module;
    ``huber`` is mean(Huber_δ(Q − y)), which equals it wherever |Q − y| ≤ δ.
    """
    if kind == "mse":
        return 0.5 * (q_data - target).pow(2).mean(-1)
    if kind == "huber":
        return F.huber_loss(q_data, target, reduction="none", delta=huber_delta).mean(-1)
    raise ValueError(f"td loss kind must be 'mse' or 'huber' (got {kind!r})")


def quantile_midpoints(n: int, *, device: torch.device | str | None = None) -> Tensor:
    """τ̂_i = (2i + 1) / (2N), i = 0 … N−1: the quantile fractions QR-DQN regresses."""
    return (torch.arange(n, device=device, dtype=torch.float32) * 2 + 1) / (2 * n)


def qr_double_dqn_target(
    *, rewards: Tensor, discounts: Tensor, next_quantiles_online: Tensor, next_quantiles_target: Tensor
) -> Tensor:
    """Target quantiles r + discount·θ̄_j(s′, a*), a* = argmax_a mean_j θ_j(s′, a) of the online net.

    Quantiles of s′ are (K, B, A, N); returns (K, B, N), detached.
    """
    best = next_quantiles_online.mean(-1).argmax(-1)  # (K, B)
    index = best[..., None, None].expand(*best.shape, 1, next_quantiles_target.shape[-1])
    chosen = next_quantiles_target.gather(-2, index).squeeze(-2)  # (K, B, N)
    return (rewards.unsqueeze(-1) + discounts.unsqueeze(-1) * chosen).detach()


def quantile_huber_loss(*, quantiles: Tensor, target: Tensor, kappa: float = 1.0) -> Tensor:
    """QR-DQN's loss (Dabney et al. 2018, eq. 10): Σ_i E_j[ |τ̂_i − 1{u_ij < 0}|·Huber_κ(u_ij)/κ ].

    ``quantiles`` (K, B, N) are θ_i(s, a_data); ``target`` (K, B, N′) the target quantiles;
    u_ij = target_j − θ_i. Mean over the batch → (K,).
    """
    taus = quantile_midpoints(quantiles.shape[-1], device=quantiles.device)
    u = target.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (K, B, N, N′)
    huber = F.huber_loss(u, torch.zeros_like(u), reduction="none", delta=kappa)
    weight = (taus.unsqueeze(-1) - (u.detach() < 0).float()).abs()
    return (weight * huber / kappa).mean(-1).sum(-1).mean(-1)


class BCLoss(NamedTuple):
    loss: Tensor  # (K,): mean cross-entropy of the dataset actions
    accuracy: Tensor  # (K,): fraction of the batch whose argmax is the dataset action


def bc_cross_entropy(*, logits: Tensor, actions: Tensor) -> BCLoss:
    """Discrete behaviour cloning: −E[log softmax(logits)(a_data)] for ``logits`` (K, B, A), ``actions`` (K, B).

    The network's A outputs are read as the logits of a softmax policy whose greedy action is the
    argmax, so BC acts exactly as the Q-learners do. (The cross-entropy equals the CQL gap at T = 1:
    logsumexp_a l(s, a) − l(s, a_data); BC is that term alone, with no TD loss.)
    """
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (K, B)
    accuracy = (logits.argmax(-1) == actions).float().mean(-1)
    return BCLoss(loss=nll.mean(-1), accuracy=accuracy)
