"""Ctrl-C (SIGINT) that a batch job never loses.

Python's default handler raises KeyboardInterrupt wherever the main thread is at the time; when that is
inside a weakref callback or a ``__del__`` (garbage collection), the exception is printed as "ignored"
and the job runs on to the end as if never interrupted (seen in the crash-safety test: exit 0 instead
of 130). Here the handler also records the request, and the batch loops check it after every batch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = threading.Event()


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT recorded as well as raised while the block runs (in the main thread; elsewhere as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether Ctrl-C came during the last handled() block: a library that turned the interrupt into
    an error of its own ("initialization failed" while a model loads) still means the run was cut off."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came and its exception was swallowed: call between batches."""
    if _requested.is_set():
        raise KeyboardInterrupt
