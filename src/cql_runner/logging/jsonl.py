"""The local metrics log: one JSON object per line, flushed as it is written.

Each line is ``{"step": <int>, "<metric>": <value>, ...}``. Values are JSON numbers,
except non-finite floats: JSON has no NaN or infinity, so they are written as the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the spellings Python's own json
module uses). That keeps every line valid JSON and still tells a NaN loss from an
exploding one; :func:`read_jsonl` turns those strings back into floats.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("cql_runner")

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def to_json_value(key: str, value: Any) -> Any:
    """A metric value as a JSON-ready scalar; numpy and torch scalars become Python ones."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if hasattr(value, "item"):  # numpy and torch scalars (and one-element arrays)
        try:
            return to_json_value(key, value.item())
        except (ValueError, RuntimeError) as exc:
            raise TypeError(
                f"metric {key!r} is not a scalar (shape {getattr(value, 'shape', '?')}); reduce it before logging"
            ) from exc
    try:
        return _encode_float(float(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric {key!r} has a non-numeric value of type {type(value).__name__}") from exc


def _decode(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def _parse_lines(path: Path, text: str, strict: bool) -> list[dict[str, Any]]:
    """Parse JSONL text. An unterminated or unparsable *last* line is a crash mid-write
    and is dropped; a bad line elsewhere is real corruption: raise if ``strict``, else
    warn and drop it."""
    lines = text.split("\n")
    # A file written to completion ends with "\n", so its last split piece is "".
    # A non-empty last piece is a line the writer never finished.
    complete, tail = lines[:-1], lines[-1]
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if lineno == len(complete) and not tail:
                # Complete but garbled final line: still the crash-mid-write case
                # (e.g. a torn page filled with zeros).
                break
            if strict:
                raise ValueError(f"{path}:{lineno}: invalid JSONL line ({exc})") from exc
            log.warning("%s:%d: dropping an invalid line (%s)", path, lineno, exc)
            continue
        records.append(record)
    return records


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records in a metrics file, skipping a truncated last line.

    Non-finite floats come back as floats. A corrupt line other than the last raises
    ValueError naming the line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    return [_decode(r) for r in _parse_lines(path, text, strict=True)]


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keep(record: Mapping[str, Any], resume_step: int | None) -> bool:
    if resume_step is None:
        return True
    step = record.get("step")
    # Records without a numeric step are not ours to judge; keep them.
    return not isinstance(step, (int, float)) or step <= resume_step


class JsonlLogger:
    """Appends ``{"step": step, **metrics}`` per :meth:`log` call, flushing every line.

    ``resume_step=k`` marks a resumed run: on open the file is rewritten (atomically)
    keeping only records with step <= k, so steps logged after the checkpoint by the
    crashed attempt are not duplicated. A truncated last line is always dropped on open,
    otherwise the next append would be glued onto it.
    """

    # The local log is the record of the run: MultiLogger lets its errors propagate.
    critical = True

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._repair(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _repair(self, resume_step: int | None) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        if resume_step is None and (not text or text.endswith("\n")):
            return  # nothing to drop; skip the rewrite
        if text and not text.endswith("\n"):
            log.warning("%s: dropping a truncated last line (the previous run stopped mid-write)", self.path)
        records = _parse_lines(self.path, text, strict=False)
        kept = [r for r in records if _keep(r, resume_step)]
        dropped = len(records) - len(kept)
        if dropped:
            log.info("%s: dropped %d records after step %s (resumed run)", self.path, dropped, resume_step)
        _atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        record: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            record[key] = to_json_value(key, value)
        # allow_nan=False: a non-finite value that slipped through must fail loudly
        # rather than produce a line other JSON readers reject.
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        # The run writes summary.json itself; the metrics file stays one record per step.
        pass

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
