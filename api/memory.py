"""Give freed heap memory back to the operating system once traffic pauses.

Decoded pictures, pixel tensors and activations are large, short-lived allocations. glibc keeps what
they freed in its per-thread arenas, so without a trim a server's resident memory stays at its busiest
level long after a burst. ``malloc_trim(0)`` returns those free pages; it runs only when no request is
in flight, and only after some request finished since the last trim, so an idle server does no work.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

from api.state import ServiceState

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 5.0


def glibc_malloc_trim() -> Callable[[], None] | None:
    """``malloc_trim(0)`` where the C library is glibc; None elsewhere (musl, macOS)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


async def release_memory_when_idle(
    state: ServiceState, trim: Callable[[], None] | None, interval: float = TRIM_INTERVAL_S
) -> None:
    """Forever: every ``interval`` seconds, trim the heap if traffic came and went since the last look."""
    if trim is None:
        return
    trimmed_at = state.finished
    while True:
        await asyncio.sleep(interval)
        if state.in_flight == 0 and state.finished != trimmed_at:
            trimmed_at = state.finished
            await asyncio.to_thread(trim)
