"""Database engine and migrations. The schema is created and upgraded by Alembic only."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# Execution option that makes a SQLite transaction take the write lock at BEGIN (BEGIN IMMEDIATE):
# a deferred transaction that reads first and writes later can fail with "database is locked"
# instead of waiting its turn behind another writer.
WRITE_OPTION = "vitrine_write"


def create_db_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL (a reader never blocks the writer) and a busy timeout.

    ``pooled=False`` opens a fresh connection for every use: a health check then proves the database can
    be reached now, and never waits for a pooled connection that request work holds.
    """
    parsed = make_url(url)
    pool = {} if pooled else {"poolclass": NullPool}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=pooled, **pool)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def alembic_config(url: str) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (creating it from empty if needed).

    A SQLite file that does not exist yet starts as a copy of one this process upgraded from empty to
    head once: the same migrations' result, in about 2 ms instead of about 50 ms of DDL and fsyncs
    (a server and its commands create one database each; the test suite creates hundreds)."""
    from alembic import command

    if revision == "head" and _copy_new_sqlite_from_template(url):
        return
    command.upgrade(alembic_config(url), revision)


def _copy_new_sqlite_from_template(url: str) -> bool:
    """Create the SQLite file of ``url`` from the migrated template, if the file does not exist yet.
    False (nothing done) for another database, an in-memory one, a URL with options, or an existing
    file, or one another process created first (then upgraded as any existing file); the copy appears
    whole (written beside, then linked into place) or not at all, so a process racing to create the
    same file finds either nothing or the finished database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query or parsed.database in (None, "", ":memory:"):
        return False
    target = Path(parsed.database)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    # Created by SQLite (the permissions a migrated file would have), under a name of this call's own.
    partial = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        with (
            contextlib.closing(sqlite3.connect(_migrated_template())) as source,
            contextlib.closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)
        os.link(partial, target)  # fails if another process created it meanwhile: theirs stands
    except FileExistsError:
        return False  # Alembic upgrades theirs, as it would any existing file (maybe still empty)
    finally:
        partial.unlink(missing_ok=True)
    return True


@functools.cache
def _migrated_template() -> Path:
    """An empty catalog upgraded to head by Alembic, once per process (removed at exit)."""
    from alembic import command

    folder = Path(tempfile.mkdtemp(prefix="vitrine-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "template.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")
    return path
