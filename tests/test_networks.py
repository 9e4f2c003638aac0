"""Ensemble MLPs: member independence, per-member init, orthogonal init, explicit params."""

from __future__ import annotations

import math

import pytest
import torch

from cql_runner.networks import Actor, Critic, EnsembleMLP


def _init_all(net: EnsembleMLP, seed: int = 0, orthogonal: bool = False) -> EnsembleMLP:
    for m in range(net.members):
        net.init_member(m, torch.Generator().manual_seed(seed + m), orthogonal)
    return net


@pytest.mark.parametrize("layer_norm", [False, True])
def test_member_independence(layer_norm):
    net = _init_all(EnsembleMLP(3, 4, 2, [8, 8], layer_norm=layer_norm))
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    before = net(x).detach().clone()
    with torch.no_grad():
        for p in net.param_list():
            p[1].add_(torch.randn_like(p[1]))
    after = net(x)
    assert torch.equal(after[0], before[0])
    assert torch.equal(after[2], before[2])
    assert (after[1] - before[1]).abs().max() > 1e-3
    # Changing member 1's input does not change the other members' outputs either.
    x2 = x.clone()
    x2[1] += 1.0
    out2 = net(x2)
    assert torch.equal(out2[0], after[0]) and torch.equal(out2[2], after[2])


@pytest.mark.parametrize("orthogonal", [False, True])
def test_init_member_same_generator_seed_gives_identical_members(orthogonal):
    net = EnsembleMLP(3, 4, 2, [8, 6])
    net.init_member(0, torch.Generator().manual_seed(42), orthogonal)
    net.init_member(2, torch.Generator().manual_seed(42), orthogonal)
    net.init_member(1, torch.Generator().manual_seed(43), orthogonal)
    for w in net.weights:
        assert torch.equal(w[0], w[2])
        assert not torch.equal(w[0], w[1])
    for b in net.biases:
        assert torch.equal(b[0], b[2])
    # And the member's init does not depend on how many members the ensemble has.
    single = EnsembleMLP(1, 4, 2, [8, 6])
    single.init_member(0, torch.Generator().manual_seed(42), orthogonal)
    for w_big, w_one in zip(net.param_list(), single.param_list()):
        assert torch.equal(w_big[0], w_one[0])


def test_default_init_matches_linear_bounds():
    net = _init_all(EnsembleMLP(2, 16, 3, [32]))
    for w, b in zip(net.weights, net.biases):
        bound = 1.0 / math.sqrt(w.shape[1])
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert w.abs().max() > 0.5 * bound  # actually spread over the range
        assert b.abs().max() > 0


def test_orthogonal_init_gives_orthogonal_weights():
    # square hidden layer 8×8, a wide input layer 4→8, a tall output layer 8→2
    net = _init_all(EnsembleMLP(2, 4, 2, [8, 8]), orthogonal=True)
    gains = [math.sqrt(2.0), math.sqrt(2.0), 1e-2]
    for w, b, gain in zip(net.weights, net.biases, gains):
        assert (b == 0).all()
        for m in range(2):
            wm = w[m].double()
            fan_in, fan_out = wm.shape
            if fan_in >= fan_out:  # orthonormal columns: W^T W = gain²·I
                torch.testing.assert_close(wm.T @ wm, gain**2 * torch.eye(fan_out, dtype=wm.dtype), atol=1e-5, rtol=0)
            if fan_in <= fan_out:  # orthonormal rows: W W^T = gain²·I
                torch.testing.assert_close(wm @ wm.T, gain**2 * torch.eye(fan_in, dtype=wm.dtype), atol=1e-5, rtol=0)
    assert net.weights[1].shape[1:] == (8, 8)  # the square case was exercised


@pytest.mark.parametrize("layer_norm", [False, True])
def test_forward_with_explicit_params_equals_module_params(layer_norm):
    net = _init_all(EnsembleMLP(2, 4, 3, [8, 8], layer_norm=layer_norm))
    if layer_norm:  # make the LN affine params non-trivial so their order matters
        with torch.no_grad():
            for p in [*net.norm_weights, *net.norm_biases]:
                p.add_(torch.randn_like(p))
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    params = [p.detach().clone() for p in net.param_list()]
    torch.testing.assert_close(net(x, params), net(x), rtol=0, atol=0)
    # Explicit params are actually used: perturbing them changes the output.
    params[0] = params[0] + torch.randn(params[0].shape, generator=torch.Generator().manual_seed(9))
    assert (net(x, params) - net(x)).abs().max() > 1e-3
    # and gradients through detached explicit params do not reach the module.
    out = net(x, [p.detach() for p in net.param_list()]).sum()
    assert not out.requires_grad


