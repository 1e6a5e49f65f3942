"""What the Ray engine's tests share (tests/indexer/test_ray_*.py): a manifest slow enough to kill a
job in the middle, and how many products a job has committed so far."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.catalogs import IndexedCatalog
from tests.support.http import ImageServer


def product_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM products").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0


def slow_url_manifest(indexed_catalog: IndexedCatalog, image_server: ImageServer, path: Path) -> Path:
    """The sample catalog with each picture behind a URL that answers after 0.1 s: a run lasts long
    enough to be killed in the middle."""
    lines = ["id,image,title,category"]
    for row in indexed_catalog.rows:
        body = (indexed_catalog.manifest.parent / row["image"]).read_bytes()
        url = image_server.add(f"/ray-slow/{row['id']}.png", body, delay=0.1)
        lines.append(f"{row['id']},{url},{row['title']},{row['category']}")
    path.write_text("\n".join(lines) + "\n")
    return path
