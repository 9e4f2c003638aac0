"""The pure CQL(H)-on-SAC loss functions against brute-force re-derivations.

Everything here is float64 and tiny, so comparisons can be tight. The spec is
shared/reference/cql-notes.md section 1 and the CQLConfig docstring.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from cql_runner.cql import losses

DT = torch.float64
K, NC, N, B, A = 2, 2, 3, 5, 2  # agents, critics, samples, batch, action dim


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT) * scale


# ----------------------------------------------------------------------------------------
# squashed Gaussian
# ----------------------------------------------------------------------------------------
def test_squashed_sample_log_prob_matches_torch_distributions():
    mean = _randn(K, B, A, seed=1, scale=0.5)
    log_std = _randn(K, B, A, seed=2, scale=0.3) - 0.5
    eps = _randn(K, B, A, seed=3)
    action, log_prob = losses.squashed_gaussian_sample(mean, log_std, eps)

    # Same action as the reparameterised draw.
    torch.testing.assert_close(action, torch.tanh(mean + log_std.exp() * eps))
    assert action.abs().max() < 0.999, "test must stay away from saturation"

    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])
    expected = dist.log_prob(action).sum(-1)  # independent dims
    assert log_prob.shape == (K, B)
    torch.testing.assert_close(log_prob, expected, rtol=1e-7, atol=1e-7)


def test_squashed_sample_log_prob_broadcasts_over_samples():
    """mean/log_std (K,1,B,A) against eps (K,N,B,A), as the agent calls it."""
    mean = _randn(K, 1, B, A, seed=4, scale=0.5)
    log_std = _randn(K, 1, B, A, seed=5, scale=0.3) - 0.5
    eps = _randn(K, N, B, A, seed=6)
    action, log_prob = losses.squashed_gaussian_sample(mean, log_std, eps)
    assert action.shape == (K, N, B, A) and log_prob.shape == (K, N, B)
    for j in range(N):
        a_j, lp_j = losses.squashed_gaussian_sample(mean[:, 0], log_std[:, 0], eps[:, j])
        torch.testing.assert_close(action[:, j], a_j)
        torch.testing.assert_close(log_prob[:, j], lp_j)


def test_squashed_log_prob_of_action_equals_sample_log_prob():
    mean = _randn(K, B, A, seed=7, scale=0.5)
    log_std = _randn(K, B, A, seed=8, scale=0.3) - 0.5
    eps = _randn(K, B, A, seed=9)
    action, log_prob = losses.squashed_gaussian_sample(mean, log_std, eps)
    again = losses.squashed_gaussian_log_prob(mean, log_std, action)
    torch.testing.assert_close(again, log_prob, rtol=1e-7, atol=1e-7)


def test_squashed_log_prob_stable_at_extreme_pre_tanh():
    """The stable log-det keeps the log-prob finite where naive log(1 − tanh²) is −inf."""
    mean = torch.full((1, 1, A), 25.0, dtype=DT)
    log_std = torch.zeros(1, 1, A, dtype=DT)
    eps = torch.zeros(1, 1, A, dtype=DT)
    _, log_prob = losses.squashed_gaussian_sample(mean, log_std, eps)
    assert torch.isfinite(log_prob).all()
    naive = (Normal(mean, 1.0).log_prob(mean) - torch.log(1 - torch.tanh(mean) ** 2)).sum(-1)
    assert not torch.isfinite(naive).all()
    # log(1 − tanh(25)²) ≈ log 4 − 50 per dimension.
    expected = A * (-0.5 * math.log(2 * math.pi) - (math.log(4.0) - 50.0))
    assert log_prob.item() == pytest.approx(expected, rel=1e-9)
    # Dataset actions exactly at ±1 give a finite BC log-prob (atanh clip).
    lp = losses.squashed_gaussian_log_prob(
        torch.zeros(1, 1, A, dtype=DT), torch.zeros(1, 1, A, dtype=DT), torch.ones(1, 1, A, dtype=DT)
    )
    assert torch.isfinite(lp).all()


# ----------------------------------------------------------------------------------------
# conservative gap
# ----------------------------------------------------------------------------------------
def _gap_inputs(seed: int = 0):
    q_u = _randn(K, NC, N, B, seed=seed + 10, scale=2.0)
    q_c = _randn(K, NC, N, B, seed=seed + 11, scale=2.0)
    q_n = _randn(K, NC, N, B, seed=seed + 12, scale=2.0)
    q_d = _randn(K, NC, B, seed=seed + 13, scale=2.0)
    lp_c = _randn(K, N, B, seed=seed + 14)
    lp_n = _randn(K, N, B, seed=seed + 15)
    return q_u, q_c, q_n, q_d, lp_c, lp_n


_GAP_NAMES = ("q_uniform", "q_policy", "q_next_policy", "q_data", "log_prob_policy", "log_prob_next_policy")


def _gap(inputs, **kwargs) -> losses.ConservativeGap:
    return losses.conservative_gap(**dict(zip(_GAP_NAMES, inputs)), act_dim=A, **kwargs)


def _gap_by_hand(
    q_u, q_c, q_n, q_d, lp_c, lp_n, temperature, importance_sampling, clip_min=-math.inf, clip_max=math.inf
):
    gaps = torch.zeros(K, NC, dtype=DT)
    oods = torch.zeros(K, NC, dtype=DT)
    for k in range(K):
        for i in range(NC):
            total_gap, total_ood = 0.0, 0.0
            for b in range(B):
                cat = []
                for j in range(N):
                    if importance_sampling:
                        cat.append(q_u[k, i, j, b].item() + A * math.log(2.0))
                    else:
                        cat.append(q_u[k, i, j, b].item())
                for j in range(N):
                    if importance_sampling:
                        cat.append(q_c[k, i, j, b].item() - lp_c[k, j, b].item())
                    else:
                        cat.append(q_c[k, i, j, b].item())
                for j in range(N):
                    if importance_sampling:
                        cat.append(q_n[k, i, j, b].item() - lp_n[k, j, b].item())
                    else:
                        cat.append(q_n[k, i, j, b].item())
                if not importance_sampling:
                    cat.append(q_d[k, i, b].item())
                ood = temperature * math.log(sum(math.exp(c / temperature) for c in cat))
                total_ood += ood
                total_gap += min(max(ood - q_d[k, i, b].item(), clip_min), clip_max)
            gaps[k, i] = total_gap / B
            oods[k, i] = total_ood / B
    return gaps, oods


@pytest.mark.parametrize("temperature", [1.0, 0.37, 2.5])
@pytest.mark.parametrize("importance_sampling", [True, False])
def test_conservative_gap_matches_loops(temperature, importance_sampling):
    inputs = _gap_inputs()
    out = _gap(inputs, temperature=temperature, importance_sampling=importance_sampling)
    gap, ood = _gap_by_hand(*inputs, temperature, importance_sampling)
    assert out.gap.shape == (K, NC) and out.ood.shape == (K, NC)
    torch.testing.assert_close(out.gap, gap, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.ood, ood, rtol=1e-10, atol=1e-10)


def test_conservative_gap_importance_sampling_changes_value():
    inputs = _gap_inputs()
    a = _gap(inputs, temperature=1.0, importance_sampling=True)
    b = _gap(inputs, temperature=1.0, importance_sampling=False)
    assert (a.gap - b.gap).abs().min() > 1e-3


def _per_sample_diffs(inputs) -> torch.Tensor:
    """ood(s) − Q(s, a) for every sample, (K, NC, B), re-derived one batch column at a time."""
    diffs = torch.zeros(K, NC, B, dtype=DT)
    for b in range(B):
        q_u, q_c, q_n, q_d, lp_c, lp_n = (t[..., b : b + 1] for t in inputs)
        diffs[:, :, b] = _gap_by_hand_batch(q_u, q_c, q_n, q_d, lp_c, lp_n)
    return diffs


def _gap_by_hand_batch(q_u, q_c, q_n, q_d, lp_c, lp_n):
    cat = torch.cat([q_u + A * math.log(2.0), q_c - lp_c[:, None], q_n - lp_n[:, None]], dim=2)
    return (torch.logsumexp(cat, dim=2) - q_d)[..., 0]


def test_conservative_gap_clips_each_sample_before_the_mean():
    """CORL's cql_clip_diff_min/max: clamp ood(s) − Q(s, a) per sample, then average."""
    inputs = _gap_inputs()
    diffs = _per_sample_diffs(inputs)
    raw, _ = _gap_by_hand(*inputs, 1.0, True)
    torch.testing.assert_close(diffs.mean(-1), raw, rtol=1e-10, atol=1e-10)
    lo = diffs.min().item() + 0.25 * (diffs.max() - diffs.min()).item()
    hi = diffs.min().item() + 0.75 * (diffs.max() - diffs.min()).item()
    assert (diffs < lo).any() and (diffs > hi).any()
    for clip in (dict(clip_min=lo, clip_max=hi), dict(clip_min=lo), dict(clip_max=hi)):
        out = _gap(inputs, temperature=1.0, importance_sampling=True, **clip)
        by_hand, _ = _gap_by_hand(*inputs, 1.0, True, **clip)
        expected = diffs.clamp(clip.get("clip_min"), clip.get("clip_max")).mean(-1)
        torch.testing.assert_close(by_hand, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.gap, expected, rtol=1e-10, atol=1e-10)
    # Per sample is not the same as clamping the batch mean: the clip binds on single samples here.
    batch_clipped = raw.clamp(lo, hi)
    out = _gap(inputs, temperature=1.0, importance_sampling=True, clip_min=lo, clip_max=hi)
    assert (out.gap - batch_clipped).abs().max() > 1e-3
    # The logsumexp metric is never clipped.
    torch.testing.assert_close(out.ood, _gap(inputs, temperature=1.0, importance_sampling=True).ood)


