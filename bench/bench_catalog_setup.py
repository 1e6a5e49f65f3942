"""The per-call costs this change took out of every server start, command and test (issue 16, the suite's
speed), each against its baseline in the same run:

- a new SQLite catalog: ``migrate()`` (a copy of the schema this process migrated once) against Alembic
  upgrading the same kind of new file from empty; and ``migrate()`` of a file already at head;
- the image fetcher's TLS context: the cached one against ``ssl.create_default_context()`` per loader;
- a catalog upsert of products whose pictures all change: its statements and milliseconds (SQLite, and
  PostgreSQL when ``VITRINE_TEST_POSTGRES_URL`` names a scratch database: ``.ci/with-postgres``). Its
  baseline is the same script run on the commit before the change (a ``git worktree``), so the
  statement counts are the before and after.

    .ci/with-postgres .venv/bin/python bench/bench_catalog_setup.py
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import numpy as np
from _common import median, timed, write_result


def unit(seed: int, dim: int = 64) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def upsert_cost(url: str, products: int, runs: int = 5) -> dict[str, object]:
    from sqlalchemy import event

    from search.catalog import Catalog, ImageWrite, ProductWrite

    def writes(round_: int) -> list[ProductWrite]:
        return [
            ProductWrite(
                f"p{i}",
                f"product {i}",
                "tile",
                {"color": ["red", "blue"][i % 2], "price": i + 0.5},
                images=[
                    ImageWrite(f"https://img.example/{i}-{n}.jpg", embedding=unit(1000 * round_ + 10 * i + n))
                    for n in range(2)
                ],
            )
            for i in range(products)
        ]

    catalog = Catalog.open(url)
    try:
        catalog.upsert(writes(0))  # created; every later round replaces every picture
        statements: list[str] = []
        rounds = iter(range(1, 1000))
        listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
        event.listen(catalog.engine, "before_cursor_execute", listener)
        try:
            catalog.upsert(writes(next(rounds)))
        finally:
            event.remove(catalog.engine, "before_cursor_execute", listener)
        seconds = timed(lambda: catalog.upsert(writes(next(rounds))), runs)
    finally:
        catalog.close()
    return {"products": products, "statements": len(statements), "p50_ms": round(1000 * median(seconds), 1)}


def main() -> None:
    from alembic import command

    from search.catalog import db

    result: dict[str, object] = {"load_average_start": os.getloadavg()}
    root = Path(tempfile.mkdtemp(prefix="bench-catalog-setup."))
    names = iter(range(10_000))
    if hasattr(db, "_copy_new_sqlite_from_template"):  # after the change
        copied = timed(lambda: db.migrate(f"sqlite:///{root / f'c{next(names)}.db'}"), 20)
        result["new_sqlite_catalog_copied_ms"] = round(1000 * median(copied), 1)
    upgraded = timed(
        lambda: command.upgrade(db.alembic_config(f"sqlite:///{root / f'u{next(names)}.db'}"), "head"), 20
    )
    result["new_sqlite_catalog_alembic_ms"] = round(1000 * median(upgraded), 1)
    # What a shortcut for a database already at head could save on every later open (not taken: small).
    existing = f"sqlite:///{root / 'existing.db'}"
    db.migrate(existing)
    result["existing_sqlite_catalog_at_head_ms"] = round(
        1000 * median(timed(lambda: db.migrate(existing), 20)), 1
    )

    from search.images import fetch

    result["tls_context_each_ms"] = round(1000 * median(timed(ssl.create_default_context, 20)), 2)
    if hasattr(fetch, "_tls_context"):
        result["tls_context_cached_ms"] = round(1000 * median(timed(fetch._tls_context, 20)), 4)

    upserts: dict[str, object] = {}
    for products in (30, 300):
        db.migrate(url := f"sqlite:///{root / f'upsert-{products}.db'}")
        upserts[f"sqlite_{products}"] = upsert_cost(url, products)
    postgres = os.environ.get("VITRINE_TEST_POSTGRES_URL")
    if postgres:
        from sqlalchemy import create_engine, text

        for products in (30, 300):
            engine = create_engine(postgres)
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
            db.migrate(postgres)
            upserts[f"postgresql_{products}"] = upsert_cost(postgres, products)
    result["upsert_replacing_every_picture"] = upserts
    result["load_average_end"] = os.getloadavg()
    print(result)
    write_result("catalog_setup", result)


if __name__ == "__main__":
    main()
