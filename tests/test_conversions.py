"""The README's conversion table, checked numerically: our critic loss with converted settings has
the same gradient direction as each peer's loss, re-derived here from the peer's own equations.

The peers are not imported: each ``*_critic_loss`` below writes the peer's critic (and Lagrange
dual) loss from its code's equations on plain tensors of Q-values. The gradient is taken with
respect to the Q-values themselves (the networks' chain rule is common to both sides), so the
check is on the losses' algebra: the ½ of our TD term, the Lagrange form, the gap clip and α′.
Adam is invariant to an overall positive scale, so "same direction" is what makes training match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from cql_runner.cql import losses

B, N, A, N_CRITICS = 16, 5, 3, 2
LOG_2 = math.log(2.0)


@dataclass
class Batch:
    """Q-values of two critics on one tiny batch; leaves, so their gradients can be compared."""

    q_data: Tensor  # (n, B)
    q_uniform: Tensor  # (n, N, B)
    q_policy: Tensor  # (n, N, B)
    q_next_policy: Tensor  # (n, N, B)
    log_prob_policy: Tensor  # (N, B)
    log_prob_next_policy: Tensor  # (N, B)
    target: Tensor  # (B,)

    def leaves(self) -> list[Tensor]:
        return [self.q_data, self.q_uniform, self.q_policy, self.q_next_policy]


def make_batch(seed: int, td_scale: float = 3.0) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    # The two critics differ by about td_scale on dataset actions, and y lies about td_scale away.
    base = torch.randn(B, generator=g) * 2.0
    q_data = (base + torch.randn(N_CRITICS, B, generator=g) * td_scale).requires_grad_()
    target = base + torch.randn(B, generator=g) * td_scale
    return Batch(
        q_data=q_data,
        q_uniform=r(N_CRITICS, N, B, scale=2.0),
        q_policy=r(N_CRITICS, N, B, scale=2.0),
        q_next_policy=r(N_CRITICS, N, B, scale=2.0),
        log_prob_policy=torch.randn(N, B, generator=g),
        log_prob_next_policy=torch.randn(N, B, generator=g),
        target=target,
    )


# ----- the peers' losses, written from their equations ----------------------------------------------
def peer_ood(b: Batch, temperature: float) -> Tensor:
    """T·logsumexp over the 3N importance-weighted proposals, per critic and state: (n, B).
    All four implementations build the same concatenation (Unif density 0.5^|A|, log π detached)."""
    cat = torch.cat(
        [b.q_uniform - math.log(0.5**A), b.q_policy - b.log_prob_policy, b.q_next_policy - b.log_prob_next_policy],
        dim=1,
    )
    return temperature * torch.logsumexp(cat / temperature, dim=1)


def mse(b: Batch) -> Tensor:
    """Per-critic MSE without the ½ (F.mse_loss), as the original, CORL, d3rlpy and TorchRL 'l2' use: (n,)."""
    return (b.q_data - b.target).pow(2).mean(-1)


def rlkit_critic_loss(
    b: Batch,
    *,
    min_q_weight: float,
    lagrange: bool,
    target_action_gap: float,
    log_alpha_prime: Tensor,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The original code: min_qf_i = w·(mean T·lse − mean Q), then α′·(min_qf_i − gap); dual −½Σ."""
    gap = peer_ood(b, temperature).mean(-1) - b.q_data.mean(-1)
    min_qf = min_q_weight * gap
    if lagrange:
        alpha_prime = log_alpha_prime.exp().clamp(0.0, 1e6)
        min_qf = alpha_prime.detach() * (min_qf - target_action_gap)
        dual = -0.5 * (alpha_prime * (min_q_weight * gap.detach() - target_action_gap)).sum()
    else:
        dual = torch.zeros(())
    return mse(b).sum() + min_qf.sum(), dual


