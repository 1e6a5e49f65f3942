"""glibc's heap, tuned and trimmed: the server (api/memory.py, between bursts of requests) and the
export child (between the towers it converts) give freed memory back to the operating system.

glibc keeps freed memory in its arenas: a process that freed a 2 GB graph can still hold most of it.
``malloc_trim(0)`` returns the free pages; capping the arenas (``mallopt``, before threads start)
keeps fewer pages pinned by one live allocation each. Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's heap arenas at ``count`` (0: leave glibc's default). Call before threads start:
    threads that already have an arena keep it. False where the C library is not glibc."""
    if count <= 0:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def glibc_malloc_trim() -> Callable[[], None] | None:
    """``malloc_trim(0)`` where the C library is glibc; None elsewhere (musl, macOS)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def release_freed_memory() -> None:
    """Give glibc's free heap pages back now (nothing where the C library is not glibc)."""
    trim = glibc_malloc_trim()
    if trim is not None:
        trim()