def test_conservative_gap_detaches_log_densities_but_not_q():
    q_u, q_c, q_n, q_d, lp_c, lp_n = (t.clone().requires_grad_(True) for t in _gap_inputs())
    out = _gap((q_u, q_c, q_n, q_d, lp_c, lp_n), temperature=1.0, importance_sampling=True)
    grads = torch.autograd.grad(out.gap.sum(), [q_u, q_c, q_n, q_d, lp_c, lp_n], allow_unused=True)
    for g in grads[:4]:
        assert g is not None and g.abs().sum() > 0
    for g in grads[4:]:
        assert g is None or g.abs().max() == 0
    # The gradient w.r.t. Q(s, a_data) is exactly −1/B for every element.
    torch.testing.assert_close(grads[3], torch.full_like(q_d, -1.0 / B))
    # The logsumexp weights over all 3N proposals sum to 1 per (k, i, b).
    weight_sum = (grads[0] + grads[1] + grads[2]).sum(2) * B
    torch.testing.assert_close(weight_sum, torch.ones_like(weight_sum))


# ----------------------------------------------------------------------------------------
# CQL penalty and the Lagrange dual
# ----------------------------------------------------------------------------------------
def test_conservative_term_off_is_all_zeros_with_no_dual():
    like = _randn(K, NC, B, seed=23)
    gap, cql = losses.conservative_term_off(n_agents=K, n_critics=NC, like=like)
    for t in (*gap, *cql):
        assert t.dtype == DT and not t.requires_grad and (t == 0).all()
    assert gap.gap.shape == gap.ood.shape == cql.penalty.shape == (K, NC)
    assert cql.alpha_prime_loss.shape == cql.alpha_prime.shape == (K,)


