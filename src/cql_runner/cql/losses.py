"""The CQL(H)-on-SAC math, as pure functions of tensors.

Nothing here holds an optimizer, a config object or a logger. The loss functions take
keyword-only arguments (two floats such as ``alpha`` and ``tau`` cannot be swapped silently)
and return a tensor or named terms (a NamedTuple). Shapes use K = independent agents
(seeds), n = critics per agent, N = sampled actions per state, B = batch, A = action
dimension. Every loss is returned per agent, shape (K,) or (K, n), so K agents trained side
by side get exactly the gradients each would get alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cql_runner.config import ALPHA_PRIME_MAX, LAGRANGE_FORMS

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Dataset actions at exactly ±1 have infinite atanh; BC needs a finite pre-image.
_ATANH_CLIP = 1.0 - 1e-6
LOG_ALPHA_PRIME_MAX = math.log(ALPHA_PRIME_MAX)


def _tanh_log_det(pre_tanh: Tensor) -> Tensor:
    """log(1 − tanh(x)²), computed stably as 2·(log 2 − x − softplus(−2x))."""
    return 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))


def squashed_gaussian_sample(mean: Tensor, log_std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Reparameterised a = tanh(mean + std·eps) and its log-density with the tanh Jacobian.

    ``mean``/``log_std`` (..., A) broadcast against ``eps`` (..., A); returns actions
    (..., A) and log π (...).
    """
    pre = mean + log_std.exp() * eps
    gauss = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    return torch.tanh(pre), gauss - _tanh_log_det(pre).sum(-1)


def squashed_gaussian_log_prob(mean: Tensor, log_std: Tensor, action: Tensor) -> Tensor:
    """log π(action) for actions already in (−1, 1), e.g. dataset actions for BC."""
    pre = torch.atanh(action.clamp(-_ATANH_CLIP, _ATANH_CLIP))
    eps = (pre - mean) * torch.exp(-log_std)
    gauss = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    return gauss - _tanh_log_det(pre).sum(-1)


def td_target(
    *,
    reward: Tensor,
    terminal: Tensor,
    next_q: Tensor,
    next_log_prob: Tensor | None,
    entropy_alpha: Tensor,
    discount: float,
    deterministic_backup: bool,
    max_backup: bool,
) -> Tensor:
    """y = r + γ(1 − d)·(min_i Q̄_i(s′, a′) − [α·log π(a′|s′)]).

    ``reward``/``terminal`` (K, B); ``terminal`` is 1 only for true terminations, so a
    time-limit truncation still bootstraps. ``next_q`` (K, n, S, B) holds the target
    critics at S sampled next actions with log-densities ``next_log_prob`` (K, S, B).
    Without max backup only sample 0 is used; with it, the sample maximising the
    critic-minimum is taken (and its log-density for the entropy term). ``next_log_prob``
    may be None only with the deterministic backup (e.g. for the mean action tanh(μ(s′))).
    """
    min_q = next_q.min(dim=1).values  # (K, S, B)
    if max_backup:
        value, idx = min_q.max(dim=1)
    else:
        value, idx = min_q[:, 0], None
    if not deterministic_backup:
        if next_log_prob is None:
            raise ValueError("the entropy backup needs next_log_prob")
        log_prob = next_log_prob[:, 0] if idx is None else next_log_prob.gather(1, idx.unsqueeze(1)).squeeze(1)
        value = value - entropy_alpha.unsqueeze(-1) * log_prob
    return reward + discount * (1.0 - terminal) * value


def td_loss(*, q_data: Tensor, target: Tensor) -> Tensor:
    """½·mean((Q_i(s,a) − y)²) per critic: (K, n, B), (K, B) → (K, n)."""
    return 0.5 * (q_data - target.unsqueeze(1)).pow(2).mean(-1)


class ConservativeGap(NamedTuple):
    gap: Tensor  # (K, n): mean_s[clip(ood(s) − Q(s,a))]
    ood: Tensor  # (K, n): mean_s[T·logsumexp(cat/T)], unclipped


def conservative_gap(
    *,
    q_uniform: Tensor,
    q_policy: Tensor,
    q_next_policy: Tensor,
    q_data: Tensor,
    log_prob_policy: Tensor,
    log_prob_next_policy: Tensor,
    act_dim: int,
    temperature: float,
    importance_sampling: bool,
    clip_min: float = -math.inf,
    clip_max: float = math.inf,
) -> ConservativeGap:
    """The CQL(H) gap per critic.

    ``q_uniform``, ``q_policy``, ``q_next_policy``: (K, n, N, B), the critics at s for
    actions from Unif([−1,1]^A), π(·|s) and π(·|s′) (all evaluated at s, not s′).
    ``q_data`` (K, n, B) is Q_i(s, a_data). ``log_prob_*`` (K, N, B) are the proposals'
    log-densities, detached here. With importance sampling each proposal is divided by its
    density (Unif has log-density −A·log 2); without, they enter as they are, together
    with Q(s, a_data), as in the original code's non-IS variant. ``clip_min``/``clip_max``
    clamp each sample's difference ood(s) − Q(s, a) before the batch mean, as CORL does.
    """
    if importance_sampling:
        parts = [
            q_uniform + act_dim * _LOG_2,
            q_policy - log_prob_policy.detach().unsqueeze(1),
            q_next_policy - log_prob_next_policy.detach().unsqueeze(1),
        ]
    else:
        parts = [q_uniform, q_policy, q_next_policy, q_data.unsqueeze(2)]
    cat = torch.cat(parts, dim=2)  # (K, n, 3N[+1], B)
    ood = temperature * torch.logsumexp(cat / temperature, dim=2)  # (K, n, B)
    gap = (ood - q_data).clamp(clip_min, clip_max).mean(-1)
    return ConservativeGap(gap=gap, ood=ood.mean(-1))


