"""Per-product write serialisation inside one process: writes to one id run one after another.

A fixed set of striped locks (an id hashes to one) bounds memory whatever ids arrive. Across
processes the database serialises writers (every write transaction first bumps the one catalog
revision row) and decides create-or-update inside the transaction, so answers stay truthful there too.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager


class IdLocks:
    def __init__(self, stripes: int = 256) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def stripe(self, external_id: str) -> int:
        return zlib.crc32(external_id.encode("utf-8", "surrogatepass")) % len(self._locks)

    @contextmanager
    def hold(self, external_ids: Iterable[str]) -> Iterator[None]:
        """All the ids' locks, taken in one global order so two writers can never deadlock."""
        with ExitStack() as stack:
            for stripe in sorted({self.stripe(external_id) for external_id in external_ids}):
                stack.enter_context(self._locks[stripe])
            yield
