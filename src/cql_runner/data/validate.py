"""Checks on loaded data that would otherwise surface hundreds of steps into training.

A NaN or inf in the data does not fail at load: it turns the first losses NaN, and the
run stops at its first log step with advice about learning rates. Checked here instead,
once, naming where the bad values are.
"""

from __future__ import annotations

import numpy as np

from cql_runner.data.errors import DatasetError
from cql_runner.data.types import OfflineData

FIELDS = ("observations", "actions", "rewards", "next_observations")
# Rows checked at a time: the boolean mask of a chunk stays small next to the data.
_CHUNK = 1 << 16


def nonfinite_rows(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(indices of rows holding a NaN or inf, number of such values) of a (T,) or (T, d) array."""
    rows, count = [], 0
    for start in range(0, len(values), _CHUNK):
        bad = ~np.isfinite(values[start : start + _CHUNK])
        count += int(bad.sum())
        if bad.ndim > 1:
            bad = bad.any(axis=tuple(range(1, bad.ndim)))
        rows.append(np.flatnonzero(bad) + start)
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64)), count


def check_finite(data: OfflineData) -> None:
    """Raise DatasetError naming each field, episode and count of NaN/inf values."""
    problems = []
    for name in FIELDS:
        rows, count = nonfinite_rows(getattr(data, name))
        if not count:
            continue
        episodes = np.searchsorted(data.episode_starts, rows, side="right") - 1
        listed = sorted(set(episodes.tolist()))
        shown = ", ".join(str(e) for e in listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
        first = int(rows[0] - data.episode_starts[episodes[0]])
        problems.append(
            f"{name} has {count} NaN/inf value{'s' if count > 1 else ''} in episode"
            f"{'s' if len(listed) > 1 else ''} {shown} (first at step {first} of episode {listed[0]})"
        )
    if problems:
        raise DatasetError(
            f"dataset {data.meta.dataset_id}: {'; '.join(problems)}; repair or drop those episodes before training"
        )
