"""Save a figure in each requested format, byte-for-byte the same for the same runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg  # headless: no display needed
from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
# Dates and tool versions left out, so re-running a report on the same runs rewrites identical files.
_NO_DATES = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def parse_formats(text: str) -> list[str]:
    """``"png,svg"`` -> ["png", "svg"]; raises ValueError naming the accepted formats."""
    formats = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--format {text!r}: use a comma-separated list of {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def save_figure(fig: Figure, path: Path, formats: Sequence[str] = ("png",), tight: bool = False) -> list[Path]:
    """Write ``path`` with each format's suffix; returns the files written."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    if not tight:
        fig.tight_layout()
    written = []
    # A fixed salt makes SVG element ids stable instead of random per save.
    with matplotlib.rc_context({"svg.hashsalt": "cql-report"}):
        for fmt in formats:
            target = path.with_suffix(f".{fmt}")
            fig.savefig(target, dpi=110, metadata=_NO_DATES[fmt], bbox_inches="tight" if tight else None)
            written.append(target)
    return written