def corl_critic_loss(
    b: Batch,
    *,
    cql_alpha: float,
    lagrange: bool,
    target_action_gap: float,
    log_alpha_prime: Tensor,
    clip_min: float = -math.inf,
    clip_max: float = math.inf,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """CORL: diff_i = mean(clamp(ood − Q, clip)); α′·w·(diff_i − gap); dual −½Σ."""
    diff = (peer_ood(b, temperature) - b.q_data).clamp(clip_min, clip_max).mean(-1)
    if lagrange:
        alpha_prime = log_alpha_prime.exp().clamp(0.0, 1e6)
        cql = alpha_prime.detach() * cql_alpha * (diff - target_action_gap)
        dual = -0.5 * (alpha_prime * cql_alpha * (diff.detach() - target_action_gap)).sum()
    else:
        cql, dual = cql_alpha * diff, torch.zeros(())
    return mse(b).sum() + cql.sum(), dual


def d3rlpy_critic_loss(
    b: Batch, *, conservative_weight: float, alpha_threshold: float, log_alpha: Tensor
) -> tuple[Tensor, Tensor]:
    """d3rlpy 2.8.1: cons_i = w·(mean(lse − Q) − threshold); loss Σ MSE + α′·Σ cons; dual −mean_i α′·cons_i."""
    cons = conservative_weight * ((peer_ood(b, 1.0) - b.q_data).mean(-1) - alpha_threshold)
    alpha = log_alpha.exp().clamp(0.0, 1e6)
    dual = -(alpha * cons.detach()).mean()
    return mse(b).sum() + (alpha.detach() * cons).sum(), dual


def torchrl_critic_loss(b: Batch, *, min_q_weight: float, loss_function: str, temperature: float = 1.0) -> Tensor:
    """TorchRL CQLLoss: Σ_critics distance(Q, y) (batch mean) + mean_s Σ_i w·(T·lse − Q_i); no α′ in it."""
    if loss_function == "l2":
        td = (b.q_data - b.target).pow(2)
    else:  # smooth_l1 with beta 1: ½δ² inside |δ| < 1
        td = torch.nn.functional.smooth_l1_loss(b.q_data, b.target.expand_as(b.q_data), reduction="none")
    cql = (min_q_weight * peer_ood(b, temperature) - min_q_weight * b.q_data).sum(0).mean()
    return td.sum(0).mean() + cql


# ----- ours -----------------------------------------------------------------------------------------
def ours_critic_loss(
    b: Batch,
    *,
    alpha: float,
    lagrange: bool,
    tau: float,
    lagrange_form: str = "raw",
    log_alpha_prime: Tensor,
    clip_min: float = -math.inf,
    clip_max: float = math.inf,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    gap = losses.conservative_gap(
        q_uniform=b.q_uniform[None],
        q_policy=b.q_policy[None],
        q_next_policy=b.q_next_policy[None],
        q_data=b.q_data[None],
        log_prob_policy=b.log_prob_policy[None],
        log_prob_next_policy=b.log_prob_next_policy[None],
        act_dim=A,
        temperature=temperature,
        importance_sampling=True,
        clip_min=clip_min,
        clip_max=clip_max,
    ).gap
    pen = losses.cql_penalty(
        gap=gap,
        alpha=alpha,
        lagrange=lagrange,
        lagrange_form=lagrange_form,
        tau=tau,
        log_alpha_prime=log_alpha_prime.reshape(1),
    )
    td = losses.td_loss(q_data=b.q_data[None], target=b.target[None])
    return (td + pen.penalty).sum(), pen.alpha_prime_loss.sum()


def grads(loss: Tensor, leaves: list[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves, retain_graph=True)])


def assert_same_direction(ours: Tensor, peer: Tensor) -> None:
    cos = torch.nn.functional.cosine_similarity(ours, peer, dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-6)


def assert_other_direction(ours: Tensor, peer: Tensor) -> None:
    """The control: a wrong conversion must be caught (cosine visibly below 1)."""
    assert torch.nn.functional.cosine_similarity(ours, peer, dim=0).item() < 0.999


# ----- the table's rows -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_original_code_lagrange_is_weighted_form_with_alpha_and_tau_halved(seed: int) -> None:
    """rlkit min_q_weight w, target_action_gap τ  ->  alpha = w/2, tau = τ/2, lagrange_form=weighted."""
    b, w, gap_target = make_batch(seed), 5.0, 10.0
    lap_peer = torch.tensor(0.3, requires_grad=True)
    lap_ours = torch.tensor(0.3, requires_grad=True)
    peer, peer_dual = rlkit_critic_loss(
        b, min_q_weight=w, lagrange=True, target_action_gap=gap_target, log_alpha_prime=lap_peer
    )
    ours, ours_dual = ours_critic_loss(
        b, alpha=w / 2, lagrange=True, tau=gap_target / 2, lagrange_form="weighted", log_alpha_prime=lap_ours
    )
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))
    # The dual moves α′ the same way (and by the same factor ½ as the critic loss).
    (g_peer,) = torch.autograd.grad(peer_dual, lap_peer)
    (g_ours,) = torch.autograd.grad(ours_dual, lap_ours)
    assert g_ours.item() == pytest.approx(0.5 * g_peer.item(), rel=1e-5)
    # Controls: alpha = w (no halving) or the raw form give another direction.
    wrong, _ = ours_critic_loss(
        b, alpha=w, lagrange=True, tau=gap_target / 2, lagrange_form="weighted", log_alpha_prime=lap_ours
    )
    assert_other_direction(grads(wrong, b.leaves()), grads(peer, b.leaves()))
    (g_raw,) = torch.autograd.grad(
        ours_critic_loss(
            b, alpha=w / 2, lagrange=True, tau=gap_target / 2, lagrange_form="raw", log_alpha_prime=lap_ours
        )[1],
        lap_ours,
    )
    assert g_raw.item() != pytest.approx(0.5 * g_peer.item(), rel=1e-3)