def test_loss_functions_take_keywords_only():
    import inspect

    for fn in (
        losses.td_target,
        losses.td_loss,
        losses.conservative_gap,
        losses.cql_penalty,
        losses.conservative_term_off,
        losses.actor_loss,
        losses.entropy_alpha_loss,
    ):
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert kinds == {inspect.Parameter.KEYWORD_ONLY}, fn.__name__


def test_cql_penalty_fixed_alpha():
    gap = _randn(K, NC, seed=20).requires_grad_(True)
    log_ap = torch.zeros(K, dtype=DT, requires_grad=True)
    for form in ("weighted", "raw"):  # the form only matters with Lagrange
        penalty, dual, ap = losses.cql_penalty(
            gap=gap, alpha=3.5, lagrange=False, lagrange_form=form, tau=1.0, log_alpha_prime=log_ap
        )
        torch.testing.assert_close(penalty, 3.5 * gap.detach())
        assert penalty.shape == (K, NC) and dual.shape == (K,) and ap.shape == (K,)
        assert (dual == 0).all()
        assert not dual.requires_grad  # the dual variable gets no gradient when off
        (g,) = torch.autograd.grad(penalty.sum(), [gap])
        torch.testing.assert_close(g, torch.full_like(gap, 3.5))


def _penalty_by_hand(gap, alpha, tau, log_ap, form):
    """Both Lagrange forms, one critic at a time: (penalty (K, NC), dual (K,))."""
    penalty = torch.zeros(K, NC, dtype=DT)
    dual = torch.zeros(K, dtype=DT)
    for k in range(K):
        ap = math.exp(log_ap[k].item())
        for i in range(NC):
            g = gap[k, i].item()
            slack = alpha * g - tau if form == "weighted" else alpha * (g - tau)
            penalty[k, i] = ap * slack
            dual[k] += -0.5 * ap * slack
    return penalty, dual


