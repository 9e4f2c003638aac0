"""Errors raised while loading offline data.

Every message is one line that names the fix, because it is what a user sees at the bottom
of a failed run (and in a sweep's log, where a multi-line traceback is easy to miss).
"""

from __future__ import annotations


class DatasetError(RuntimeError):
    """The dataset cannot be used as configured; the message says what to do."""


class DatasetNotFoundError(DatasetError):
    """The dataset is not on this machine (or a file path does not exist)."""


class DatasetCorruptError(DatasetError):
    """The dataset files exist but cannot be read (truncated, garbage, missing keys)."""


class DatasetCacheWarning(UserWarning):
    """The flat-array cache could not be read or written; loading goes on without it."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A short, single-line summary of an exception, to embed in our own messages."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