def test_original_code_fixed_weight_is_alpha_halved() -> None:
    b, w = make_batch(2), 5.0
    lap = torch.tensor(0.0)
    peer, _ = rlkit_critic_loss(b, min_q_weight=w, lagrange=False, target_action_gap=0.0, log_alpha_prime=lap)
    ours, _ = ours_critic_loss(b, alpha=w / 2, lagrange=False, tau=0.0, log_alpha_prime=lap)
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))
    wrong, _ = ours_critic_loss(b, alpha=w, lagrange=False, tau=0.0, log_alpha_prime=lap)
    assert_other_direction(grads(wrong, b.leaves()), grads(peer, b.leaves()))


@pytest.mark.parametrize("clip", [(-math.inf, math.inf), (-1.0, 2.5)])
def test_corl_is_raw_form_with_alpha_halved_and_tau_kept(clip: tuple[float, float]) -> None:
    """CORL cql_alpha w, cql_target_action_gap τ, clip  ->  alpha = w/2, tau = τ, raw, the same clip."""
    b, w, gap_target = make_batch(3), 10.0, 0.8
    lap_peer = torch.tensor(1.0, requires_grad=True)  # CORL starts log α′ at 1.0 (α′ = e)
    lap_ours = torch.tensor(1.0, requires_grad=True)
    peer, peer_dual = corl_critic_loss(
        b,
        cql_alpha=w,
        lagrange=True,
        target_action_gap=gap_target,
        log_alpha_prime=lap_peer,
        clip_min=clip[0],
        clip_max=clip[1],
    )
    ours, ours_dual = ours_critic_loss(
        b,
        alpha=w / 2,
        lagrange=True,
        tau=gap_target,
        lagrange_form="raw",
        log_alpha_prime=lap_ours,
        clip_min=clip[0],
        clip_max=clip[1],
    )
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))
    (g_peer,) = torch.autograd.grad(peer_dual, lap_peer)
    (g_ours,) = torch.autograd.grad(ours_dual, lap_ours)
    assert g_ours.item() == pytest.approx(0.5 * g_peer.item(), rel=1e-5)
    if math.isfinite(clip[0]):
        # The clip is per sample: clamping the batch mean instead (the old rule) is another loss.
        gap_mean_clip = (peer_ood(b, 1.0) - b.q_data).mean(-1).clamp(*clip)
        per_sample = (peer_ood(b, 1.0) - b.q_data).clamp(*clip).mean(-1)
        assert not torch.allclose(gap_mean_clip, per_sample)


def test_d3rlpy_is_raw_form_with_alpha_halved() -> None:
    """d3rlpy conservative_weight w, alpha_threshold τ  ->  alpha = w/2, tau = τ, raw."""
    b, w, gap_target = make_batch(4), 5.0, 10.0
    la_peer = torch.tensor(-0.2, requires_grad=True)
    la_ours = torch.tensor(-0.2, requires_grad=True)
    peer, peer_dual = d3rlpy_critic_loss(b, conservative_weight=w, alpha_threshold=gap_target, log_alpha=la_peer)
    ours, ours_dual = ours_critic_loss(
        b, alpha=w / 2, lagrange=True, tau=gap_target, lagrange_form="raw", log_alpha_prime=la_ours
    )
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))
    # d3rlpy's dual is the mean over critics (ours −½Σ): equal for two critics, up to our ½.
    (g_peer,) = torch.autograd.grad(peer_dual, la_peer)
    (g_ours,) = torch.autograd.grad(ours_dual, la_ours)
    assert g_ours.item() == pytest.approx(0.5 * g_peer.item(), rel=1e-5)
    wrong, _ = ours_critic_loss(b, alpha=w, lagrange=True, tau=gap_target, lagrange_form="raw", log_alpha_prime=la_ours)
    assert_other_direction(grads(wrong, b.leaves()), grads(peer, b.leaves()))


