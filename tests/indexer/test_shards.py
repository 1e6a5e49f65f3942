"""``add|reembed --out DIR``: each commit's products as a Parquet shard, on either engine; ``import DIR``
replays the shards in order into a catalog of its own (here with the local engine: no Ray needed)."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog
from tests.support.indexer import summary_of

Indexer = Callable[..., subprocess.CompletedProcess[str]]


def titles(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        return dict(conn.execute("SELECT external_id, title FROM products"))


def test_shards_of_two_runs_import_to_the_catalog_the_runs_left(
    catalog_copy: IndexedCatalog, indexer_cli: Indexer, tmp_path: Path
) -> None:
    data_dir, shards = tmp_path / "indexed", tmp_path / "shards"
    first = indexer_cli(data_dir, "add", catalog_copy.manifest, "--out", shards, "--no-progress")
    assert first.returncode == 0, summary_of(first)
    rows = catalog_copy.rows
    rows[0]["title"] = "Renamed in the second run"
    with catalog_copy.manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    second = indexer_cli(data_dir, "add", catalog_copy.manifest, "--out", shards, "--json", "--no-progress")
    assert json.loads(second.stdout)["metadata_updated"] == 1, summary_of(second)
    assert len(list(shards.glob("part-*.parquet"))) >= 2

    imported = indexer_cli(tmp_path / "imported", "import", shards, "--json", "--no-progress")
    assert imported.returncode == 0, summary_of(imported)
    assert json.loads(imported.stdout)["failed"] == 0
    assert titles(tmp_path / "imported") == titles(data_dir)
    assert len(titles(data_dir)) == SAMPLE_PRODUCTS
