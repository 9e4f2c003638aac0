"""Every config flag of the agent changes the computation (RLlib once ignored `lagrangian=True`)."""

from __future__ import annotations

import pytest
from agent_helpers import (
    make_agent,
    make_batch,
    max_diff,
    param_groups,
)

# (name, base cql kwargs, changed cql kwargs, base network, changed network, updates,
#  what must differ: a metric name or a parameter group)
FLAG_CASES = [
    ("alpha", {}, {"alpha": 1.0}, {}, {}, 1, "loss/cql"),
    ("lagrange", {}, {"lagrange": False}, {}, {}, 1, "loss/alpha_prime"),
    ("tau", {"lagrange": True}, {"lagrange": True, "tau": 0.0}, {}, {}, 1, "loss/alpha_prime"),
    ("n_actions", {}, {"n_actions": 4}, {}, {}, 1, "cql/ood_logsumexp"),
    ("temperature", {}, {"temperature": 0.5}, {}, {}, 1, "cql/ood_logsumexp"),
    ("importance_sampling", {}, {"importance_sampling": True}, {}, {}, 1, "cql/gap"),
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
    (
        "target_entropy",
        {"entropy_alpha_init": 0.5},
        {"entropy_alpha_init": 0.5, "target_entropy": 3.0},
        {},
        {},
        1,
        "loss/alpha",
    ),
    ("auto_entropy", {}, {"auto_entropy": False}, {}, {}, 1, "log_alpha"),
    # Adam's first step is ±lr for either form; the logged loss (log α vs α times the same factor) differs.
    (
        "entropy_alpha_loss",
        {"entropy_alpha_init": 0.5},
        {"entropy_alpha_init": 0.5, "entropy_alpha_loss": "alpha"},
        {},
        {},
        1,
        "loss/alpha",
    ),
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
    for flag, group in (
        ("policy_lr", "actor"),
        ("critic_lr", "critic"),
        ("alpha_lr", "log_alpha"),
        ("alpha_prime_lr", "log_alpha_prime"),
    ):
        other = make_agent(**{flag: 1e-2})
        other.update(batch)
        got = param_groups(other)
        for name in ref:
            changed = max_diff(ref[name], got[name]) > 0
            expect = name == group or (flag == "critic_lr" and name == "target_critic")
            assert changed == expect, (flag, name)