def test_forward_matches_per_member_loop():
    net = _init_all(EnsembleMLP(2, 4, 3, [8, 5]))
    x = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(4))
    out = net(x)
    for m in range(2):
        h = x[m]
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = h @ w[m] + b[m]
            if i < net.n_layers - 1:
                h = torch.relu(h)
        torch.testing.assert_close(out[m], h)


def test_layer_norm_path_shape_and_effect():
    plain = _init_all(EnsembleMLP(2, 4, 3, [8, 6]))
    ln = _init_all(EnsembleMLP(2, 4, 3, [8, 6], layer_norm=True))
    assert len(ln.norm_weights) == 2 and len(ln.norm_biases) == 2
    assert ln.norm_weights[0].shape == (2, 1, 8) and ln.norm_weights[1].shape == (2, 1, 6)
    assert len(ln.param_list()) == len(plain.param_list()) + 4
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(5))
    assert (ln(x) - plain(x)).abs().max() > 1e-4  # same weights, LN changes the output
    with torch.no_grad():  # non-trivial affine params, so a mix-up of their order shows
        for p in [*ln.norm_weights, *ln.norm_biases]:
            p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(p.shape[-1])))
    y = ln(x)
    assert y.shape == (2, 5, 3)
    # by hand: LN after each hidden affine, before the ReLU
    h = x[0]
    for i in range(3):
        h = h @ ln.weights[i][0] + ln.biases[i][0]
        if i < 2:
            h = torch.nn.functional.layer_norm(h, h.shape[-1:]) * ln.norm_weights[i][0] + ln.norm_biases[i][0]
            h = torch.relu(h)
    torch.testing.assert_close(y[0], h)


def test_critic_shapes_and_member_layout():
    k, n, m = 2, 3, 5
    critic = Critic(k, n, obs_dim=3, act_dim=2, hidden=[8])
    _init_all(critic.net)
    obs = torch.randn(k, m, 3)
    act = torch.rand(k, m, 2) * 2 - 1
    q = critic(obs, act)
    assert q.shape == (k, n, m)
    # Critic i of agent k is member k·n + i of the ensemble.
    x = torch.cat([obs, act], -1)
    for kk in range(k):
        for i in range(n):
            member = kk * n + i
            h = torch.relu(x[kk] @ critic.net.weights[0][member] + critic.net.biases[0][member])
            h = h @ critic.net.weights[1][member] + critic.net.biases[1][member]
            torch.testing.assert_close(q[kk, i], h[:, 0])


def test_actor_shapes_and_log_std_clamp():
    actor = Actor(2, obs_dim=3, act_dim=2, hidden=[8], log_std_min=-0.1, log_std_max=0.1)
    _init_all(actor.net)
    with torch.no_grad():
        actor.net.biases[-1][:, :, 2:] = torch.tensor([5.0, -5.0])
    mean, log_std = actor(torch.randn(2, 4, 3))
    assert mean.shape == (2, 4, 2) and log_std.shape == (2, 4, 2)
    assert (log_std[..., 0] == 0.1).all() and (log_std[..., 1] == -0.1).all()


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("out_dim", [1, 4])
def test_per_member_path_equals_batched_path_with_gradients(layer_norm, out_dim):
    """The CPU fast path (addmm per member, in-place ReLU, one-column head) against baddbmm."""
    torch.manual_seed(0)
    net = EnsembleMLP(members=3, in_dim=5, out_dim=out_dim, hidden=[16, 8], layer_norm=layer_norm)
    g = torch.Generator().manual_seed(1)
    for j in range(3):
        net.init_member(j, g, orthogonal=False)
    with torch.no_grad():  # layer-norm gains and offsets away from 1 and 0 so their grads matter
        for p in [*net.norm_weights, *net.norm_biases]:
            p.add_(0.3 * torch.randn(p.shape))
    x = torch.randn(3, 7, 5, requires_grad=True)
    grads = {}
    for per_member in (False, True):
        x.grad = None
        net.zero_grad()
        out = net(x, per_member=per_member)
        (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
        grads[per_member] = (out.detach(), x.grad.clone(), [p.grad.clone() for p in net.param_list()])
    (out_b, gx_b, gp_b), (out_m, gx_m, gp_m) = grads[False], grads[True]
    torch.testing.assert_close(out_m, out_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_m, gx_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(gp_m, gp_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_defaults_to_the_per_member_path(monkeypatch):
    net = EnsembleMLP(members=2, in_dim=3, out_dim=1, hidden=[4])
    calls = []
    monkeypatch.setattr(EnsembleMLP, "_member_forward", lambda self, h, p, j: calls.append(j) or h[:, :1])
    net(torch.randn(2, 5, 3))
    assert calls == [0, 1]
