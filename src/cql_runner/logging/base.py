"""The logger interface and two combinators: a no-op and a failure-isolating fan-out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("cql_runner")


# Every record of the online phase carries this key: the env steps of fine-tuning so far. Records
# share one step axis (train.steps + env steps, as in metrics.jsonl, where cql-report marks the
# switch); the wandb and TensorBoard mirrors plot the online phase against env steps instead.
ONLINE_STEP_METRIC = "online/env_steps"


def online_view(metrics: Mapping[str, float]) -> dict[str, float] | None:
    """An online-phase record with every key in the ``online/`` family (``loss/critic`` becomes
    ``online/loss/critic``), so its curves never share a chart with the offline ones; None for an
    offline record."""
    if ONLINE_STEP_METRIC not in metrics:
        return None
    return {(k if k.startswith("online/") else f"online/{k}"): v for k, v in metrics.items()}


@runtime_checkable
class Logger(Protocol):
    """What the trainer talks to. ``step`` is the gradient-step count."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Accepts and ignores everything; what ``logger=none`` instantiates.

    The constructor takes anything so it can stand in for WandbLogger's signature.
    """

    def __init__(self, cfg: Any = None, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _describe(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


class MultiLogger:
    """Fans every call out to several loggers.

    A failing logger is warned about once and then skipped, so a broken remote mirror
    cannot end a run. A *critical* logger (the local JSONL log) is the exception: its
    errors propagate, because losing the local record silently is worse than stopping.
    A logger is critical if it is listed in ``critical`` or has ``critical = True``.
    """

    def __init__(self, loggers: Iterable[Logger], critical: Iterable[Logger] = ()) -> None:
        self.loggers: list[Logger] = list(loggers)
        critical_ids = {id(lg) for lg in critical}
        self._critical = {
            id(lg) for lg in self.loggers if id(lg) in critical_ids or getattr(lg, "critical", False) is True
        }
        self._failed: set[int] = set()
        # Resolved once so the per-step advance() costs no attribute lookups by name.
        self._advancers = [lg for lg in self.loggers if callable(getattr(lg, "advance", None))]

    def is_critical(self, logger: Logger) -> bool:
        return id(logger) in self._critical

    def _call(self, logger: Logger, method: str, *args: Any) -> None:
        if id(logger) in self._failed:
            return
        try:
            getattr(logger, method)(*args)
        except Exception as exc:
            if id(logger) in self._critical:
                raise
            self._failed.add(id(logger))
            log.warning(
                "logger %s failed in %s() (%s); disabling it, other logs continue",
                type(logger).__name__,
                method,
                _describe(exc),
            )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            self._call(logger, "log", metrics, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            self._call(logger, "log_summary", summary)

    def log_video(self, key: str, path: Path, step: int) -> None:
        """Forward a recorded video file to every logger that takes media (wandb, TensorBoard)."""
        for logger in self.loggers:
            if callable(getattr(logger, "log_video", None)):
                self._call(logger, "log_video", key, path, step)

    def advance(self, step: int) -> None:
        """Forward progress ticks to loggers that show progress (the console bar)."""
        for logger in self._advancers:
            if id(logger) not in self._failed:
                self._call(logger, "advance", step)

    def close(self) -> None:
        # Every logger gets closed, even after an earlier one raised, so that files and
        # remote runs are released; the first critical error is re-raised at the end.
        error: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as exc:
                if id(logger) in self._critical:
                    error = error or exc
                elif id(logger) not in self._failed:
                    self._failed.add(id(logger))
                    log.warning("logger %s failed in close() (%s)", type(logger).__name__, _describe(exc))
        if error is not None:
            raise error
