"""Ctrl-C (SIGINT) that a batch job never loses.

Python's default handler raises KeyboardInterrupt wherever the main thread is at the time; when that is
inside a weakref callback or a ``__del__`` (garbage collection), the exception is printed as "ignored"
and the job runs on to the end as if never interrupted (seen in the crash-safety test: exit 0 instead
of 130). Here the handler also records the request, and the batch loops check it after every batch;
and such a swallowed interrupt is not printed as a traceback (``sys.unraisablehook``): it is recorded,
and the run stops at its next check with its one line.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
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
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_interrupts(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    raise KeyboardInterrupt


def _quiet_interrupts(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """An unraisable-exception hook that drops our own KeyboardInterrupt (raised inside a weakref
    callback or ``__del__``, where it cannot propagate) and passes everything else to ``hook``."""

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested.is_set():
            return
        hook(unraisable)

    return quiet


def requested() -> bool:
    """Whether Ctrl-C came during the last handled() block: a library that turned the interrupt into
    an error of its own ("initialization failed" while a model loads) still means the run was cut off."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came and its exception was swallowed: call between batches."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C held back while the block runs, then raised: a batch's transaction and the summary's count
    of it happen both or neither (an interrupt between the two left "0 added" for a committed batch).
    Keep the block short: the model's work goes before it. In other threads, the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: _requested.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    check()
