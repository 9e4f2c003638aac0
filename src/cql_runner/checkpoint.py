"""Crash-safe checkpoints: atomic writes, the last two kept, corruption detected on load.

File layout: ``torch.save`` of an envelope ``{"format": 1, "step": int, "sha256": str,
"payload": bytes}``, where ``payload`` is ``torch.save(state)`` and the checksum covers
the format, the step and the payload. The envelope holds only plain types, so it is read
with ``weights_only=True``; the payload (which holds numpy arrays and RNG states and so
needs the full unpickler) is unpickled only after its checksum matched — in one place,
:func:`_unpickle_verified`. ``torch.load(path)`` still opens a file for inspection.

A checkpoint dir holds ``last.pt`` and ``prev.pt`` (the one before). A write goes to a
temp file in the same dir, is fsynced, and renamed over ``last.pt`` after the old
``last.pt`` was renamed to ``prev.pt``; a crash at any point leaves at least one valid
checkpoint, which :func:`load_latest` finds.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("cql_runner")

FORMAT = 1
LAST = "last.pt"
PREV = "prev.pt"
_TMP_PREFIX = ".ckpt-"
_TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupt. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def _digest(step: int, payload: bytes) -> str:
    h = hashlib.sha256(f"cql_runner-checkpoint:{FORMAT}:{step}:".encode())
    h.update(payload)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Corrupt last.pt files already reported to the user in this process.
_reported_corrupt: set[Path] = set()


# ----- reading ---------------------------------------------------------------------------
def _read_envelope(path: Path) -> tuple[int, bytes]:
    """(step, payload) of a checkpoint whose checksum matches; CheckpointError otherwise."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        env = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = f"unreadable, truncated or not a checkpoint: {_first_line(exc)}"
        raise CheckpointError(f"checkpoint {path} is corrupt ({reason})") from exc

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is corrupt ({reason})")

    if not isinstance(env, dict) or "payload" not in env:
        raise bad("not a cql_runner checkpoint: no envelope")
    if env.get("format") != FORMAT:
        raise bad(f"unsupported format {env.get('format')!r}, expected {FORMAT}")
    step, payload, digest = env.get("step"), env.get("payload"), env.get("sha256")
    if not isinstance(step, int) or not isinstance(payload, bytes) or not isinstance(digest, str):
        raise bad("malformed envelope")
    if _digest(step, payload) != digest:
        raise bad("checksum mismatch")
    return step, payload


def _unpickle_verified(payload: bytes, map_location: Any) -> dict[str, Any]:
    # The only full (weights_only=False) unpickle in the package, and it only ever sees
    # bytes whose sha256 matched: numpy arrays and RNG states need the full unpickler,
    # and the checksum rules out a damaged file feeding it garbage.
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)


def _read(path: Path, map_location: Any) -> tuple[dict[str, Any], int]:
    step, payload = _read_envelope(path)
    try:
        state = _unpickle_verified(payload, map_location)
    except Exception as exc:
        # The bytes are intact, so this is an environment problem (a library version
        # that cannot read the pickled objects, a map_location device that is absent).
        raise CheckpointError(
            f"checkpoint {path} passed its checksum but cannot be loaded here ({_first_line(exc)})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state, step


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The step a valid checkpoint was saved at, without unpickling its state."""
    return _read_envelope(Path(path))[0]


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved in ``path``; CheckpointError if it is missing, partial or corrupt."""
    return _read(Path(path), map_location)[0]


def load_latest(ckpt_dir: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest valid checkpoint in ``ckpt_dir`` and its path.

    Tries last.pt, then prev.pt. None if neither exists (a fresh run); CheckpointError
    if checkpoints exist but none is valid. Corrupt files are left in place.
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = [p for p in (ckpt_dir / LAST, ckpt_dir / PREV) if p.is_file()]
    if not candidates:
        return None
    failures: list[CheckpointError] = []
    for path in candidates:
        try:
            state, step = _read(path, map_location)
        except CheckpointError as exc:
            failures.append(exc)
            continue
        if failures:
            # One short line: the details (the reader's own error) help nobody decide anything.
            log.warning(
                "checkpoint %s is corrupt; falling back to %s at step %d (the corrupt file is set "
                "aside at the next checkpoint)",
                ckpt_dir / LAST,
                path.name,
                step,
            )
            _reported_corrupt.add(ckpt_dir / LAST)
        if path.name != LAST and not failures:
            # A crash between the two renames of save_checkpoint: prev.pt is the newest.
            log.warning("checkpoint %s is missing; using %s at step %d", ckpt_dir / LAST, path, step)
        return state, path
    reasons = "; ".join(str(exc) for exc in failures)
    raise CheckpointError(
        f"no valid checkpoint in {ckpt_dir} ({reasons}); delete {ckpt_dir} or start a new run dir to train from scratch"
    )


# ----- writing ---------------------------------------------------------------------------
def _remove_stale_tmp(ckpt_dir: Path) -> None:
    # Left by a process killed mid-write; only one process writes a run's checkpoints.
    for tmp in ckpt_dir.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def _rotate(ckpt_dir: Path) -> None:
    """last.pt -> prev.pt, unless last.pt is corrupt: then it is set aside (kept for
    inspection) and the valid prev.pt stays, so two good checkpoints survive."""
    last, prev = ckpt_dir / LAST, ckpt_dir / PREV
    if not last.exists():
        return
    try:
        _read_envelope(last)
    except CheckpointError as exc:
        aside = ckpt_dir / f"last.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.pt"
        # Said once: a corrupt file found when resuming was already reported by load_latest.
        level = logging.DEBUG if last in _reported_corrupt else logging.WARNING
        log.log(level, "%s; moving it to %s and keeping %s", exc, aside.name, prev.name)
        os.replace(last, aside)
        return
    os.replace(last, prev)


def save_checkpoint(ckpt_dir: str | os.PathLike[str], state: dict[str, Any], step: int) -> Path:
    """Write ``state`` to ``ckpt_dir/last.pt`` atomically, keeping the previous one as
    prev.pt. Returns the path written."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(ckpt_dir)

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    envelope = {"format": FORMAT, "step": int(step), "sha256": _digest(int(step), payload), "payload": payload}

    # Serialised in memory first: torch.save straight to a file turns a failed write (a full
    # disk) into an unrelated "unexpected pos" RuntimeError; a plain write keeps the OSError.
    data = io.BytesIO()
    torch.save(envelope, data)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=ckpt_dir)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data.getbuffer())
            os.fsync(f.fileno())
        _rotate(ckpt_dir)
        os.replace(tmp, ckpt_dir / LAST)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(ckpt_dir / LAST, exc) from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(ckpt_dir)
    return ckpt_dir / LAST


def _write_all(f: io.BufferedWriter, data: memoryview) -> None:
    f.write(data)
    f.flush()


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, quota, permissions); the ones before it are intact."""

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = (
            "no space left on device"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else (exc.strerror or str(exc)).lower()
        )
        super().__init__(f"cannot write checkpoint {path}: {reason}; {_resume_hint(path.parent, exc)}")


def _resume_hint(ckpt_dir: Path, exc: OSError) -> str:
    fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
    for name in (LAST, PREV):
        try:
            return f"{fix} and rerun to resume from step {checkpoint_step(ckpt_dir / name)}"
        except CheckpointError:
            continue
    return f"{fix} and rerun (no earlier checkpoint: the run starts over)"
