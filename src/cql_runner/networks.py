"""Ensemble MLPs: every parameter has a leading member dimension.

One member is one network. The critic of a single agent is an ensemble of ``n_critics``
members evaluated in one batched matmul; K independent seeds are K·n members. The actor
of K seeds has K members. ``forward`` takes an optional explicit parameter list so the
same weights can be evaluated detached (actor loss) or as Polyak targets.

Two evaluation paths compute the same function. On GPUs one ``baddbmm`` per layer runs all
members in one kernel. On CPUs a plain ``addmm`` chain per member, an in-place ReLU and a
GEMV-shaped 1-wide output layer measured 1.15x faster per CQL step (docs/PERFORMANCE.md,
"What was tried"): MKL's batched GEMM and its one-column paths are the slow ones there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs ``in_dim → hidden… → out_dim`` with ReLU."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.members = members
        self.layer_norm = layer_norm
        self.sizes = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out)))
        if layer_norm:
            for h in hidden:
                self.norm_weights.append(nn.Parameter(torch.ones(members, 1, h)))
                self.norm_biases.append(nn.Parameter(torch.zeros(members, 1, h)))

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def param_list(self) -> list[Tensor]:
        """Parameters in the fixed order that ``forward(params=...)`` expects."""
        return [*self.weights, *self.biases, *self.norm_weights, *self.norm_biases]

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator, orthogonal: bool) -> None:
        """Initialise one member from its own generator, so seeds are independent of K."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            fan_in, fan_out = w.shape[1], w.shape[2]
            last = i == self.n_layers - 1
            if orthogonal:
                gain = 1e-2 if last else math.sqrt(2.0)
                w[member].copy_(_orthogonal(fan_in, fan_out, gain, generator).to(w))
                b[member].zero_()
            else:
                # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b.
                bound = 1.0 / math.sqrt(fan_in)
                w[member].copy_(_uniform((fan_in, fan_out), bound, generator).to(w))
                b[member].copy_(_uniform((1, fan_out), bound, generator).to(b))

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None, per_member: bool | None = None) -> Tensor:
        """``x``: (members, M, in_dim) → (members, M, out_dim).

        ``per_member`` picks the evaluation path (default: per member on CPU, batched elsewhere).
        """
        p = self.param_list() if params is None else list(params)
        if per_member is None:
            per_member = x.device.type == "cpu"
        if per_member:
            return torch.stack([self._member_forward(x[j], p, j) for j in range(self.members)])
        n = self.n_layers
        weights, biases = p[:n], p[n : 2 * n]
        for i in range(n):
            x = torch.baddbmm(biases[i], x, weights[i])
            if i < n - 1:
                x = F.relu(self._norm(x, p, i, slice(None)))
        return x

    def _member_forward(self, h: Tensor, p: Sequence[Tensor], j: int) -> Tensor:
        n = self.n_layers
        weights, biases = p[:n], p[n : 2 * n]
        for i in range(n - 1):
            # In place is safe: addmm's backward needs its inputs, not its output.
            h = F.relu_(self._norm(torch.addmm(biases[i][j], h, weights[i][j]), p, i, j))
        # Under autocast the plain addmm keeps the dtype handling in torch's hands.
        if weights[-1].shape[-1] == 1 and not torch.is_autocast_enabled(h.device.type):
            return OneColumnLinear.apply(h, weights[-1][j], biases[-1][j])
        return torch.addmm(biases[-1][j], h, weights[-1][j])

    def _norm(self, x: Tensor, p: Sequence[Tensor], i: int, j: int | slice) -> Tensor:
        if not self.layer_norm:
            return x
        n = self.n_layers
        norm_w, norm_b = p[2 * n : 3 * n - 1], p[3 * n - 1 :]
        return F.layer_norm(x, x.shape[-1:]) * norm_w[i][j] + norm_b[i][j]


class OneColumnLinear(torch.autograd.Function):
    """``x @ w + b`` for a one-column ``w`` (H, 1), with GEMV-shaped products both ways.

    torch routes a (M×H)·(H×1) addmm and its backward through GEMM kernels that are slow for a
    single column on CPU; wᵀ·xᵀ and an outer product for dX take the fast paths.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.matmul(w.mT, x.mT).mT + b

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gx = g * w.mT if ctx.needs_input_grad[0] else None
        gw = torch.matmul(g.mT, x).mT if ctx.needs_input_grad[1] else None
        gb = g.sum(-2, keepdim=True) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound


def _orthogonal(fan_in: int, fan_out: int, gain: float, generator: torch.Generator) -> Tensor:
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator))
    q = q * torch.sign(torch.diagonal(r))
    q = q if fan_in >= fan_out else q.T
    return gain * q


class Critic(nn.Module):
    """``n`` Q-functions per agent for K agents: Q(s, a) → (K, n, M)."""

    def __init__(
        self, n_agents: int, n_critics: int, obs_dim: int, act_dim: int, hidden: Sequence[int], layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.n_critics = n_critics
        self.net = EnsembleMLP(n_agents * n_critics, obs_dim + act_dim, 1, hidden, layer_norm)

    def forward(self, obs: Tensor, act: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """``obs`` (K, M, obs_dim), ``act`` (K, M, act_dim) → (K, n, M)."""
        k, m = obs.shape[0], obs.shape[1]
        x = torch.cat([obs, act], dim=-1)
        x = x.unsqueeze(1).expand(k, self.n_critics, m, x.shape[-1]).reshape(k * self.n_critics, m, -1)
        return self.net(x, params).reshape(k, self.n_critics, m)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy head: obs → (mean, log_std), each (K, M, act_dim)."""

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        layer_norm: bool = False,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.net = EnsembleMLP(n_agents, obs_dim, 2 * act_dim, hidden, layer_norm)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(obs)
        mean, log_std = out.split(self.act_dim, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)
