"""Which hyperparameters a Hydra sweep varies, so loggers can put them in the run's config.

A multirun job's own config holds only its chosen values; which keys the sweep varies is in the
sweep's ``multirun.yaml`` (command-line sweeps such as ``cql.tau=1,5``) and in
``hydra.sweeper.params`` (sweeps declared in config, as hparams_search does).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("cql_runner")


def swept_keys() -> list[str]:
    """The config keys the current Hydra multirun varies (seed included); [] outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or getattr(HydraConfig.get().mode, "name", None) != "MULTIRUN":
        return []
    hydra_cfg = HydraConfig.get()
    # HydraConfig.get() is a DictConfig at run time, typed as the HydraConf dataclass.
    keys = [str(k) for k in (OmegaConf.select(cast(DictConfig, hydra_cfg), "sweeper.params") or {})]
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        sweep = OmegaConf.load(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
        task = [str(o) for o in OmegaConf.select(sweep, "hydra.overrides.task") or []]
        keys += [o.key_or_group for o in OverridesParser.create().parse_overrides(task) if o.is_sweep_override()]
    except Exception as exc:  # a sweep dir without multirun.yaml (some launchers) still trains
        log.debug("could not read the sweep's overrides (%s)", exc)
    return sorted(set(keys))


def swept_values(cfg: Any, keys: list[str]) -> dict[str, Any]:
    """``{"cql.tau": 5.0, ...}``: this job's value of each swept key (config groups by their choice)."""
    out: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            from hydra.core.hydra_config import HydraConfig

            value = HydraConfig.get().runtime.choices.get(key, str(value))
        out[key] = value
    return out
