"""The heap is trimmed once traffic pauses, never while requests run, and not at all when idle."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from api.memory import release_memory_when_idle
from api.settings import ServerSettings
from api.state import ServiceState
from search.heap import glibc_malloc_trim


def test_glibc_trim_is_found_and_callable_here() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None  # these machines run glibc
    trim()


def test_trims_after_traffic_only_when_nothing_is_in_flight() -> None:
    state = ServiceState(ServerSettings())
    calls: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(release_memory_when_idle(state, lambda: calls.append(1), interval=0.01))
        await asyncio.sleep(0.05)
        assert calls == []  # no traffic yet: nothing to give back
        with state.admit():
            with state.admit():
                pass
            await asyncio.sleep(0.05)
            assert calls == []  # a request is still running
        await asyncio.sleep(0.05)
        assert calls == [1]  # traffic ended: one trim
        await asyncio.sleep(0.05)
        assert calls == [1]  # idle since: no more
        task.cancel()

    asyncio.run(scenario())


ARENA_PROBE = """
import ctypes, sys, threading
from search.heap import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(16)
def work():
    barrier.wait()  # all at once: contention is what makes glibc hand out new arenas
    blocks = [libc.malloc(4096) for _ in range(2000)]
    for block in blocks:
        libc.free(block)
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
libc.open_memstream.restype = ctypes.c_void_p
stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buffer.value.decode().count("<heap nr="))
"""


def test_the_server_caps_glibc_heap_arenas() -> None:
    """16 threads allocating at once get many arenas by default and at most 2 with the cap that
    `python -m api` applies at start (VITRINE_MALLOC_ARENAS): a fresh process each, since threads keep
    the arena they already have."""

    def arenas(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", ARENA_PROBE, mode], capture_output=True, text=True, timeout=60, check=True
        )
        return int(done.stdout.strip())

    assert arenas("limit") <= 2
    assert arenas("default") > 2  # the probe does make glibc spread threads over arenas
