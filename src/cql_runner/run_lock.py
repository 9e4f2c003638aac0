"""An exclusive lock on a run dir, so two processes never train into the same files.

The same command started twice, or a requeued job next to a straggler, would otherwise
interleave metrics.jsonl and delete each other's checkpoint temp files. The lock is an
``flock`` on ``<run_dir>/run.lock``: the kernel drops it when the process ends, however
it ends (``kill -9`` included), so a stale lock never blocks a resume. The file keeps the
holder's PID for the error message and is left in place (removing it would race with a
process about to lock it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "run.lock"


class RunDirInUseError(RuntimeError):
    """Another live process holds the run dir; the message names it and the fix."""


class RunLock:
    """Context manager: create ``run_dir`` if needed and hold its lock until exit."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise RunDirInUseError(
                f"run dir {self.run_dir} is in use by {who}; wait for it to finish (or stop it), "
                "or pass another run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
