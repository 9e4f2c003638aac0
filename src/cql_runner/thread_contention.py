"""Warn when torch's default thread count meets CPU cores that other processes already keep busy.

With ``train.threads`` unset torch starts one OpenMP thread per core; when another process already
occupies a core, those threads wait on each other at every parallel region. Measured on a 2-core
Xeon: the default Pendulum run went from 101 to 2.2 steps/s beside one single-threaded training
job, and back to 101 the moment that job was paused.
"""

from __future__ import annotations

import os

# Load average (runnable processes over the last minute) from which at least one core counts as busy.
BUSY_LOAD = 0.75


def contention_warning(*, threads_set: int | None, torch_threads: int, load_1min: float) -> str | None:
    """The one-line warning, or None when the user chose the thread count, torch runs one thread, or
    the machine was idle before this run started."""
    if threads_set is not None or torch_threads <= 1 or load_1min < BUSY_LOAD:
        return None
    return (
        f"train.threads is unset, so torch uses {torch_threads} threads, but about {load_1min:.1f} other "
        f"processes already keep this machine's cores busy: threads that share cores can slow training "
        f"10-45x; set train.threads=1 (or the number of idle cores)"
    )


def current_load() -> float:
    """The 1-minute load average, or 0 where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0
