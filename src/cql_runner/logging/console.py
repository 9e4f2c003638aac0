"""Progress on the console: a tqdm bar on a terminal, plain lines everywhere else.

Plain lines are for CI, SLURM logs and pipes, where a redrawn bar turns into thousands of
carriage-return fragments. One line per :meth:`ConsoleLogger.log` call::

    step 1000/20000 (5.0%) | 123.4 steps/s | eta 2m31s | loss/critic 1.23 | eval/return 45.6

After ``online_from`` (a fine-tuning run's ``train.steps``) the axis counts env steps, and the
rate reads ``env steps/s``: env steps per second, each with its online updates.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

# A short, fixed set so lines stay readable; only the keys present in a call are shown.
DEFAULT_KEYS: tuple[str, ...] = (
    "loss/critic",
    "loss/actor",
    "cql/gap",
    "eval/return",
    "eval/normalized_score",
    "online/return",
)


def format_number(x: Any) -> str:
    """Compact: 4 significant digits, scientific only for very large or small values."""
    try:
        x = float(x.item() if hasattr(x, "item") else x)
    except (TypeError, ValueError, RuntimeError):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.4g}"


def format_duration(seconds: float) -> str:
    """2m31s, 1h02m, 3d04h: the two largest units are enough for an ETA."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # e.g. a closed stream
        return False


class ConsoleLogger:
    """Shows progress and a few key metrics.

    On a terminal: a tqdm bar (steps/s, ETA) moved by :meth:`advance`, with the key metrics
    of the latest :meth:`log` call in its postfix, and a persistent line for each call that
    carries ``eval/`` metrics. Otherwise: one plain line per :meth:`log` call.
    ``enabled=False`` prints nothing at all.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        keys: Sequence[str] = DEFAULT_KEYS,
        online_from: int | None = None,
    ) -> None:
        self.total_steps = int(total_steps)
        self.online_from = online_from
        self.start_step = int(start_step)
        self.enabled = enabled
        self.keys = tuple(keys)
        # Resolved now, not at import, so redirected or captured streams are honoured.
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.step = self.start_step
        self._t0 = time.perf_counter()
        self._last_step = self.start_step
        self._last_time = self._t0
        self._bar: Any = None
        if enabled and _is_tty(self.stream):
            self._bar = self._make_bar()

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.start_step,
            file=self.stream,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5,
            # A slow moving average: eval pauses should not make the ETA jump around.
            smoothing=0.05,
        )

    @property
    def uses_bar(self) -> bool:
        return self._bar is not None

    def advance(self, step: int) -> None:
        """Record that training reached ``step``; cheap enough to call every step."""
        self.step = step
        bar = self._bar
        if bar is not None and step > bar.n:
            bar.update(step - bar.n)

    def _shown(self, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(k, format_number(metrics[k])) for k in self.keys if k in metrics]

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        self.advance(step)
        if self._bar is not None:
            # refresh=False: the bar redraws on its own schedule, keeping log() cheap.
            self._bar.set_postfix(dict(self._shown(metrics)), refresh=False)
            if any(k.startswith("eval/") for k in metrics):
                # Evaluations are rare and worth keeping on screen after the bar moves on.
                self._bar.write(self._format_line(metrics, step), file=self.stream)
            return
        self._print_line(metrics, step)

    def _rates(self, step: int) -> tuple[float, float]:
        """(steps/s since the previous line, seconds left at the average rate so far)."""
        now = time.perf_counter()
        window = now - self._last_time
        rate = (step - self._last_step) / window if window > 0 else math.nan
        elapsed, done = now - self._t0, step - self.start_step
        eta = (self.total_steps - step) * elapsed / done if done > 0 else math.nan
        self._last_step, self._last_time = step, now
        return rate, eta

    def _format_line(self, metrics: Mapping[str, Any], step: int) -> str:
        rate, eta = self._rates(step)
        pct = 100.0 * step / self.total_steps if self.total_steps > 0 else 0.0
        parts = [f"step {step}/{self.total_steps} ({pct:.1f}%)"]
        if math.isfinite(rate):
            online = self.online_from is not None and step > self.online_from
            parts.append(f"{rate:.1f} {'env steps/s' if online else 'steps/s'}")
        parts.append(f"eta {format_duration(eta)}")
        parts.extend(f"{k} {v}" for k, v in self._shown(metrics))
        return " | ".join(parts)

    def _print_line(self, metrics: Mapping[str, Any], step: int) -> None:
        self.stream.write(self._format_line(metrics, step) + "\n")
        self.stream.flush()

    def write(self, message: str) -> None:
        """Print a message without tearing the progress bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        # The run prints and saves its own summary.
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
