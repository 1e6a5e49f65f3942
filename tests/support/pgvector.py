"""The throwaway PostgreSQL + pgvector (devtools/pgvector_server.py) as the tests take it: under CI
(``CI=true``) a server that cannot start fails the tests instead of skipping them, so the backend never
goes untested there by accident."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from devtools.pgvector_server import PgvectorUnavailable
from devtools.pgvector_server import pgvector_server as throwaway_server


def unavailable(reason: str) -> None:
    """Skip, or under CI fail: the pgvector tests must run there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"pgvector server unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"pgvector server unavailable: {reason}")


@contextlib.contextmanager
def pgvector_server() -> Iterator[str]:
    """``devtools.pgvector_server.pgvector_server``, skipped (or failed under CI) when it cannot start."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_server())
        except PgvectorUnavailable as exc:
            unavailable(str(exc))
        yield url