@pytest.mark.parametrize("form", ["weighted", "raw"])
def test_cql_penalty_lagrange_values_and_detachment(form):
    gap = _randn(K, NC, seed=21, scale=3.0).requires_grad_(True)
    log_ap = torch.tensor([0.3, -1.2], dtype=DT, requires_grad=True)
    alpha, tau = 2.0, 0.5
    penalty, dual, ap = losses.cql_penalty(
        gap=gap, alpha=alpha, lagrange=True, lagrange_form=form, tau=tau, log_alpha_prime=log_ap
    )
    ap_expected = log_ap.detach().exp()
    torch.testing.assert_close(ap, ap_expected)
    want_penalty, want_dual = _penalty_by_hand(gap.detach(), alpha, tau, log_ap.detach(), form)
    torch.testing.assert_close(penalty, want_penalty, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dual, want_dual, rtol=1e-12, atol=1e-12)
    # penalty: gradient to gap only (α′ detached); dual: gradient to log α′ only (gap detached).
    g_gap, g_lap = torch.autograd.grad(penalty.sum(), [gap, log_ap], allow_unused=True)
    torch.testing.assert_close(g_gap, ap_expected[:, None].expand(K, NC) * alpha)
    assert g_lap is None or (g_lap == 0).all()
    g_gap, g_lap = torch.autograd.grad(dual.sum(), [gap, log_ap], allow_unused=True)
    assert g_gap is None or (g_gap == 0).all()
    torch.testing.assert_close(g_lap, dual.detach())  # d/dlogα′ of c·exp(logα′) is itself


