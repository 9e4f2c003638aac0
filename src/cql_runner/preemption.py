"""Turn SIGTERM / SIGUSR1 (what SLURM sends before preemption) into a polite stop request.

The trainer polls :attr:`PreemptionFlag.requested` once per step, writes a checkpoint and
returns; the handler itself does nothing that could corrupt state mid-update.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("cql_runner")

PREEMPTION_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None
)


class PreemptionFlag:
    """Context manager installing the handlers in the main thread (a no-op elsewhere)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        log.warning("received %s: writing a checkpoint and stopping after this step", self.signal_name)

    def __enter__(self) -> PreemptionFlag:
        if threading.current_thread() is threading.main_thread():
            for s in PREEMPTION_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
