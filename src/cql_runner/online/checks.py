"""What fine-tuning needs of the config and the data, checked before anything trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cql_runner.config import ConfigError
from cql_runner.data.types import OfflineData

if TYPE_CHECKING:
    from cql_runner.discrete.frames import FrameData

# Cal-QL and CORL draw half of each fine-tuning batch from the offline data.
FINE_TUNING_OFFLINE_RATIO = 0.5


def offline_ratio(cfg: Any) -> float:
    """The offline share of each online batch: ``online.offline_ratio``, or when null 0.5 after
    offline pre-training and 0 for online RL from scratch (train.steps=0)."""
    ratio = cfg.online.offline_ratio
    if ratio is not None:
        return float(ratio)
    return FINE_TUNING_OFFLINE_RATIO if int(cfg.train.steps) > 0 else 0.0


def check_fine_tuning(cfg: Any, data: OfflineData | FrameData) -> None:
    """Raise ConfigError (one line naming the fix) for settings the data cannot support."""
    steps = int(cfg.online.steps)
    action_space = getattr(cfg, "action_space", "continuous")
    if steps > 0 and action_space != "continuous":
        raise ConfigError(
            f"online fine-tuning supports continuous actions only (action_space={action_space}); drop online.steps"
        )
    if steps > 0 and not (cfg.eval.env_id or data.meta.eval_env_id):
        raise ConfigError(
            f"online.steps={steps} needs an env to fine-tune in, but dataset "
            f"{data.meta.dataset_id!r} names none; pass eval.env_id=<Gym id> "
            "(e.g. eval.env_id=Hopper-v5) or drop online.steps"
        )
    if cfg.cql.calibration and not data.meta.extra.get("episode_ends_known", True):
        raise ConfigError(
            f"cql.calibration=true needs returns-to-go per episode, but dataset "
            f"{data.meta.dataset_id!r} has no episode ends (no 'timeouts'); add them to "
            "the file or drop cql.calibration"
        )
