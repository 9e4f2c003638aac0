"""The three test levels, as pytest markers: ``math``, ``component`` and ``cli``.

- ``math``: the pure loss functions and the update's arithmetic against brute-force re-derivations.
- ``component``: one part of the runner (data, networks, agent, logging, checkpoints ...) in process.
- ``cli``: a real console script or script in a subprocess, as a user runs it.

``make test-fast`` runs ``-m "(math or component) and not slow"``. A test's level is, in order:
a level marker on the test itself; its name in ``LEVEL_BY_TEST`` (by name, so it survives moves between
files); its file in ``LEVEL_BY_FILE``; else ``cli`` when its own source starts a subprocess or a console
script, ``component`` otherwise.
"""

from __future__ import annotations

import inspect

import pytest

LEVELS = ("math", "component", "cli")

LEVEL_BY_FILE = {
    "test_losses.py": "math",
    "test_discrete_losses.py": "math",
    "test_conversions.py": "math",  # each peer's CQL loss re-derived from its equations
    "test_cli_train.py": "cli",
    "test_resume.py": "cli",
    "test_sweeps.py": "cli",
    "test_packaging.py": "cli",
    "test_bench_memory.py": "cli",
    # The failure campaign is about what a user sees from cql-train (one line, exit status, files intact),
    # including the cases it drives in process (signals, a full disk).
    "test_failure_behaviour.py": "cli",
}

# Tests whose level differs from their file's, or that the source rule below would not see.
LEVEL_BY_TEST = {
    # The agent's update against hand-derived or plain-loop references.
    "test_compute_losses_matches_manual_derivation": "math",
    "test_target_critic_moves_by_exactly_the_polyak_rate": "math",
    "test_fused_adam_step_equals_plain_adam_per_group": "math",
    "test_actor_gradient_matches_manual_reparameterised_loss": "math",
    "test_critic_grads_of_total_equal_critic_loss_alone": "math",
    # The evidence suite's value-check arithmetic.
    "test_discounted_return_of_a_known_sequence": "math",
    "test_reward_transform_matches_training_units": "math",
    # The Cal-QL bound and returns-to-go against brute-force loops.
    "test_bound_matches_a_brute_force_loop": "math",
    "test_bound_passes_gradient_only_where_q_is_above_the_return_to_go": "math",
    "test_returns_to_go_against_brute_force": "math",
    "test_sparse_episode_that_never_reaches_the_goal_gets_r_neg_over_one_minus_gamma": "math",
    # Runs in process, next to tests that start scripts.
    "test_a_failing_optional_row_is_dropped_with_a_note": "component",
}

# Calls in a test's own source that mean it runs the program as a user would.
CLI_CALLS = ("run_cli(", "_cli(", "_suite(", "subprocess.")


def level_of(item: pytest.Item) -> str:
    for name in LEVELS:
        if item.get_closest_marker(name) is not None:
            return name
    test_name = getattr(item, "originalname", item.name)
    if test_name in LEVEL_BY_TEST:
        return LEVEL_BY_TEST[test_name]
    if item.path.name in LEVEL_BY_FILE:
        return LEVEL_BY_FILE[item.path.name]
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        source = ""
    return "cli" if any(call in source for call in CLI_CALLS) else "component"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        level = level_of(item)
        if item.get_closest_marker(level) is None:
            item.add_marker(getattr(pytest.mark, level))
