"""The warning for torch's default thread count on cores other processes keep busy."""

from __future__ import annotations

from cql_runner.thread_contention import contention_warning


def test_warns_only_when_the_default_thread_count_meets_busy_cores() -> None:
    line = contention_warning(threads_set=None, torch_threads=2, load_1min=1.1)
    assert line is not None and "\n" not in line and "train.threads=1" in line and "2 threads" in line
    # The user chose a count, torch runs a single thread, or the machine was idle: nothing to say.
    assert contention_warning(threads_set=2, torch_threads=2, load_1min=3.0) is None
    assert contention_warning(threads_set=None, torch_threads=1, load_1min=3.0) is None
    assert contention_warning(threads_set=None, torch_threads=16, load_1min=0.2) is None
