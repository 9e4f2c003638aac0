"""Refuse sizes that cannot fit, before any network or buffer is built.

A batch larger than the dataset, or a ``cql.n_actions`` whose critic pass needs terabytes,
used to fail 10-30 s in with an allocator traceback. The estimate below is a lower bound on
what one update step holds at its peak, so it refuses only what certainly cannot run:

- the conservative critic pass sees ``batch × (1 + 3N)`` rows (the dataset action and N
  uniform, π(s) and π(s′) proposals), each through every critic of every seed; the layer
  inputs and outputs stay alive for the backward pass, and the backward pass holds one
  gradient of the same size;
- the target pass sees ``batch × N`` rows with ``cql.max_backup`` (else ``batch``), without
  gradients;
- the proposal noise is ``3 × N × batch × |A|`` floats per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cql_runner.config import ConfigError

FLOAT_BYTES = 4
GIB = 1024**3


def update_step_bytes(
    *,
    batch_size: int,
    n_actions: int,
    obs_dim: int,
    act_dim: int,
    critic_hidden: Sequence[int],
    n_critics: int,
    n_seeds: int,
    conservative: bool,
    max_backup: bool,
) -> int:
    """A lower bound on the bytes one update step needs at its peak (see the module doc)."""
    widths = obs_dim + act_dim + sum(critic_hidden) + 1
    rows = batch_size * (1 + 3 * n_actions) if conservative else batch_size
    # Saved activations, plus one gradient of the same size during backward.
    critic = 2 * rows * widths * n_critics
    target_rows = batch_size * (n_actions if max_backup else 1)
    target = target_rows * widths * n_critics
    noise = 3 * n_actions * batch_size * act_dim
    return (critic + target + noise) * n_seeds * FLOAT_BYTES


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the allocator's view; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch(batch_size: int, dataset_size: int) -> None:
    """ConfigError naming both sizes when a batch would hold more rows than the dataset has."""
    if batch_size > dataset_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is larger than the dataset ({dataset_size} "
            f"transitions); pass train.batch_size={min(256, dataset_size)} or another value "
            f"<= {dataset_size}"
        )


def check_sizes(
    *,
    batch_size: int,
    dataset_size: int,
    n_actions: int,
    obs_dim: int,
    act_dim: int,
    critic_hidden: Sequence[int],
    n_critics: int,
    n_seeds: int,
    conservative: bool,
    max_backup: bool,
    device: torch.device,
) -> None:
    """ConfigError naming the sizes when the batch exceeds the data or the step exceeds the memory."""
    check_batch(batch_size, dataset_size)
    need = update_step_bytes(
        batch_size=batch_size,
        n_actions=n_actions,
        obs_dim=obs_dim,
        act_dim=act_dim,
        critic_hidden=critic_hidden,
        n_critics=n_critics,
        n_seeds=n_seeds,
        conservative=conservative,
        max_backup=max_backup,
    )
    have = available_bytes(device)
    if have is None or need <= have:
        return
    rows = (
        f"train.batch_size={batch_size} × (1 + 3 × cql.n_actions={n_actions})"
        if conservative
        else f"train.batch_size={batch_size}"
    )
    seeds = f" × {n_seeds} seeds" if n_seeds > 1 else ""
    raise ConfigError(
        f"one update step needs at least {need / GIB:.1f} GiB ({rows} rows through {n_critics} "
        f"critics of {list(critic_hidden)}{seeds}), but {device.type} has {have / GIB:.1f} GiB "
        "free; lower cql.n_actions or train.batch_size"
    )
