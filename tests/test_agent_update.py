"""One CQLAgent update: metrics, the Polyak step, the fused optimizer against plain Adam, the BC
warm start, entropy tuning, bf16, non-finite inputs and torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
from agent_helpers import (
    ACT,
    B,
    make_agent,
    make_batch,
    max_diff,
    param_groups,
)

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql import losses
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.types import Batch


# ----------------------------------------------------------------------------------------
# update: metrics, parameters, Polyak
# ----------------------------------------------------------------------------------------
def test_update_metrics_finite_and_parameters_change():
    agent = make_agent(seeds=[0, 1])
    before = param_groups(agent)
    metrics = agent.update(make_batch(k=2))
    expected_keys = {
        "loss/critic",
        "loss/td",
        "loss/cql",
        "loss/actor",
        "loss/alpha",
        "loss/alpha_prime",
        "alpha",
        "alpha_prime",
        "cql/gap",
        "cql/ood_logsumexp",
        "q/data",
        "q/policy",
        "q/target",
        "policy/entropy",
    }
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
    cfg = dict(
        lagrange=True,
        tau=1.0,
        policy_lr=1e-3,
        critic_lr=3e-3,
        alpha_lr=2e-3,
        alpha_prime_lr=5e-3,
        target_update_rate=0.1,
        lagrange_form="raw",
        target_action="mean",
        clip_diff_max=2.0,
    )
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
        batch = Batch(
            torch.randn(1, 8, 3, generator=g),
            torch.rand(1, 8, 2, generator=g) * 2 - 1,
            torch.randn(1, 8, generator=g),
            torch.randn(1, 8, 3, generator=g),
            torch.zeros(1, 8),
        )
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