class CQLPenalty(NamedTuple):
    penalty: Tensor  # (K, n): added to each critic's loss
    alpha_prime_loss: Tensor  # (K,): the Lagrange dual loss, minimised over log α′
    alpha_prime: Tensor  # (K,): α′ (detached; zero without Lagrange)


def cql_penalty(
    *,
    gap: Tensor,
    alpha: float,
    lagrange: bool,
    lagrange_form: str,
    tau: float,
    log_alpha_prime: Tensor,
) -> CQLPenalty:
    """Conservative penalty per critic and the Lagrange dual loss.

    Fixed: cql_i = alpha·gap_i. Lagrange, with α′ = exp(log α′) detached in the penalty:
    - ``weighted`` (the original code): cql_i = α′·(alpha·gap_i − tau), so the constraint is
      alpha·gap ≤ tau;
    - ``raw`` (CORL, d3rlpy 2.8.1): cql_i = α′·alpha·(gap_i − tau), so the constraint is gap ≤ tau.
    The dual loss is −½·Σ_i cql_i with the gap detached, so α′ grows while the constrained
    quantity exceeds tau and shrinks below it. α′ is kept under cql.alpha_prime_max by projecting
    log α′ after each optimizer step (:func:`project_log_alpha_prime`), not by a clamp here: a
    clamp's zero gradient would freeze α′ at the cap.
    """
    if not lagrange:
        zeros = torch.zeros_like(log_alpha_prime)
        return CQLPenalty(penalty=alpha * gap, alpha_prime_loss=zeros, alpha_prime=zeros)
    if lagrange_form == "weighted":
        slack = alpha * gap - tau
    elif lagrange_form == "raw":
        slack = alpha * (gap - tau)
    else:
        raise ValueError(f"lagrange_form must be one of {LAGRANGE_FORMS}, not {lagrange_form!r}")
    alpha_prime = log_alpha_prime.exp()
    penalty = alpha_prime.detach().unsqueeze(-1) * slack
    dual = -0.5 * (alpha_prime.unsqueeze(-1) * slack.detach()).sum(-1)
    return CQLPenalty(penalty=penalty, alpha_prime_loss=dual, alpha_prime=alpha_prime.detach())


@torch.no_grad()
def project_log_alpha_prime(log_alpha_prime: Tensor, *, alpha_prime_max: float = ALPHA_PRIME_MAX) -> None:
    """Project log α′ into (−inf, log alpha_prime_max] in place, after an optimizer step.

    The gradient of the dual stays alive at the cap, so α′ comes back down as soon as the
    constraint is met. In-place and free of host syncs, so a CUDA graph can capture it.
    """
    log_alpha_prime.clamp_(max=math.log(alpha_prime_max))


def conservative_term_off(*, n_agents: int, n_critics: int, like: Tensor) -> tuple[ConservativeGap, CQLPenalty]:
    """The gap and penalty when the conservative weight is 0 (plain SAC): all zeros, no α′ loss.

    The agent then skips the proposals' critic calls; these zeros keep the metrics the same."""
    zeros = like.new_zeros(n_agents, n_critics)
    per_agent = like.new_zeros(n_agents)
    return (
        ConservativeGap(gap=zeros, ood=zeros),
        CQLPenalty(penalty=zeros, alpha_prime_loss=per_agent, alpha_prime=per_agent),
    )


def actor_loss(*, entropy_alpha: Tensor, log_prob: Tensor, objective: Tensor) -> Tensor:
    """mean(α·log π(ã|s) − objective), α detached. (K, B) inputs → (K,).

    ``objective`` is what the actor climbs: min_i Q_i(s, ã) for SAC, or log π(a_data|s)
    during the behaviour-cloning warm start."""
    return (entropy_alpha.detach().unsqueeze(-1) * log_prob - objective).mean(-1)


def entropy_alpha_loss(*, log_alpha: Tensor, log_prob: Tensor, target_entropy: float, form: str = "log") -> Tensor:
    """−mean(w · (log π(ã|s) + target_entropy)), the log-prob detached, minimised over log α. → (K,).

    ``form`` picks w: ``log`` = log α (the original code, CORL), ``alpha`` = α (d3rlpy). The
    gradients differ by the factor α, which Adam's normalisation mostly but not wholly removes."""
    weight = log_alpha if form == "log" else log_alpha.exp()
    return -(weight.unsqueeze(-1) * (log_prob + target_entropy).detach()).mean(-1)
