"""CQLAgent as a whole on tiny random data: the loss matches a by-hand derivation, gradients
go only where they should, every config flag changes the computation, K seeds side by side
equal K single runs, and checkpoints continue exactly."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql import losses
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.types import Batch
from cql_runner.seeds import load_seed_states, seed_state

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
    return Batch(*(torch.cat(parts, dim=0) for parts in zip(*batches)))


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
            vals = torch.stack([q(batch.next_obs, nxt[j][0], True).min(1).values
                                for j in range(samples)], 1)  # (K, S, B)
            lps = torch.stack([nxt[j][1] for j in range(samples)], 1)
            idx = vals.argmax(1, keepdim=True)
            v, lp = vals.gather(1, idx)[:, 0], lps.gather(1, idx)[:, 0]
            if not c.deterministic_backup:
                v = v - alpha[:, None] * lp
        y = batch.rewards.double() + c.discount * (1 - batch.terminals.double()) * v
        td = 0.5 * ((q_data - y[:, None]) ** 2).mean(-1)  # (K, n)

        # conservative gap: proposals at s, one critic call each
        cat = []
        for j in range(c.n_actions):
            cat.append(q(batch.obs, noise.uniform[:, j]) + ACT * math.log(2))
        for j in range(c.n_actions):
            cat.append(q(batch.obs, pol[j][0]) - pol[j][1][:, None])
        for j in range(c.n_actions):
            cat.append(q(batch.obs, nxt[j][0]) - nxt[j][1][:, None])
        cat = torch.stack(cat, 0)  # (3N, K, n, B)
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
    return {"total": total, "loss/critic": critic_loss, "loss/td": td.mean(-1),
            "loss/cql": penalty.mean(-1), "loss/actor": actor, "loss/alpha": alpha_loss,
            "loss/alpha_prime": dual, "cql/gap": gap.mean(-1), "cql/ood_logsumexp": ood.mean(-1).mean(-1),
            "q/data": q_data.mean((1, 2)), "q/policy": q_pi.mean(-1), "q/target": y.mean(-1),
            "policy/entropy": -lp0.mean(-1)}


@pytest.mark.parametrize("cfg, bc", [
    (dict(lagrange=True, tau=1.0, max_backup=False, deterministic_backup=False), False),
    (dict(lagrange=True, tau=1.0, max_backup=True, deterministic_backup=False), False),
    (dict(lagrange=False, alpha=2.0, max_backup=True, deterministic_backup=True,
          temperature=0.5), True),
    # The per-sample differences of this batch lie in [3.16, 3.81] with batch means 3.54-3.57: the
    # clips bind on single samples but (first case) not on the mean, so a batch-mean clip would differ.
    (dict(lagrange=True, lagrange_form="raw", alpha=3.0, tau=1.0, target_action="mean",
          clip_diff_min=3.4, clip_diff_max=3.7), False),
    (dict(lagrange=True, lagrange_form="weighted", alpha=3.0, tau=2.0, clip_diff_max=3.5), False),
])
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
        torch.testing.assert_close(metrics[name].double(), value, rtol=1e-4, atol=1e-4,
                                   msg=f"metric {name} differs from the derivation")


def test_alpha_prime_comes_back_down_after_reaching_the_cap():
    """Pushed to the 1e6 cap while the gap exceeds τ, α′ falls again once the gap is below τ
    (a clamp on exp(log α′) would have frozen it there)."""
    cap = math.log(losses.ALPHA_PRIME_MAX)
    agent = make_agent(lagrange=True, lagrange_form="raw", tau=0.0, alpha_prime_init=0.9e6,
                       alpha_prime_lr=0.05)
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
# update: metrics, parameters, Polyak
# ----------------------------------------------------------------------------------------
def test_update_metrics_finite_and_parameters_change():
    agent = make_agent(seeds=[0, 1])
    before = param_groups(agent)
    metrics = agent.update(make_batch(k=2))
    expected_keys = {"loss/critic", "loss/td", "loss/cql", "loss/actor", "loss/alpha",
                     "loss/alpha_prime", "alpha", "alpha_prime", "cql/gap", "cql/ood_logsumexp",
                     "q/data", "q/policy", "q/target", "policy/entropy"}
    assert expected_keys <= set(metrics)
    for name, value in metrics.items():
        assert value.shape == (2,), name
        assert torch.isfinite(value).all(), name
        assert not value.requires_grad, name
    after = param_groups(agent)
    for group in before:
        for x, y in zip(before[group], after[group]):
            assert (x - y).abs().max() > 0, f"{group} did not change"
    assert agent.num_updates == 1


def test_target_critic_moves_by_exactly_the_polyak_rate():
    rate = 0.05
    agent = make_agent(target_update_rate=rate)
    agent.update(make_batch(seed=1))  # target ≠ online from here on
    old_target = [p.detach().clone() for p in agent.target_critic.net.param_list()]
    old_online = [p.detach().clone() for p in agent.critic.net.param_list()]
    assert max_diff(old_target, old_online) > 0
    agent.update(make_batch(seed=2))
    new_online = agent.critic.net.param_list()
    new_target = agent.target_critic.net.param_list()
    for t_old, o_new, t_new in zip(old_target, new_online, new_target):
        expected = t_old + rate * (o_new.detach() - t_old)
        torch.testing.assert_close(t_new, expected, rtol=0, atol=1e-7)
    # the target is not touched by the optimizer
    assert all(not p.requires_grad for p in agent.target_critic.parameters())


def test_fused_adam_step_equals_plain_adam_per_group():
    """The fast path (one backward of the summed losses, one fused Adam over all groups, Polyak by
    one foreach lerp) against the plain reference: a for-loop Adam per parameter group, each with
    its own learning rate, and a per-tensor Polyak update."""
    cfg = dict(lagrange=True, tau=1.0, policy_lr=1e-3, critic_lr=3e-3, alpha_lr=2e-3, alpha_prime_lr=5e-3,
               target_update_rate=0.1, lagrange_form="raw", target_action="mean", clip_diff_max=2.0)
    fast = make_agent(seeds=[0, 1], **cfg)
    ref = make_agent(seeds=[0, 1], **cfg)
    groups = [list(ref.actor.parameters()), list(ref.critic.parameters()), [ref.log_alpha], [ref.log_alpha_prime]]
    lrs = (cfg["policy_lr"], cfg["critic_lr"], cfg["alpha_lr"], cfg["alpha_prime_lr"])
    plain = [torch.optim.Adam(params, lr=lr, foreach=False, fused=False) for params, lr in zip(groups, lrs)]
    for step in range(4):
        batch = make_batch(k=2, seed=step)
        fast.update(batch)
        total, _ = ref.compute_losses(batch, ref.draw_noise(B))
        for opt in plain:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in plain:
            opt.step()
        with torch.no_grad():
            ref.log_alpha_prime.clamp_(max=math.log(1e6))
            for target, online in zip(ref.target_critic.net.param_list(), ref.critic.net.param_list()):
                target.copy_(target + cfg["target_update_rate"] * (online - target))
    for group, (xs, ys) in {g: (param_groups(fast)[g], param_groups(ref)[g]) for g in param_groups(fast)}.items():
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=group)


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
    for loss, own, other in ((store["entropy_alpha_loss"].sum(), agent.log_alpha, agent.log_alpha_prime),
                             (dual.sum(), agent.log_alpha_prime, agent.log_alpha)):
        grads = _grads(loss, [own, other, *net_params])
        assert grads[0].abs().sum() > 0
        assert all((g == 0).all() for g in grads[1:])
    # the penalty reaches the critic but not α′ (α′ is detached there)
    penalty = store["cql_penalty"][0].sum()
    g = _grads(penalty, [agent.log_alpha_prime, *agent.actor.parameters()])
    assert all((x == 0).all() for x in g)
    assert any(x.abs().sum() > 0 for x in _grads(penalty, list(agent.critic.parameters())))


# ----------------------------------------------------------------------------------------
# every flag changes the computation
# ----------------------------------------------------------------------------------------
# (name, base cql kwargs, changed cql kwargs, base network, changed network, updates,
#  what must differ: a metric name or a parameter group)
FLAG_CASES = [
    ("alpha", {}, {"alpha": 1.0}, {}, {}, 1, "loss/cql"),
    ("lagrange", {}, {"lagrange": False}, {}, {}, 1, "loss/alpha_prime"),
    ("tau", {"lagrange": True}, {"lagrange": True, "tau": 0.0}, {}, {}, 1, "loss/alpha_prime"),
    ("n_actions", {}, {"n_actions": 4}, {}, {}, 1, "cql/ood_logsumexp"),
    ("temperature", {}, {"temperature": 0.5}, {}, {}, 1, "cql/ood_logsumexp"),
    ("importance_sampling", {}, {"importance_sampling": False}, {}, {}, 1, "cql/gap"),
    ("max_backup", {}, {"max_backup": True}, {}, {}, 1, "q/target"),
    ("deterministic_backup", {}, {"deterministic_backup": False}, {}, {}, 1, "q/target"),
    ("bc_steps", {}, {"bc_steps": 1}, {}, {}, 1, "loss/actor"),
    ("clip_diff_min", {}, {"clip_diff_min": 1e3}, {}, {}, 1, "cql/gap"),
    ("clip_diff_max", {}, {"clip_diff_max": -1e3}, {}, {}, 1, "cql/gap"),
    ("discount", {}, {"discount": 0.5}, {}, {}, 1, "q/target"),
    ("target_update_rate", {}, {"target_update_rate": 0.5}, {}, {}, 1, "target_critic"),
    ("policy_lr", {}, {"policy_lr": 1e-2}, {}, {}, 1, "actor"),
    ("critic_lr", {}, {"critic_lr": 1e-2}, {}, {}, 1, "critic"),
    ("alpha_lr", {}, {"alpha_lr": 1e-2}, {}, {}, 1, "log_alpha"),
    ("alpha_prime_lr", {}, {"alpha_prime_lr": 1e-2}, {}, {}, 1, "log_alpha_prime"),
    ("lagrange_form", {}, {"lagrange_form": "raw"}, {}, {}, 1, "loss/cql"),
    ("lagrange_form/dual", {}, {"lagrange_form": "raw"}, {}, {}, 1, "log_alpha_prime"),
    ("target_action", {}, {"target_action": "mean"}, {}, {}, 1, "q/target"),
    ("target_entropy", {"entropy_alpha_init": 0.5},
     {"entropy_alpha_init": 0.5, "target_entropy": 3.0}, {}, {}, 1, "loss/alpha"),
    ("auto_entropy", {}, {"auto_entropy": False}, {}, {}, 1, "log_alpha"),
    ("entropy_alpha_init", {}, {"entropy_alpha_init": 0.25}, {}, {}, 1, "alpha"),
    ("alpha_prime_init", {}, {"alpha_prime_init": 3.0}, {}, {}, 1, "alpha_prime"),
    ("layer_norm", {}, {}, {}, {"layer_norm": True}, 1, "q/data"),
    ("orthogonal_init", {}, {}, {}, {"orthogonal_init": True}, 1, "q/data"),
    ("n_critics", {}, {}, {}, {"n_critics": 3}, 1, "q/data"),
    ("hidden", {}, {}, {}, {"hidden": [16, 12]}, 1, "q/data"),
    ("actor_hidden", {}, {}, {}, {"actor_hidden": [8]}, 1, "policy/entropy"),
    ("critic_hidden", {}, {}, {}, {"critic_hidden": [8]}, 1, "q/data"),
    # log-std of a fresh net is ~0: a max of −1 / a min of 0.5 clamps every output.
    ("log_std_max", {}, {}, {}, {"log_std_max": -1.0}, 1, "policy/entropy"),
    ("log_std_min", {}, {}, {}, {"log_std_min": 0.5}, 1, "policy/entropy"),
]


@pytest.mark.parametrize("case", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_every_flag_changes_the_computation(case):
    _, base_cql, new_cql, base_net, new_net, updates, what = case
    a = make_agent(network=base_net, **base_cql)
    b = make_agent(network=new_net, **new_cql)
    batch = make_batch()
    for _ in range(updates):
        ma, mb = a.update(batch), b.update(batch)
    pa, pb = param_groups(a), param_groups(b)
    if what in pa:
        assert max_diff(pa[what], pb[what]) > 1e-6, f"{what} unchanged"
    else:
        assert (ma[what] - mb[what]).abs().max() > 1e-6, f"metric {what} unchanged"


def test_flag_isolation_learning_rates_touch_only_their_group():
    """A changed lr changes its own group after one step and leaves the others identical."""
    batch = make_batch()
    base = make_agent()
    base.update(batch)
    ref = param_groups(base)
    for flag, group in (("policy_lr", "actor"), ("critic_lr", "critic"),
                        ("alpha_lr", "log_alpha"), ("alpha_prime_lr", "log_alpha_prime")):
        other = make_agent(**{flag: 1e-2})
        other.update(batch)
        got = param_groups(other)
        for name in ref:
            changed = max_diff(ref[name], got[name]) > 0
            expect = name == group or (flag == "critic_lr" and name == "target_critic")
            assert changed == expect, (flag, name)


def test_bc_steps_switch_after_the_warm_start(monkeypatch):
    """bc_steps=2: steps 0 and 1 use the BC actor loss, step 2 the SAC one."""
    seen = []
    real = losses.squashed_gaussian_log_prob
    real_actor = losses.actor_loss

    def spy(**kw):
        out = real_actor(**kw)
        seen.append(kw["objective"])
        return out

    monkeypatch.setattr(losses, "actor_loss", spy)
    agent = make_agent(bc_steps=2)
    batch = make_batch()
    for _ in range(3):
        with torch.no_grad():
            mean, log_std = agent.actor(batch.obs)
            bc = real(mean, log_std, batch.actions)
        agent.update(batch)
        seen.append(bc)
    # Each update recorded (objective, BC log-likelihood at the parameters it used).
    is_bc = [torch.allclose(objective.detach(), bc, atol=1e-6) for objective, bc in zip(seen[::2], seen[1::2])]
    assert is_bc == [True, True, False]


def test_auto_entropy_off_keeps_alpha_fixed():
    agent = make_agent(auto_entropy=False, entropy_alpha_init=0.3)
    for s in range(2):
        m = agent.update(make_batch(seed=s))
    torch.testing.assert_close(agent.log_alpha.detach(), torch.full((1,), math.log(0.3)))
    torch.testing.assert_close(m["alpha"], torch.full((1,), 0.3))
    assert (m["loss/alpha"] == 0).all()


def test_target_entropy_default_is_minus_act_dim():
    assert make_agent().target_entropy == -float(ACT)
    assert make_agent(target_entropy=1.5).target_entropy == 1.5


# ----------------------------------------------------------------------------------------
# seeds side by side
# ----------------------------------------------------------------------------------------
def test_k_seed_agent_equals_single_seed_agents():
    cfg = dict(lagrange=True, tau=1.0, max_backup=True, bc_steps=2)
    multi = make_agent(seeds=[3, 5], **cfg)
    singles = [make_agent(seeds=[3], **cfg), make_agent(seeds=[5], **cfg)]
    # identical initialisation first
    for k, single in enumerate(singles):
        for pm, ps in zip(multi.actor.net.param_list(), single.actor.net.param_list()):
            assert torch.equal(pm[k], ps[0])
    for step in range(5):
        per_seed = [make_batch(seed=10 * step + k) for k in range(2)]
        mm = multi.update(stack_batches(per_seed))
        ms = [s.update(bt) for s, bt in zip(singles, per_seed)]
        for name in mm:
            for k in range(2):
                assert mm[name][k].item() == pytest.approx(ms[k][name][0].item(), rel=1e-4, abs=1e-5), \
                    (step, name, k)
    n = multi.critic.n_critics
    for k, single in enumerate(singles):
        for pm, ps in zip(multi.actor.net.param_list(), single.actor.net.param_list()):
            torch.testing.assert_close(pm[k], ps[0], rtol=1e-5, atol=1e-5)
        for net_m, net_s in ((multi.critic.net, single.critic.net),
                             (multi.target_critic.net, single.target_critic.net)):
            for pm, ps in zip(net_m.param_list(), net_s.param_list()):
                torch.testing.assert_close(pm[k * n:(k + 1) * n], ps, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(multi.log_alpha[k:k + 1], single.log_alpha, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(multi.log_alpha_prime[k:k + 1], single.log_alpha_prime,
                                   rtol=1e-5, atol=1e-6)
    # and the two seeds really are different runs
    assert max_diff([multi.actor.net.weights[0][0]], [multi.actor.net.weights[0][1]]) > 1e-3


def test_noise_streams_are_per_seed():
    multi = make_agent(seeds=[3, 5])
    single = make_agent(seeds=[5])
    nm, ns = multi.draw_noise(B), single.draw_noise(B)
    for a, b in zip(nm, ns):
        assert torch.equal(a[1], b[0])
    assert nm.uniform.min() >= -1 and nm.uniform.max() <= 1
    assert nm.policy.shape == (2, N_ACT, B, ACT)


# ----------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------
def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_checkpoint_round_trip_continues_exactly():
    cfg = dict(bc_steps=4, lagrange=True, tau=1.0)  # the BC switch falls after the save
    batches = [make_batch(k=2, seed=s) for s in range(5)]
    agent = make_agent(seeds=[0, 1], **cfg)
    for bt in batches[:3]:
        agent.update(bt)
    saved = _roundtrip(agent.checkpoint_state())
    for bt in batches[3:]:
        agent.update(bt)

    fresh = make_agent(seeds=[0, 1], **cfg)
    fresh.load_checkpoint_state(saved)
    assert fresh.num_updates == 3
    for bt in batches[3:]:
        fresh.update(bt)
    for group, (xs, ys) in {g: (param_groups(agent)[g], param_groups(fresh)[g])
                            for g in param_groups(agent)}.items():
        for x, y in zip(xs, ys):
            assert torch.equal(x, y), group
    # The noise streams continue too.
    for x, y in zip(agent.draw_noise(B), fresh.draw_noise(B)):
        assert torch.equal(x, y)


def test_checkpoint_of_a_cuda_graph_run_resumes_on_cpu():
    """A train.cuda_graph run saves capturable Adam groups; a CPU resume must not inherit that."""
    agent = make_agent()
    agent.update(make_batch())
    saved = _roundtrip(agent.checkpoint_state())
    for group in saved["optimizer"]["param_groups"]:
        group["capturable"] = True
    fresh = make_agent()
    fresh.load_checkpoint_state(saved)
    assert not any(g["capturable"] for g in fresh.optimizer.param_groups)
    fresh.update(make_batch(seed=1))  # capturable Adam would refuse CPU parameters
    assert fresh.num_updates == 2


def _assert_same_state(x, y, exact: bool, where: str = "") -> None:
    """Recursively compare two checkpoint dicts (tensors exactly or to 1e-5)."""
    if isinstance(x, dict):
        assert set(x) == set(y), where
        for key in x:
            _assert_same_state(x[key], y[key], exact, f"{where}/{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (a, b) in enumerate(zip(x, y)):
            _assert_same_state(a, b, exact, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert x.shape == y.shape and x.dtype == y.dtype, where
        if exact or x.dtype == torch.uint8:
            assert torch.equal(x, y), where
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=where)
    else:
        assert x == y, where


def test_seed_state_round_trip_continues_exactly():
    """K per-seed checkpoints (seed_state) stacked back (load_seed_states) continue bitwise."""
    cfg = dict(bc_steps=4, lagrange=True, tau=1.0)
    batches = [make_batch(k=2, seed=s) for s in range(5)]
    agent = make_agent(seeds=[0, 1], **cfg)
    for bt in batches[:3]:
        agent.update(bt)
    states = [_roundtrip(seed_state(agent, k)) for k in range(2)]
    for bt in batches[3:]:
        agent.update(bt)
    fresh = make_agent(seeds=[0, 1], **cfg)
    load_seed_states(fresh, states)
    assert fresh.num_updates == 3
    for bt in batches[3:]:
        fresh.update(bt)
    _assert_same_state(fresh.checkpoint_state(), agent.checkpoint_state(), exact=True)
    with pytest.raises(ValueError, match="seeds"):
        load_seed_states(make_agent(seeds=[1, 0], **cfg), states)


@pytest.mark.parametrize("cfg", [dict(lagrange=True, tau=1.0),
                                 dict(lagrange=False, auto_entropy=False)])
def test_seed_state_is_a_single_seed_checkpoint(cfg):
    """seed_state(k) of a K-seed run equals the checkpoint of a single run with seed k, and
    single-seed checkpoints stack into a K-seed agent that continues like the single runs."""
    multi = make_agent(seeds=[3, 5], **cfg)
    singles = [make_agent(seeds=[3], **cfg), make_agent(seeds=[5], **cfg)]
    for step in range(3):
        per_seed = [make_batch(seed=10 * step + k) for k in range(2)]
        multi.update(stack_batches(per_seed))
        for s, bt in zip(singles, per_seed):
            s.update(bt)
    for k, single in enumerate(singles):
        _assert_same_state(_roundtrip(seed_state(multi, k)), single.checkpoint_state(), exact=False,
                           where=f"seed {k}")

    # Stack the single runs' checkpoints into a fresh K-seed agent and continue both ways.
    stacked = make_agent(seeds=[3, 5], **cfg)
    load_seed_states(stacked, [_roundtrip(s.checkpoint_state()) for s in singles])
    for step in range(3, 5):
        per_seed = [make_batch(seed=10 * step + k) for k in range(2)]
        stacked.update(stack_batches(per_seed))
        for s, bt in zip(singles, per_seed):
            s.update(bt)
    for k, single in enumerate(singles):
        _assert_same_state(seed_state(stacked, k), single.checkpoint_state(), exact=False,
                           where=f"continued seed {k}")


def test_checkpoint_rejects_other_seeds():
    state = make_agent(seeds=[0, 1]).checkpoint_state()
    with pytest.raises(ValueError, match="seeds"):
        make_agent(seeds=[0, 2]).load_checkpoint_state(state)


# ----------------------------------------------------------------------------------------
# acting
# ----------------------------------------------------------------------------------------
def test_act_shape_range_and_obs_normalisation():
    mean = np.array([10.0, -5.0, 2.0], np.float32)
    std = np.array([2.0, 0.5, 4.0], np.float32)
    agent = CQLAgent(OBS, ACT, [0, 1], NetworkConfig(hidden=HIDDEN), CQLConfig(n_actions=N_ACT),
                     obs_mean=mean, obs_std=std)
    plain = make_agent(seeds=[0, 1])
    obs = np.random.default_rng(0).normal(size=(2, 4, OBS)).astype(np.float32) * std + mean
    act = agent.act(obs)
    assert act.shape == (2, 4, ACT) and act.dtype == np.float32
    assert np.all(np.abs(act) <= 1.0)
    with torch.no_grad():
        m, _ = plain.actor(torch.as_tensor((obs - mean) / std))
    np.testing.assert_allclose(act, torch.tanh(m).numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(plain.act(obs) - act).max() > 1e-3  # normalisation made a difference
    # extreme observations still give actions inside [-1, 1]
    huge = agent.act(np.full((2, 3, OBS), 1e6, np.float32))
    assert np.all(np.abs(huge) <= 1.0) and np.all(np.isfinite(huge))


def test_q_value_is_min_over_critics_of_normalised_obs():
    mean = np.array([1.0, 2.0, 3.0], np.float32)
    std = np.array([2.0, 2.0, 2.0], np.float32)
    agent = CQLAgent(OBS, ACT, [0], NetworkConfig(hidden=HIDDEN), CQLConfig(n_actions=N_ACT),
                     obs_mean=mean, obs_std=std)
    obs = np.random.default_rng(1).normal(size=(1, 5, OBS)).astype(np.float32)
    a = np.random.default_rng(2).uniform(-1, 1, size=(1, 5, ACT)).astype(np.float32)
    q = agent.q_value(obs, a)
    with torch.no_grad():
        ref = agent.critic(torch.as_tensor((obs - mean) / std), torch.as_tensor(a)).min(1).values
    assert q.shape == (1, 5)
    np.testing.assert_allclose(q, ref.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------
# bf16 and failure detection
# ----------------------------------------------------------------------------------------
def test_bf16_losses_close_to_fp32():
    kw = dict(seeds=[0], network={"hidden": [8]}, n_actions=2)
    a32 = make_agent(**kw)
    a16 = make_agent(bf16=True, **kw)
    batch = make_batch(b=4)
    noise = a32.draw_noise(4)
    t32, m32 = a32.compute_losses(batch, noise)
    t16, m16 = a16.compute_losses(batch, noise)
    assert torch.isfinite(t16)
    assert t16.dtype == torch.float32
    assert t16.item() == pytest.approx(t32.item(), rel=0.05, abs=0.05)
    for name in ("loss/critic", "loss/td", "cql/gap", "q/target", "loss/actor", "policy/entropy"):
        assert m16[name].dtype == torch.float32, name
        torch.testing.assert_close(m16[name], m32[name], rtol=0.05, atol=0.05, msg=name)
    # and one bf16 update runs and stays finite
    metrics = a16.update(batch)
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("field", ["obs", "rewards", "next_obs", "actions"])
def test_nan_in_batch_gives_non_finite_metrics(field):
    agent = make_agent()
    batch = make_batch()
    bad = getattr(batch, field).clone()
    bad.view(-1)[0] = float("nan")
    metrics = agent.update(batch._replace(**{field: bad}))
    assert not all(torch.isfinite(v).all() for v in metrics.values())
    assert not torch.isfinite(metrics["loss/critic"]).all()


@pytest.mark.slow
def test_compiled_losses_match_eager(tmp_path, monkeypatch) -> None:
    """train.compile=true runs the same math: compiled and eager updates agree."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    net, cfg = NetworkConfig(hidden=[16, 16]), CQLConfig(n_actions=3)
    eager = CQLAgent(3, 2, [0], net, cfg)
    compiled = CQLAgent(3, 2, [0], net, cfg, compile=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = Batch(torch.randn(1, 8, 3, generator=g), torch.rand(1, 8, 2, generator=g) * 2 - 1,
                      torch.randn(1, 8, generator=g), torch.randn(1, 8, 3, generator=g), torch.zeros(1, 8))
        m_eager, m_compiled = eager.update(batch), compiled.update(batch)
        for key in m_eager:
            torch.testing.assert_close(m_compiled[key], m_eager[key], rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_compile_flag_wraps_the_loss_graph() -> None:
    compiled = CQLAgent(3, 2, [0], NetworkConfig(hidden=[8]), CQLConfig(n_actions=2), compile=True)
    eager = CQLAgent(3, 2, [0], NetworkConfig(hidden=[8]), CQLConfig(n_actions=2))
    assert eager._losses == eager.compute_losses
    assert compiled._losses != compiled.compute_losses
    wrapped = compiled._losses
    assert getattr(wrapped, "_torchdynamo_orig_callable", None) == compiled.compute_losses
