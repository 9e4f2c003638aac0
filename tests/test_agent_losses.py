"""CQLAgent's losses on tiny random data: the whole loss against a by-hand derivation, α′
after the cap, the α = 0 branch, and where each loss's gradient goes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from agent_helpers import (
    ACT,
    B,
    make_agent,
    make_batch,
    tanh_normal_log_prob,
)
from torch.distributions import Normal

from cql_runner.cql import losses
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.types import Batch


# ----------------------------------------------------------------------------------------
# the full loss against an independent derivation
# ----------------------------------------------------------------------------------------
def manual_losses(agent: CQLAgent, batch: Batch, noise, bc: bool) -> dict[str, torch.Tensor]:
    """Re-derive every loss of one step from the spec, one proposal at a time, in float64."""
    c = agent.cql
    with torch.no_grad():
        mean, log_std = agent.actor(batch.obs)
        next_mean, next_log_std = agent.actor(batch.next_obs)
        q_data = agent.critic(batch.obs, batch.actions).double()  # (K, n, B)
        alpha = agent.log_alpha.exp().double()
        alpha_prime = agent.log_alpha_prime.exp().double()

        def draw(m, ls, eps):
            pre = m.double() + ls.double().exp() * eps.double()
            a = torch.tanh(pre)
            return a, tanh_normal_log_prob(m, ls, a)

        pol = [draw(mean, log_std, noise.policy[:, j]) for j in range(c.n_actions)]
        nxt = [draw(next_mean, next_log_std, noise.next_policy[:, j]) for j in range(c.n_actions)]

        def q(obs, a, target=False):
            net = agent.target_critic if target else agent.critic
            return net(obs, a.float()).double()  # (K, n, B)

        # TD target
        if c.target_action == "mean":
            v = q(batch.next_obs, torch.tanh(next_mean.double()), True).min(1).values
        else:
            samples = c.n_actions if c.max_backup else 1
            vals = torch.stack(
                [q(batch.next_obs, nxt[j][0], True).min(1).values for j in range(samples)], 1
            )  # (K, S, B)
            lps = torch.stack([nxt[j][1] for j in range(samples)], 1)
            idx = vals.argmax(1, keepdim=True)
            v, lp = vals.gather(1, idx)[:, 0], lps.gather(1, idx)[:, 0]
            if not c.deterministic_backup:
                v = v - alpha[:, None] * lp
        y = batch.rewards.double() + c.discount * (1 - batch.terminals.double()) * v
        td = 0.5 * ((q_data - y[:, None]) ** 2).mean(-1)  # (K, n)

        # conservative gap: proposals at s, one critic call each
        # Importance sampling divides each proposal by its density; without it they enter as they
        # are, with Q(s, a_data) beside them (the original code's min_q_version 2).
        weigh = c.importance_sampling
        cat = [q_data] if not weigh else []
        for j in range(c.n_actions):
            cat.append(q(batch.obs, noise.uniform[:, j]) + (ACT * math.log(2) if weigh else 0.0))
        for j in range(c.n_actions):
            cat.append(q(batch.obs, pol[j][0]) - (pol[j][1][:, None] if weigh else 0.0))
        for j in range(c.n_actions):
            cat.append(q(batch.obs, nxt[j][0]) - (nxt[j][1][:, None] if weigh else 0.0))
        cat = torch.stack(cat, 0)  # (3N[+1], K, n, B)
        ood = c.temperature * torch.logsumexp(cat / c.temperature, 0)
        gap = (ood - q_data).clamp(c.clip_diff_min, c.clip_diff_max).mean(-1)
        if c.lagrange and c.lagrange_form == "weighted":
            penalty = alpha_prime[:, None] * (c.alpha * gap - c.tau)
            dual = -0.5 * penalty.sum(-1)
        elif c.lagrange:
            penalty = alpha_prime[:, None] * c.alpha * (gap - c.tau)
            dual = -0.5 * penalty.sum(-1)
        else:
            penalty = c.alpha * gap
            dual = torch.zeros_like(alpha)
        critic_loss = (td + penalty).sum(-1)

        a0, lp0 = pol[0]
        q_pi = q(batch.obs, a0).min(1).values
        if bc:
            actor = (alpha[:, None] * lp0 - tanh_normal_log_prob(mean, log_std, batch.actions)).mean(-1)
        else:
            actor = (alpha[:, None] * lp0 - q_pi).mean(-1)
        alpha_loss = -(agent.log_alpha.double()[:, None] * (lp0 + agent.target_entropy)).mean(-1)
        total = (critic_loss + actor + alpha_loss + dual).sum()
    return {
        "total": total,
        "loss/critic": critic_loss,
        "loss/td": td.mean(-1),
        "loss/cql": penalty.mean(-1),
        "loss/actor": actor,
        "loss/alpha": alpha_loss,
        "loss/alpha_prime": dual,
        "cql/gap": gap.mean(-1),
        "cql/ood_logsumexp": ood.mean(-1).mean(-1),
        "q/data": q_data.mean((1, 2)),
        "q/policy": q_pi.mean(-1),
        "q/target": y.mean(-1),
        "policy/entropy": -lp0.mean(-1),
    }


@pytest.mark.parametrize(
    "cfg, bc",
    [
        (dict(lagrange=True, tau=1.0, max_backup=False, deterministic_backup=False), False),
        (dict(lagrange=True, tau=1.0, max_backup=True, deterministic_backup=False, importance_sampling=True), False),
        (dict(lagrange=False, alpha=2.0, max_backup=True, deterministic_backup=True, temperature=0.5), True),
        (dict(lagrange=False, alpha=2.0, temperature=0.5, importance_sampling=True), True),
        # The per-sample differences of this batch lie in [3.16, 3.81] with batch means 3.54-3.57: the
        # clips bind on single samples but (first case) not on the mean, so a batch-mean clip would differ.
        (
            dict(
                lagrange=True,
                lagrange_form="raw",
                alpha=3.0,
                tau=1.0,
                target_action="mean",
                clip_diff_min=3.4,
                clip_diff_max=3.7,
                importance_sampling=True,
            ),
            False,
        ),
        (
            dict(
                lagrange=True, lagrange_form="weighted", alpha=3.0, tau=2.0, clip_diff_max=3.5, importance_sampling=True
            ),
            False,
        ),
    ],
)
def test_compute_losses_matches_manual_derivation(cfg, bc):
    # The BC warm start is on while the update count is below bc_steps (0 updates so far).
    agent = make_agent(seeds=[1, 2], entropy_alpha_init=0.3, alpha_prime_init=0.7, bc_steps=int(bc), **cfg)
    # Move the target critic off the online critic so online/target mix-ups show.
    with torch.no_grad():
        for p in agent.target_critic.net.param_list():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    batch = make_batch(k=2)
    noise = agent.draw_noise(B)
    total, metrics = agent.compute_losses(batch, noise)
    ref = manual_losses(agent, batch, noise, bc)
    assert total.item() == pytest.approx(ref["total"].item(), rel=1e-4, abs=1e-4)
    for name, value in ref.items():
        if name == "total":
            continue
        torch.testing.assert_close(
            metrics[name].double(), value, rtol=1e-4, atol=1e-4, msg=f"metric {name} differs from the derivation"
        )


def test_alpha_prime_comes_back_down_after_reaching_the_cap():
    """Pushed to the 1e6 cap while the gap exceeds τ, α′ falls again once the gap is below τ
    (a clamp on exp(log α′) would have frozen it there)."""
    cap = math.log(losses.ALPHA_PRIME_MAX)
    agent = make_agent(
        lagrange=True,
        lagrange_form="raw",
        tau=0.0,
        alpha_prime_init=0.9e6,
        alpha_prime_max=losses.ALPHA_PRIME_MAX,
        alpha_prime_lr=0.05,
    )
    batch = make_batch()
    for _ in range(5):
        m = agent.update(batch)
        assert agent.log_alpha_prime.item() <= cap + 1e-5  # float32 rounding of log(1e6)
    assert m["cql/gap"].item() > 0  # the gap (≈ 3.5 on a fresh critic) is above τ = 0
    assert agent.log_alpha_prime.item() == pytest.approx(cap)  # at the cap
    agent.cql.tau = 1e3  # now the gap is far below τ
    history = []
    for _ in range(30):
        agent.update(batch)
        history.append(agent.log_alpha_prime.item())
    assert history[-1] < cap - 0.1, "α′ stayed frozen at the cap"
    assert all(b <= a for a, b in itertools.pairwise(history[10:]))  # and keeps falling


def test_conservative_term_off_when_alpha_zero():
    agent = make_agent(alpha=0.0)
    batch = make_batch()
    _, m = agent.compute_losses(batch, agent.draw_noise(B))
    assert m["loss/cql"].abs().max() == 0 and m["cql/gap"].abs().max() == 0
    torch.testing.assert_close(m["q/data"], agent.critic(batch.obs, batch.actions).mean((1, 2)).detach())
    metrics = agent.update(batch)
    assert all(torch.isfinite(v).all() for v in metrics.values())


# ----------------------------------------------------------------------------------------
# gradient routing
# ----------------------------------------------------------------------------------------
def _capture(monkeypatch, name: str, store: dict, replace=None):
    real = getattr(losses, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        if replace is not None:
            out = replace(out)
        store[name] = out
        return out

    monkeypatch.setattr(losses, name, wrapper)


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("bc", [False, True])
def test_actor_loss_gives_no_gradient_to_critic(monkeypatch, bc):
    agent = make_agent(seeds=[0, 1], bc_steps=int(bc))
    store: dict = {}
    _capture(monkeypatch, "actor_loss", store)
    batch, noise = make_batch(k=2), agent.draw_noise(B)
    agent.compute_losses(batch, noise)
    actor_loss = store["actor_loss"].sum()
    critic_params = list(agent.critic.parameters())
    actor_params = list(agent.actor.parameters())
    assert all((g == 0).all() for g in _grads(actor_loss, critic_params))
    assert all(g.abs().sum() > 0 for g in _grads(actor_loss, actor_params))


@pytest.mark.parametrize("bc", [False, True])
def test_actor_gradient_matches_manual_reparameterised_loss(monkeypatch, bc):
    """∇θ of the actor loss equals ∇θ mean(α·log π(ã|s) − [min Q(s,ã) | log π(a|s)]) with
    ã = tanh(μ + σ·ε) reparameterised: both the entropy and the Q (or BC) paths carry
    gradient to the actor."""
    agent = make_agent(seeds=[0, 1], entropy_alpha_init=0.6, bc_steps=int(bc))
    store: dict = {}
    _capture(monkeypatch, "actor_loss", store)
    batch, noise = make_batch(k=2), agent.draw_noise(B)
    agent.compute_losses(batch, noise)
    actor_params = list(agent.actor.parameters())
    got = _grads(store["actor_loss"].sum(), actor_params)

    alpha = agent.log_alpha.exp().detach()[:, None]
    mean, log_std = agent.actor(batch.obs)
    pre = mean + log_std.exp() * noise.policy[:, 0]
    a = torch.tanh(pre)
    lp = (Normal(mean, log_std.exp()).log_prob(pre) - torch.log(1 - a.pow(2))).sum(-1)
    if bc:
        objective = tanh_normal_log_prob(mean, log_std, batch.actions).float()
    else:
        frozen = [p.detach() for p in agent.critic.net.param_list()]
        objective = agent.critic(batch.obs, a, params=frozen).min(1).values
    manual = (alpha * lp - objective).mean(-1).sum()
    want = _grads(manual, actor_params)
    entropy_only = _grads((alpha * lp).mean(-1).sum(), actor_params)
    assert max(g.abs().max().item() for g in entropy_only) > 1e-4  # the entropy path matters
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-5)


def test_critic_grads_of_total_equal_critic_loss_alone(monkeypatch):
    agent = make_agent(seeds=[0, 1], lagrange=True, tau=0.5)
    batch, noise = make_batch(k=2), agent.draw_noise(B)
    critic_params = list(agent.critic.parameters())
    actor_params = list(agent.actor.parameters())

    store: dict = {}
    _capture(monkeypatch, "actor_loss", store)
    total, _ = agent.compute_losses(batch, noise)
    g_total = _grads(total, critic_params)
    g_actor_total = _grads(total, actor_params)
    g_actor_only = _grads(store["actor_loss"].sum(), actor_params)

    # The same step with the actor (and entropy-temperature) terms zeroed.
    monkeypatch.undo()
    _capture(monkeypatch, "actor_loss", {}, replace=lambda out: out * 0)
    _capture(monkeypatch, "entropy_alpha_loss", {}, replace=lambda out: out * 0)
    critic_only, _ = agent.compute_losses(batch, noise)
    g_critic_only = _grads(critic_only, critic_params)
    for a, b in zip(g_total, g_critic_only):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    # ... and the actor's gradient of the total is its actor loss's alone: the critic loss
    # (whose CQL proposals come from the policy) adds nothing to it.
    for a, b in zip(g_actor_total, g_actor_only):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    g_actor_critic_only = _grads(critic_only, actor_params)
    assert all((g == 0).all() for g in g_actor_critic_only)


def test_temperature_losses_touch_only_their_own_variable(monkeypatch):
    agent = make_agent(lagrange=True, tau=0.5)
    store: dict = {}
    _capture(monkeypatch, "entropy_alpha_loss", store)
    _capture(monkeypatch, "cql_penalty", store)
    agent.compute_losses(make_batch(), agent.draw_noise(B))
    net_params = [*agent.actor.parameters(), *agent.critic.parameters()]
    _, dual, _ = store["cql_penalty"]
    for loss, own, other in (
        (store["entropy_alpha_loss"].sum(), agent.log_alpha, agent.log_alpha_prime),
        (dual.sum(), agent.log_alpha_prime, agent.log_alpha),
    ):
        grads = _grads(loss, [own, other, *net_params])
        assert grads[0].abs().sum() > 0
        assert all((g == 0).all() for g in grads[1:])
    # the penalty reaches the critic but not α′ (α′ is detached there)
    penalty = store["cql_penalty"][0].sum()
    g = _grads(penalty, [agent.log_alpha_prime, *agent.actor.parameters()])
    assert all((x == 0).all() for x in g)
    assert any(x.abs().sum() > 0 for x in _grads(penalty, list(agent.critic.parameters())))


def test_alpha_prime_bound_of_one_keeps_alpha_as_the_largest_weight():
    """With cql.alpha_prime_max = 1, a τ the gap cannot reach pins α′ at 1 (CQL with the fixed weight
    alpha, not a penalty growing without bound), and a reachable τ still lowers it."""
    agent = make_agent(lagrange=True, lagrange_form="weighted", tau=0.0, alpha_prime_lr=0.05, alpha_prime_max=1.0)
    batch = make_batch()
    for _ in range(5):
        m = agent.update(batch)
        assert agent.log_alpha_prime.item() == pytest.approx(0.0, abs=1e-7)  # α′ = 1, the bound
    assert m["cql/gap"].item() > 0  # the constraint is violated throughout
    agent.cql.tau = 1e3
    for _ in range(5):
        agent.update(batch)
    assert agent.log_alpha_prime.item() < -0.1  # relaxed below alpha once the gap is under τ
