"""What a discrete run needs from the flat data: the action count and a matching config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cql_runner.config import ConfigError
from cql_runner.data.types import OfflineData

if TYPE_CHECKING:
    from .frames import FrameData


def action_count(data: OfflineData | FrameData) -> int | None:
    """|A| of a dataset recorded with a Discrete action space, None for Box actions."""
    n = data.meta.extra.get("n_actions")
    return None if n is None else int(n)


def check_action_space(action_space: str, data: OfflineData | FrameData) -> None:
    """One-line ConfigError when the config's action space does not match the dataset's."""
    n = action_count(data)
    name = data.meta.dataset_id
    if n is not None and action_space != "discrete":
        raise ConfigError(
            f"dataset {name!r} has {n} discrete actions but action_space={action_space}; "
            "pass action_space=discrete network.n_critics=1 (the cartpole-* and acrobot-* "
            "tasks set both)"
        )
    if n is None and action_space == "discrete":
        raise ConfigError(
            f"dataset {name!r} has continuous (Box) actions but action_space=discrete; "
            "drop action_space=discrete to train continuous CQL on it"
        )
