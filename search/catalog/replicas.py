"""Reads from a PostgreSQL streaming standby (VITRINE_DATABASE_READ_URL), writes to the primary.

Searches, listings and the index's catch-up read the standby. A standby lags its primary by the time it
takes to replay the WAL, so a process that has written remembers the primary's WAL position after its
commit (``pg_current_wal_lsn()``) and, before its next read, waits until the standby has replayed that
far (``pg_last_wal_replay_lsn()``): read-your-writes. The wait is bounded (``wait_s``); past it the read
goes to the primary. Once the standby has caught up, reads go there again with no extra query.

The guarantee is per process and covers every read after a write, not only the written product's: a
search's hits and the index's catch-up must come from one state of the catalog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url

_POLL_S = 0.002


def parse_lsn(value: str) -> int:
    """A PostgreSQL WAL position ("16/B374D848") as a number that compares like one."""
    high, low = value.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def safe_url(url: str) -> str:
    """A database URL to show (/info, logs): driver, host, port and database; never the password."""
    parsed = make_url(url)
    shown = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database)
    return shown.render_as_string(hide_password=False)


@dataclass
class ReadStats:
    """What /info and /metrics tell about reads (counted in this process)."""

    standby_reads: int = 0
    fallbacks: int = 0  # reads sent to the primary because the standby had not replayed this process's write
    waits: int = 0  # reads that waited for the standby to replay this process's write
    wait_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class ReadRouting:
    """Chooses the engine of each read; see the module's text."""

    def __init__(self, primary: Engine, standby: Engine, *, wait_s: float = 1.0) -> None:
        self.primary = primary
        self.standby = standby
        self.wait_s = wait_s
        self.stats = ReadStats()
        self._pending: int | None = None  # the WAL position of this process's last write, until replayed
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrote(self) -> None:
        """After a commit on the primary: remember where its WAL is (at or past the commit record)."""
        with self.primary.connect() as connection:
            position = parse_lsn(connection.scalar(text("SELECT pg_current_wal_lsn()::text")))
        with self._lock:
            if self._pending is None or position > self._pending:
                self._pending = position

    @contextmanager
    def on_primary(self) -> Iterator[None]:
        """Reads of this thread inside the block go to the primary (a write's plan reads what it replaces)."""
        previous = getattr(self._local, "primary", False)
        self._local.primary = True
        try:
            yield
        finally:
            self._local.primary = previous

    def engine(self) -> Engine:
        """The engine for the next read of this thread."""
        if getattr(self._local, "primary", False):
            return self.primary
        pending = self._pending
        if pending is None:
            self._count(standby=True)
            return self.standby
        started = time.monotonic()
        while True:
            replayed = self._replayed()
            if replayed is None or replayed >= pending:
                with self._lock:
                    if self._pending is not None and (replayed is None or replayed >= self._pending):
                        self._pending = None
                self._count(standby=True, waited=time.monotonic() - started)
                return self.standby
            if time.monotonic() - started >= self.wait_s:
                self._count(standby=False, waited=time.monotonic() - started)
                return self.primary
            time.sleep(_POLL_S)

    def _replayed(self) -> int | None:
        """The standby's replayed WAL position; None when the read URL is not a standby (no lag)."""
        with self.standby.connect() as connection:
            return replay_position(connection)

    def _count(self, *, standby: bool, waited: float | None = None) -> None:
        with self.stats.lock:
            if standby:
                self.stats.standby_reads += 1
            else:
                self.stats.fallbacks += 1
            if waited is not None:
                self.stats.waits += 1
                self.stats.wait_seconds += waited

    def describe(self) -> dict[str, object]:
        stats = self.stats
        return {
            "reads": "standby",
            "standby": safe_url(self.standby.url.render_as_string(hide_password=False)),
            "read_your_writes_wait_s": self.wait_s,
            "standby_reads": stats.standby_reads,
            "primary_fallback_reads": stats.fallbacks,
            "read_your_writes_waits": stats.waits,
            "read_your_writes_wait_seconds": round(stats.wait_seconds, 6),
        }


def replay_position(connection: Connection) -> int | None:
    value = connection.scalar(text("SELECT pg_last_wal_replay_lsn()::text"))
    return parse_lsn(value) if value else None
