"""D4RL reference-score registry."""

from __future__ import annotations

import pytest

from cql_runner.reference_scores import d4rl_reference, d4rl_task


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("Hopper-v4", "hopper"),
        ("hopper-medium", "hopper"),
        ("HalfCheetah-v5", "halfcheetah"),
        ("Walker2d-v4", "walker2d"),
        ("Ant-v5", "ant"),
        ("AntMaze_UMaze-v4", "antmaze"),
        ("antmaze-umaze", "antmaze"),
        ("AdroitHandPen-v1", "pen"),
        ("relocate-expert", "relocate"),
        ("FrankaKitchen-v1", "kitchen"),
        ("kitchen-mixed", "kitchen"),
        ("Pendulum-v1", None),
    ],
)
def test_task_family(name: str, task: str | None) -> None:
    assert d4rl_task(name) == task


def test_reference_values_and_unknown_names() -> None:
    assert d4rl_reference("Hopper-v4", "min") == -20.272305
    assert d4rl_reference("hopper", "max") == 3234.3
    assert d4rl_reference("Pendulum-v1", "max") is None
    with pytest.raises(ValueError, match="'min' or 'max'"):
        d4rl_reference("hopper", "mean")
