"""Turn preemption signals and Ctrl-C into a polite stop: checkpoint, then let the launcher requeue.

SLURM sends SIGTERM (and, as configured, SIGUSR1) before preempting a job; submitit sends
SIGUSR2 before a time limit. The trainer polls :attr:`PreemptionFlag.requested` once per
step, writes a checkpoint and returns. :meth:`PreemptionFlag.forward` then hands the signal
to whatever handler was installed before (submitit's requeue logic), if any.

Ctrl-C (SIGINT) takes the same path, so an interactive stop loses no steps; the first one
restores the default action, so a second Ctrl-C ends the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("cql_runner")

PREEMPTION_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT") if hasattr(signal, name)
)


class PreemptionFlag:
    """Context manager installing the handlers in the main thread (a no-op elsewhere)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if not self.requested:
            self.requested = True
            self.signum = signum
        again = " (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else ""
        log.warning(
            "received %s: writing a checkpoint and stopping after this step%s", signal.Signals(signum).name, again
        )

    def __enter__(self) -> PreemptionFlag:
        if threading.current_thread() is threading.main_thread():
            for s in PREEMPTION_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            # After a Ctrl-C, a second one must still end the process at once while it closes.
            if not (s == signal.SIGINT and self.signum == signal.SIGINT):
                signal.signal(s, handler)

    def previous_handler(self) -> Callable[[int, FrameType | None], Any] | None:
        """The handler that was installed before ours for the received signal, if it is Python code.

        Python's own Ctrl-C handler is not one to forward to: it would raise KeyboardInterrupt
        after the clean stop."""
        handler = self._previous.get(self.signum) if self.signum is not None else None
        return handler if callable(handler) and handler is not signal.default_int_handler else None

    def forward(self) -> None:
        """Give the received signal to the previous handler (e.g. submitit's checkpoint-and-requeue)."""
        handler = self.previous_handler()
        if handler is not None and self.signum is not None:
            handler(self.signum, None)