def test_torchrl_l2_is_fixed_alpha_halved_and_smooth_l1_matches_only_inside_unit_errors() -> None:
    """TorchRL min_q_weight w: with loss_function='l2' -> alpha = w/2, lagrange=false; with its
    default 'smooth_l1' (Huber, ½δ² for |δ| < 1) -> alpha = w only while every |TD error| < 1."""
    lap = torch.tensor(0.0)
    b = make_batch(5)
    peer = torchrl_critic_loss(b, min_q_weight=1.0, loss_function="l2")
    ours, _ = ours_critic_loss(b, alpha=0.5, lagrange=False, tau=0.0, log_alpha_prime=lap)
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))

    small = make_batch(6, td_scale=0.01)
    assert (small.q_data - small.target).abs().max() < 1.0
    peer = torchrl_critic_loss(small, min_q_weight=1.0, loss_function="smooth_l1")
    ours, _ = ours_critic_loss(small, alpha=1.0, lagrange=False, tau=0.0, log_alpha_prime=lap)
    assert_same_direction(grads(ours, small.leaves()), grads(peer, small.leaves()))
    # Large TD errors: Huber is linear there, so no alpha of ours reproduces it.
    big = make_batch(7, td_scale=20.0)
    peer = torchrl_critic_loss(big, min_q_weight=1.0, loss_function="smooth_l1")
    for alpha in (0.5, 1.0):
        ours, _ = ours_critic_loss(big, alpha=alpha, lagrange=False, tau=0.0, log_alpha_prime=lap)
        assert_other_direction(grads(ours, big.leaves()), grads(peer, big.leaves()))


def test_temperature_converts_one_to_one() -> None:
    b = make_batch(8)
    lap = torch.tensor(0.0)
    peer = torchrl_critic_loss(b, min_q_weight=2.0, loss_function="l2", temperature=0.5)
    ours, _ = ours_critic_loss(b, alpha=1.0, lagrange=False, tau=0.0, log_alpha_prime=lap, temperature=0.5)
    assert_same_direction(grads(ours, b.leaves()), grads(peer, b.leaves()))


def d3rlpy_temp_loss(log_temp: Tensor, log_prob: Tensor, action_size: int) -> Tensor:
    """d3rlpy 2.8.1 ``SACImpl.update_temp``: −mean(exp(log_temp)·(log π − |A|)), log π detached."""
    return -(log_temp.exp() * (log_prob.detach() - action_size)).mean()


def rlkit_alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """The original code's (and CORL's, TorchRL's) −mean(log α·(log π + H̄)), log π detached."""
    return -(log_alpha * (log_prob + target_entropy).detach()).mean()


@pytest.mark.parametrize("form, peer", [("alpha", "d3rlpy"), ("log", "rlkit")])
def test_temperature_loss_form_matches_its_peer_and_not_the_other(form: str, peer: str) -> None:
    log_prob = torch.randn(1, B, generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 1.5
    log_alpha = torch.tensor([-0.7], dtype=torch.float64, requires_grad=True)
    ours = losses.entropy_alpha_loss(log_alpha=log_alpha, log_prob=log_prob, target_entropy=-float(A), form=form)
    (g_ours,) = torch.autograd.grad(ours.sum(), [log_alpha])
    peer_losses = {
        "d3rlpy": d3rlpy_temp_loss(log_alpha, log_prob[0], A),
        "rlkit": rlkit_alpha_loss(log_alpha, log_prob[0], -float(A)),
    }
    (g_peer,) = torch.autograd.grad(peer_losses[peer], [log_alpha])
    (g_other,) = torch.autograd.grad(peer_losses["rlkit" if peer == "d3rlpy" else "d3rlpy"], [log_alpha])
    # The same value, not just the same sign: Adam's later steps depend on the gradients' magnitudes
    # over time (α's decay rescales one form's and not the other's), so only the same form converts.
    torch.testing.assert_close(g_ours, g_peer)
    assert not torch.allclose(g_ours, g_other)
