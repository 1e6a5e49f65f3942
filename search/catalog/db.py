"""Database engine and migrations. The schema is created and upgraded by Alembic only."""

from __future__ import annotations

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
    """Upgrade the database at ``url`` to ``revision`` (creating it from empty if needed)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
