"""CQLAgent checkpoints continue exactly, across devices and from older formats."""

from __future__ import annotations

import pytest
import torch
from agent_helpers import (
    B,
    make_agent,
    make_batch,
    param_groups,
    roundtrip,
)


def test_checkpoint_round_trip_continues_exactly():
    cfg = dict(bc_steps=4, lagrange=True, tau=1.0)  # the BC switch falls after the save
    batches = [make_batch(k=2, seed=s) for s in range(5)]
    agent = make_agent(seeds=[0, 1], **cfg)
    for bt in batches[:3]:
        agent.update(bt)
    saved = roundtrip(agent.checkpoint_state())
    for bt in batches[3:]:
        agent.update(bt)

    fresh = make_agent(seeds=[0, 1], **cfg)
    fresh.load_checkpoint_state(saved)
    assert fresh.num_updates == 3
    for bt in batches[3:]:
        fresh.update(bt)
    for group, (xs, ys) in {g: (param_groups(agent)[g], param_groups(fresh)[g]) for g in param_groups(agent)}.items():
        for x, y in zip(xs, ys):
            assert torch.equal(x, y), group
    # The noise streams continue too.
    for x, y in zip(agent.draw_noise(B), fresh.draw_noise(B)):
        assert torch.equal(x, y)


def test_checkpoint_of_a_cuda_graph_run_resumes_on_cpu():
    """A train.cuda_graph run saves capturable Adam groups; a CPU resume must not inherit that."""
    agent = make_agent()
    agent.update(make_batch())
    saved = roundtrip(agent.checkpoint_state())
    for group in saved["optimizer"]["param_groups"]:
        group["capturable"] = True
    fresh = make_agent()
    fresh.load_checkpoint_state(saved)
    assert not any(g["capturable"] for g in fresh.optimizer.param_groups)
    fresh.update(make_batch(seed=1))  # capturable Adam would refuse CPU parameters
    assert fresh.num_updates == 2


def test_checkpoint_rejects_other_seeds():
    state = make_agent(seeds=[0, 1]).checkpoint_state()
    with pytest.raises(ValueError, match="seeds"):
        make_agent(seeds=[0, 2]).load_checkpoint_state(state)


def test_checkpoint_from_before_alpha_prime_lr_resumes():
    """Checkpoints written when α and α′ shared one optimizer group (before cql.alpha_prime_lr) load into
    the two groups of today, with the moments of both temperatures kept."""
    agent = make_agent(lagrange=True)
    agent.update(make_batch())
    saved = roundtrip(agent.checkpoint_state())
    *nets, alpha, alpha_prime = saved["optimizer"]["param_groups"]
    saved["optimizer"]["param_groups"] = [*nets, {**alpha, "params": alpha["params"] + alpha_prime["params"]}]
    fresh = make_agent(lagrange=True)
    fresh.load_checkpoint_state(saved)
    assert len(fresh.optimizer.param_groups) == 4
    for group, want in zip(fresh.optimizer.param_groups[2:], ([fresh.log_alpha], [fresh.log_alpha_prime])):
        assert len(group["params"]) == 1 and group["params"][0] is want[0]
    agent.update(make_batch(seed=1))
    fresh.update(make_batch(seed=1))
    for x, y in zip(agent.parameters(), fresh.parameters()):
        assert torch.equal(x, y)