def test_lagrange_forms_differ_unless_alpha_is_one():
    gap = _randn(K, NC, seed=22, scale=3.0)
    log_ap = torch.tensor([0.1, 0.4], dtype=DT)

    def both(alpha):
        return [
            losses.cql_penalty(gap=gap, alpha=alpha, lagrange=True, lagrange_form=f, tau=2.0, log_alpha_prime=log_ap)
            for f in ("weighted", "raw")
        ]

    weighted, raw = both(1.0)
    torch.testing.assert_close(weighted.penalty, raw.penalty)
    torch.testing.assert_close(weighted.alpha_prime_loss, raw.alpha_prime_loss)
    weighted, raw = both(5.0)
    # raw − weighted = α′·(tau − alpha·tau) per critic: here α′·(2 − 10).
    torch.testing.assert_close(raw.penalty - weighted.penalty, log_ap.exp()[:, None].expand(K, NC) * -8.0)


@pytest.mark.parametrize("form", ["weighted", "raw"])
@pytest.mark.parametrize("gap_value, direction", [(3.0, +1), (-2.0, -1), (0.5, 0)])
def test_lagrange_dual_step_moves_alpha_prime_the_right_way(form, gap_value, direction):
    """The constrained quantity (alpha·gap for weighted, gap for raw) above τ ⇒ α′ rises; below ⇒ α′
    falls, under an actual SGD step on log α′. With alpha = 2 and τ = 1 a gap of 0.5 is below τ for
    the raw form but exactly at it for the weighted one (2·0.5 = 1), so α′ stays there."""
    tau, alpha = 1.0, 2.0
    if direction == 0:
        direction = -1 if form == "raw" else 0
    gap = torch.full((K, NC), gap_value, dtype=DT)
    log_ap = torch.nn.Parameter(torch.zeros(K, dtype=DT))
    opt = torch.optim.SGD([log_ap], lr=0.1)
    kw = dict(alpha=alpha, lagrange=True, lagrange_form=form, tau=tau)
    ap_before = losses.cql_penalty(gap=gap, log_alpha_prime=log_ap, **kw).alpha_prime
    opt.zero_grad()
    losses.cql_penalty(gap=gap, log_alpha_prime=log_ap, **kw).alpha_prime_loss.sum().backward()
    opt.step()
    ap_after = losses.cql_penalty(gap=gap, log_alpha_prime=log_ap, **kw).alpha_prime
    if direction == 0:
        torch.testing.assert_close(ap_after, ap_before)
    else:
        assert ((ap_after - ap_before) * direction > 0).all()


def test_alpha_prime_keeps_its_gradient_at_the_cap_and_projection_bounds_it():
    """No clamp on exp(log α′): at (or above) the cap the dual still has a gradient, so α′ can come
    back down once the constraint is met; the projection after each step keeps α′ ≤ 1e6."""
    assert losses.ALPHA_PRIME_MAX == 1e6
    gap = torch.ones(K, NC, dtype=DT)
    log_ap = torch.tensor([losses.LOG_ALPHA_PRIME_MAX, 1000.0], dtype=DT, requires_grad=True)
    # gap (1) below τ (3): the dual's gradient pushes log α′ down, even at and beyond the cap.
    out = losses.cql_penalty(gap=gap, alpha=1.0, lagrange=True, lagrange_form="raw", tau=3.0, log_alpha_prime=log_ap)
    (grad,) = torch.autograd.grad(out.alpha_prime_loss.sum(), [log_ap])
    assert grad[0] > 0  # gradient descent lowers log α′
    with torch.no_grad():
        losses.project_log_alpha_prime(log_ap)
    torch.testing.assert_close(log_ap.detach().exp(), torch.full((K,), 1e6, dtype=DT))
    below = torch.tensor([0.5, -3.0], dtype=DT)
    losses.project_log_alpha_prime(below)
    torch.testing.assert_close(below, torch.tensor([0.5, -3.0], dtype=DT))  # inside the range: untouched
    # A lower bound (cql.alpha_prime_max, default 1) projects to its own log.
    bounded = torch.tensor([0.5, -3.0], dtype=DT)
    losses.project_log_alpha_prime(bounded, alpha_prime_max=1.0)
    torch.testing.assert_close(bounded, torch.tensor([0.0, -3.0], dtype=DT))


