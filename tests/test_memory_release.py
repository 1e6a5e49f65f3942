"""The heap is trimmed once traffic pauses, never while requests run, and not at all when idle."""

from __future__ import annotations

import asyncio

from api.memory import glibc_malloc_trim, release_memory_when_idle
from api.state import ServiceState
from search.settings import Settings


def test_glibc_trim_is_found_and_callable_here() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None  # these machines run glibc
    trim()


def test_trims_after_traffic_only_when_nothing_is_in_flight() -> None:
    state = ServiceState(Settings())
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
