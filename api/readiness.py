"""GET /ready's database check, kept off the probe's path.

A probe that queues behind the requests it is meant to judge reports a slow service as a dead one (and
a load balancer then takes a healthy server out). So the check runs in the background, every second,
on its own thread and a fresh connection (it proves the database can be reached now, not that an old
pooled connection still works, and never waits for a pooled connection that a search holds), and
/ready answers from its latest result at the cost of a dictionary read. A check that fails, or none
that succeeded for ``stale_after`` seconds, makes the service not ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from search.catalog.db import create_db_engine
from search.catalog.store import Catalog

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
CHECK_TIMEOUT_S = 5.0
# For callers: generic; the driver's own message goes to the log.
CANNOT_READ = "the catalog database cannot be read"
NO_ANSWER = "the catalog database did not answer in time"


@dataclass(frozen=True)
class DatabaseCheck:
    """The latest check: the catalog's revision, or why it could not be read."""

    at: float  # time.monotonic() when the check ended
    revision: int | None = None
    error: str | None = None


class DatabaseProbe:
    def __init__(
        self,
        database_url: str,
        interval: float = CHECK_INTERVAL_S,
        timeout: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.catalog = Catalog(create_db_engine(database_url, pooled=False))
        self.interval = interval
        self.timeout = timeout
        self.stale_after = interval + timeout
        self.latest: DatabaseCheck | None = None
        # One thread: a hung database ties up this thread alone; the checks behind it time out.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrine-ready")

    def check_now(self) -> DatabaseCheck:
        """One check on the caller's thread (at start-up, before the first probe can ask)."""
        try:
            return self._record(DatabaseCheck(time.monotonic(), revision=self.catalog.revision()))
        except Exception as exc:
            return self._record(DatabaseCheck(time.monotonic(), error=CANNOT_READ), detail=repr(exc))

    async def check(self) -> DatabaseCheck:
        """Read the catalog's revision on the probe's thread (bounded by ``timeout``); remember it."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                revision = await loop.run_in_executor(self._thread, self.catalog.revision)
            return self._record(DatabaseCheck(time.monotonic(), revision=revision))
        except TimeoutError:
            return self._record(DatabaseCheck(time.monotonic(), error=NO_ANSWER))
        except Exception as exc:
            return self._record(DatabaseCheck(time.monotonic(), error=CANNOT_READ), detail=repr(exc))

    def _record(self, result: DatabaseCheck, detail: str | None = None) -> DatabaseCheck:
        before = self.latest
        if result.error and (before is None or before.error is None):  # log changes, not every second
            log.error("readiness: %s%s", result.error, f": {detail}" if detail else "")
        elif result.error is None and before is not None and before.error is not None:
            log.info("readiness: the catalog database answers again")
        self.latest = result
        return result

    async def run(self) -> None:
        """Forever: one check every ``interval`` seconds."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    def verdict(self) -> DatabaseCheck:
        """The latest check, or a failed one when none succeeded recently (a check that hangs)."""
        latest = self.latest
        if latest is None:
            return DatabaseCheck(time.monotonic(), error="the catalog database has not been checked yet")
        if latest.error is None and time.monotonic() - latest.at > self.stale_after:
            return DatabaseCheck(latest.at, error=NO_ANSWER)
        return latest

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self.catalog.close()
