"""What the Ray engine's tests share (tests/indexer/test_ray_*.py): a manifest slow enough to kill a
job in the middle, and the marks of their files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.catalogs import IndexedCatalog
from tests.support.http import ImageServer

# e2e: a Ray cluster is processes of its own (and most of a minute of CPU): not in the edit loop.
RAY_TESTS = [
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="the ray extra is not installed (pip install -e '.[ray]')",
    ),
    pytest.mark.e2e,
]


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
