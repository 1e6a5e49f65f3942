"""The scratch PostgreSQL database of VITRINE_TEST_POSTGRES_URL, shared by the xdist workers."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def postgres_database_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The scratch database of VITRINE_TEST_POSTGRES_URL is one: held while a module uses it, so that
    pytest-xdist workers (``make test`` runs two) never empty it under each other."""
    # The parent of a worker's base temp folder is shared by all workers of the run.
    path = tmp_path_factory.getbasetemp().parent / "postgres.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