# ----------------------------------------------------------------------------------------
# TD target and loss
# ----------------------------------------------------------------------------------------
def _td(reward, terminal, next_q, next_log_prob, entropy_alpha, discount, deterministic_backup, max_backup):
    """td_target in the order the tests below list its inputs (the function takes keywords only)."""
    return losses.td_target(
        reward=reward,
        terminal=terminal,
        next_q=next_q,
        next_log_prob=next_log_prob,
        entropy_alpha=entropy_alpha,
        discount=discount,
        deterministic_backup=deterministic_backup,
        max_backup=max_backup,
    )


def _td_inputs(samples: int):
    reward = _randn(K, B, seed=30)
    terminal = torch.zeros(K, B, dtype=DT)
    terminal[0, 1] = 1.0
    terminal[1, 3] = 1.0
    next_q = _randn(K, NC, samples, B, seed=31, scale=3.0)
    next_lp = _randn(K, samples, B, seed=32)
    ent_alpha = torch.tensor([0.7, 0.2], dtype=DT)
    return reward, terminal, next_q, next_lp, ent_alpha


@pytest.mark.parametrize("deterministic_backup", [True, False])
def test_td_target_by_hand(deterministic_backup):
    gamma = 0.9
    reward, terminal, next_q, next_lp, ent_alpha = _td_inputs(samples=1)
    y = _td(reward, terminal, next_q, next_lp, ent_alpha, gamma, deterministic_backup, max_backup=False)
    assert y.shape == (K, B)
    for k in range(K):
        for b in range(B):
            v = min(next_q[k, i, 0, b].item() for i in range(NC))
            if not deterministic_backup:
                v -= ent_alpha[k].item() * next_lp[k, 0, b].item()
            expected = reward[k, b].item() + gamma * (1 - terminal[k, b].item()) * v
            assert y[k, b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_td_target_deterministic_backup_needs_no_log_prob():
    reward, terminal, next_q, next_lp, ent_alpha = _td_inputs(samples=1)
    y = _td(reward, terminal, next_q, None, ent_alpha, 0.9, True, False)
    torch.testing.assert_close(y, _td(reward, terminal, next_q, next_lp, ent_alpha, 0.9, True, False))
    with pytest.raises(ValueError, match="next_log_prob"):
        _td(reward, terminal, next_q, None, ent_alpha, 0.9, False, False)


def test_td_target_without_max_backup_uses_sample_zero_only():
    reward, terminal, next_q, next_lp, ent_alpha = _td_inputs(samples=N)
    y = _td(reward, terminal, next_q, next_lp, ent_alpha, 0.9, False, False)
    y0 = _td(reward, terminal, next_q[:, :, :1], next_lp[:, :1], ent_alpha, 0.9, False, False)
    torch.testing.assert_close(y, y0)


def test_deterministic_backup_drops_exactly_the_entropy_term():
    gamma = 0.95
    for max_backup, samples in ((False, 1), (True, N)):
        reward, terminal, next_q, next_lp, ent_alpha = _td_inputs(samples)
        y_det = _td(reward, terminal, next_q, next_lp, ent_alpha, gamma, True, max_backup)
        y_ent = _td(reward, terminal, next_q, next_lp, ent_alpha, gamma, False, max_backup)
        idx = next_q.min(1).values.argmax(1) if max_backup else torch.zeros(K, B, dtype=torch.long)
        lp = next_lp.gather(1, idx[:, None]).squeeze(1)
        torch.testing.assert_close(y_det - y_ent, gamma * (1 - terminal) * ent_alpha[:, None] * lp)


def test_max_backup_by_hand():
    gamma = 0.8
    reward, terminal, next_q, next_lp, ent_alpha = _td_inputs(samples=N)
    y = _td(reward, terminal, next_q, next_lp, ent_alpha, gamma, deterministic_backup=False, max_backup=True)
    y_det = _td(reward, terminal, next_q, next_lp, ent_alpha, gamma, deterministic_backup=True, max_backup=True)
    picked_nonzero = False
    for k in range(K):
        for b in range(B):
            mins = [min(next_q[k, i, s, b].item() for i in range(NC)) for s in range(N)]
            s_star = max(range(N), key=lambda s: mins[s])
            picked_nonzero |= s_star != 0
            v = mins[s_star] - ent_alpha[k].item() * next_lp[k, s_star, b].item()
            not_done = 1 - terminal[k, b].item()
            assert y[k, b].item() == pytest.approx(reward[k, b].item() + gamma * not_done * v, rel=1e-12, abs=1e-12)
            assert y_det[k, b].item() == pytest.approx(
                reward[k, b].item() + gamma * not_done * mins[s_star], rel=1e-12, abs=1e-12
            )
    assert picked_nonzero, "test data must exercise a non-zero argmax"


@pytest.mark.parametrize("max_backup", [False, True])
def test_terminal_gives_reward_truncation_bootstraps(max_backup):
    samples = N if max_backup else 1
    reward, _, next_q, next_lp, ent_alpha = _td_inputs(samples)
    next_q = next_q + 10.0  # value clearly non-zero
    terminal = torch.ones(K, B, dtype=DT)
    y = _td(reward, terminal, next_q, next_lp, ent_alpha, 0.99, False, max_backup)
    assert torch.equal(y, reward)
    # A truncation (terminal flag 0 at an episode end) bootstraps.
    y = _td(reward, torch.zeros(K, B, dtype=DT), next_q, next_lp, ent_alpha, 0.99, False, max_backup)
    assert ((y - reward).abs() > 1.0).all()


def test_td_loss_half_mse_per_critic():
    q = _randn(K, NC, B, seed=40)
    y = _randn(K, B, seed=41)
    loss = losses.td_loss(q_data=q, target=y)
    assert loss.shape == (K, NC)
    for k in range(K):
        for i in range(NC):
            expected = 0.5 * sum((q[k, i, b].item() - y[k, b].item()) ** 2 for b in range(B)) / B
            assert loss[k, i].item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------
# actor and entropy temperature
# ----------------------------------------------------------------------------------------
def test_actor_loss_sac_and_bc_forms():
    ent_alpha = torch.tensor([0.3, 1.7], dtype=DT, requires_grad=True)
    lp = _randn(K, B, seed=50)
    qmin = _randn(K, B, seed=51, scale=4.0)
    bc_lp = _randn(K, B, seed=52)
    sac = losses.actor_loss(entropy_alpha=ent_alpha, log_prob=lp, objective=qmin)
    bc = losses.actor_loss(entropy_alpha=ent_alpha, log_prob=lp, objective=bc_lp)
    assert sac.shape == (K,) and bc.shape == (K,)
    for k in range(K):
        a = ent_alpha[k].item()
        s_exp = sum(a * lp[k, b].item() - qmin[k, b].item() for b in range(B)) / B
        b_exp = sum(a * lp[k, b].item() - bc_lp[k, b].item() for b in range(B)) / B
        assert sac[k].item() == pytest.approx(s_exp, rel=1e-12)
        assert bc[k].item() == pytest.approx(b_exp, rel=1e-12)
    # The entropy temperature is treated as a constant by the actor loss.
    assert not sac.requires_grad


@pytest.mark.parametrize("log_prob_value, direction", [(2.5, +1), (-3.0, -1)])
def test_entropy_alpha_step_direction(log_prob_value, direction):
    """loss = −log α·(log π + target).detach(), target −|A| = −2.

    log π = 2.5: log π + target = +0.5 > 0, i.e. the entropy (−2.5) is below the target
    (−2), so a gradient step must RAISE log α. log π = −3: the sum is −5 < 0, the entropy
    (3) is above the target, so log α must fall.
    """
    target_entropy = -2.0
    log_prob = torch.full((K, B), log_prob_value, dtype=DT)
    assert ((log_prob + target_entropy) * direction > 0).all()
    log_alpha = torch.nn.Parameter(torch.zeros(K, dtype=DT))
    opt = torch.optim.SGD([log_alpha], lr=0.1)
    loss = losses.entropy_alpha_loss(log_alpha=log_alpha, log_prob=log_prob, target_entropy=target_entropy)
    opt.zero_grad()
    loss.sum().backward()
    opt.step()
    assert (log_alpha.detach() * direction > 0).all()
    torch.testing.assert_close(log_alpha.detach(), torch.full((K,), 0.1 * (log_prob_value + target_entropy), dtype=DT))


def test_entropy_alpha_loss_by_hand_and_detached():
    log_alpha = torch.tensor([0.4, -0.9], dtype=DT, requires_grad=True)
    lp = _randn(K, B, seed=60).requires_grad_(True)
    target = -float(A)
    loss = losses.entropy_alpha_loss(log_alpha=log_alpha, log_prob=lp, target_entropy=target)
    for k in range(K):
        expected = -sum(log_alpha[k].item() * (lp[k, b].item() + target) for b in range(B)) / B
        assert loss[k].item() == pytest.approx(expected, rel=1e-12)
    g_la, g_lp = torch.autograd.grad(loss.sum(), [log_alpha, lp], allow_unused=True)
    torch.testing.assert_close(g_la, -(lp.detach() + target).mean(-1))
    assert g_lp is None or (g_lp == 0).all()


def test_entropy_alpha_loss_alpha_form_by_hand_and_its_adam_steps():
    """form=alpha (d3rlpy): −mean(α·(log π + target)); its gradient on log α is α times the log form's.

    Adam takes the same first step for both (±lr); once α falls, the alpha form's gradients shrink with
    it and its steps fall behind the log form's: why d3rlpy's temperature decays more slowly than ours."""
    log_alpha = torch.tensor([0.4, -0.9], dtype=DT, requires_grad=True)
    lp = _randn(K, B, seed=61)
    target = -float(A)
    loss = losses.entropy_alpha_loss(log_alpha=log_alpha, log_prob=lp, target_entropy=target, form="alpha")
    for k in range(K):
        expected = -sum(math.exp(log_alpha[k].item()) * (lp[k, b].item() + target) for b in range(B)) / B
        assert loss[k].item() == pytest.approx(expected, rel=1e-12)
    (g_alpha,) = torch.autograd.grad(loss.sum(), [log_alpha])
    torch.testing.assert_close(g_alpha, -log_alpha.detach().exp() * (lp + target).mean(-1))

    # A constant entropy surplus (log π + target < 0), as on our hopper-medium: both forms lower log α, the
    # log form by exactly lr per step; the alpha form's gradient shrinks with α while Adam's second moment
    # remembers the larger ones, so after the first step it moves less.
    def run(form: str) -> list[float]:
        la = torch.nn.Parameter(torch.zeros(1, dtype=DT))
        opt = torch.optim.Adam([la], lr=1e-2)
        path = []
        for _ in range(200):
            opt.zero_grad()
            losses.entropy_alpha_loss(
                log_alpha=la, log_prob=torch.full((1, 4), -1.0, dtype=DT), target_entropy=-0.5, form=form
            ).sum().backward()
            opt.step()
            path.append(la.item())
        return path

    log_path, alpha_path = run("log"), run("alpha")
    assert log_path[0] == pytest.approx(alpha_path[0], rel=1e-9) == pytest.approx(-1e-2, rel=1e-6)
    assert log_path[-1] == pytest.approx(-2.0, rel=1e-6)  # a constant gradient: exactly lr per step
    assert log_path[-1] < alpha_path[-1] < 0
