"""K seeds side by side equal K single-seed runs, and the per-seed checkpoints of cql_runner.seeds
round-trip exactly."""

from __future__ import annotations

import pytest
import torch
from agent_helpers import (
    ACT,
    N_ACT,
    B,
    assert_same_state,
    make_agent,
    make_batch,
    max_diff,
    roundtrip,
    stack_batches,
)

from cql_runner.seeds import load_seed_states, seed_state


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
                assert mm[name][k].item() == pytest.approx(ms[k][name][0].item(), rel=1e-4, abs=1e-5), (step, name, k)
    n = multi.critic.n_critics
    for k, single in enumerate(singles):
        for pm, ps in zip(multi.actor.net.param_list(), single.actor.net.param_list()):
            torch.testing.assert_close(pm[k], ps[0], rtol=1e-5, atol=1e-5)
        for net_m, net_s in (
            (multi.critic.net, single.critic.net),
            (multi.target_critic.net, single.target_critic.net),
        ):
            for pm, ps in zip(net_m.param_list(), net_s.param_list()):
                torch.testing.assert_close(pm[k * n : (k + 1) * n], ps, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(multi.log_alpha[k : k + 1], single.log_alpha, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(multi.log_alpha_prime[k : k + 1], single.log_alpha_prime, rtol=1e-5, atol=1e-6)
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


def test_seed_state_round_trip_continues_exactly():
    """K per-seed checkpoints (seed_state) stacked back (load_seed_states) continue bitwise."""
    cfg = dict(bc_steps=4, lagrange=True, tau=1.0)
    batches = [make_batch(k=2, seed=s) for s in range(5)]
    agent = make_agent(seeds=[0, 1], **cfg)
    for bt in batches[:3]:
        agent.update(bt)
    states = [roundtrip(seed_state(agent, k)) for k in range(2)]
    for bt in batches[3:]:
        agent.update(bt)
    fresh = make_agent(seeds=[0, 1], **cfg)
    load_seed_states(fresh, states)
    assert fresh.num_updates == 3
    for bt in batches[3:]:
        fresh.update(bt)
    assert_same_state(fresh.checkpoint_state(), agent.checkpoint_state(), exact=True)
    with pytest.raises(ValueError, match="seeds"):
        load_seed_states(make_agent(seeds=[1, 0], **cfg), states)


@pytest.mark.parametrize("cfg", [dict(lagrange=True, tau=1.0), dict(lagrange=False, auto_entropy=False)])
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
        assert_same_state(roundtrip(seed_state(multi, k)), single.checkpoint_state(), exact=False, where=f"seed {k}")

    # Stack the single runs' checkpoints into a fresh K-seed agent and continue both ways.
    stacked = make_agent(seeds=[3, 5], **cfg)
    load_seed_states(stacked, [roundtrip(s.checkpoint_state()) for s in singles])
    for step in range(3, 5):
        per_seed = [make_batch(seed=10 * step + k) for k in range(2)]
        stacked.update(stack_batches(per_seed))
        for s, bt in zip(singles, per_seed):
            s.update(bt)
    for k, single in enumerate(singles):
        assert_same_state(seed_state(stacked, k), single.checkpoint_state(), exact=False, where=f"continued seed {k}")


# ----------------------------------------------------------------------------------------
# seeds that start updating at different times (online fine-tuning)
# ----------------------------------------------------------------------------------------
# Seed 3 updates from the start; seed 5 sits out the first two updates, as when its first
# online episode ends later. Fresh agents: the optimizer state is created by the masked step.
SCHEDULE = [[True, False], [True, False], [True, True], [False, True], [True, True]]


@pytest.mark.parametrize("cfg", [dict(lagrange=True, tau=1.0, bc_steps=2), dict(lagrange=False, auto_entropy=False)])
def test_seeds_that_sit_out_updates_equal_single_runs(cfg):
    """update(active=...) leaves a seed that sits out untouched, and each seed's Adam step count
    (hence bias correction), BC switch and generators follow its own updates only."""
    multi = make_agent(seeds=[3, 5], **cfg)
    singles = [make_agent(seeds=[3], **cfg), make_agent(seeds=[5], **cfg)]
    for step, active in enumerate(SCHEDULE):
        per_seed = [make_batch(seed=10 * step + k) for k in range(2)]
        multi.update(stack_batches(per_seed), active)
        for k, single in enumerate(singles):
            if active[k]:
                single.update(per_seed[k])
    assert multi.sat_out == [1, 2]
    for k, single in enumerate(singles):
        own = roundtrip(seed_state(multi, k))
        assert own["num_updates"] == single.num_updates == [4, 3][k]
        assert_same_state(own, single.checkpoint_state(), exact=False, where=f"seed {k}")


def test_a_seed_that_has_not_updated_has_no_optimizer_state_and_stacks_back():
    """Per-seed checkpoints of seeds with different update counts round-trip and continue exactly."""
    cfg = dict(lagrange=True, tau=1.0)
    agent = make_agent(seeds=[0, 1], **cfg)
    batches = [make_batch(k=2, seed=s) for s in range(6)]
    for bt in batches[:2]:
        agent.update(bt, [True, False])
    states = [roundtrip(seed_state(agent, k)) for k in range(2)]
    assert states[1]["optimizer"]["state"] == {} and states[1]["num_updates"] == 0
    assert_same_state(states[1], make_agent(seeds=[1], **cfg).checkpoint_state(), exact=True, where="seed 1")
    for bt, active in zip(batches[2:], [*SCHEDULE[2:], [True, True]]):
        agent.update(bt, active)
    fresh = make_agent(seeds=[0, 1], **cfg)
    load_seed_states(fresh, states)
    assert fresh.sat_out == [0, 2]
    for bt, active in zip(batches[2:], [*SCHEDULE[2:], [True, True]]):
        fresh.update(bt, active)
    assert_same_state(fresh.checkpoint_state(), agent.checkpoint_state(), exact=True)
