"""GET /ready's database check, isolated from request work.

A probe that queues behind the requests it is meant to judge reports a slow service as a dead one (and
a load balancer then takes a healthy server out). So the check has its own thread and opens its own
connection each time: it never waits for a slot in the request thread pool or for a pooled connection
that a search holds, and it proves that the database can be reached now. It only reads the catalog's
revision; bringing the index up to date stays the job of the requests that need it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from search.catalog.store import Catalog
from search.db import create_db_engine

CHECK_TIMEOUT_S = 2.0


class DatabaseProbe:
    def __init__(self, database_url: str, timeout: float = CHECK_TIMEOUT_S) -> None:
        self.catalog = Catalog(create_db_engine(database_url, pooled=False))
        self.timeout = timeout
        # One thread: a hung database ties up this thread alone; later probes time out behind it (503).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrine-ready")

    async def catalog_revision(self) -> int:
        """The database's catalog revision; TimeoutError past ``timeout``, the driver's error on failure."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            return await loop.run_in_executor(self._thread, self.catalog.revision)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self.catalog.close()
