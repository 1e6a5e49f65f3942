"""Every write goes through the catalog's one writer (``CatalogWriter.commit`` / ``remove``): the API's
PUT, PATCH and DELETE, ``indexer add``, ``indexer import`` and ``indexer reembed``. And the read-only
routes stay read-only: /metrics and /info never change the index."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devtools.random_model import write_random_model
from search.catalog.store import Catalog
from search.catalog.writer import CatalogWriter
from tests.support.images import b64, encode_png, patterned_image
from tests.support.indexer import run_indexer_in_process, summary_of
from tests.support.settings import indexer_settings


@pytest.fixture
def writes(monkeypatch) -> Counter:
    """Counts the writer's commits and removals, and every store write made outside them (must be 0)."""
    counts: Counter = Counter()
    inside = [0]

    def counted(name, original):
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            inside[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                inside[0] -= 1

        return wrapper

    def store_write(name, original):
        def wrapper(self, *args, **kwargs):
            if not inside[0]:
                counts["outside the writer: " + name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(CatalogWriter, "commit", counted("commit", CatalogWriter.commit))
    monkeypatch.setattr(CatalogWriter, "remove", counted("remove", CatalogWriter.remove))
    monkeypatch.setattr(Catalog, "upsert_reporting", store_write("upsert", Catalog.upsert_reporting))
    monkeypatch.setattr(Catalog, "remove", store_write("remove", Catalog.remove))
    return counts


def test_indexer_import_writes_through_the_writer(indexer_cli, tmp_path, writes):
    vectors = [[1.0 if i == j else 0.0 for i in range(32)] for j in range(3)]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "embedding": vectors}), tmp_path / "v.parquet")
    result = indexer_cli(
        tmp_path / "data", "import", tmp_path / "v.parquet", "--batch-size", "2", "--no-progress"
    )
    assert result.returncode == 0, summary_of(result)
    assert writes["commit"] == 2 and not [key for key in writes if key.startswith("outside")], writes


def test_indexer_add_and_reembed_write_through_the_writer(catalog_copy, tmp_path, writes, tmp_path_factory):
    other = write_random_model("tiny", tmp_path_factory.mktemp("other") / "tiny-seed-2", seed=2)
    result = run_indexer_in_process(
        indexer_settings(other, catalog_copy.data_dir), "reembed", "--no-progress"
    )
    assert result.returncode == 0, summary_of(result)
    assert writes["commit"] >= 1 and not [key for key in writes if key.startswith("outside")], writes


def test_api_put_patch_and_delete_write_through_the_writer(server, writes):
    image = b64(encode_png(patterned_image(801)))
    assert server.client.put("/products/w1", json={"image": image}).status_code == 201
    assert server.client.patch("/products/w1", json={"title": "t"}).status_code == 200
    assert server.client.delete("/products/w1").status_code == 200
    assert (writes["commit"], writes["remove"]) == (2, 1)
    assert not [key for key in writes if key.startswith("outside")], writes


def test_metrics_and_info_never_change_the_index(catalog_copy, server, tmp_path):
    """A write by another process moves the database's revision; only a search brings the index up."""

    def index_revision() -> int:
        return server.client.get("/ready").json()["index"]["revision"]

    before = index_revision()
    other_process = Catalog.open(f"sqlite:///{catalog_copy.data_dir / 'vitrine.db'}")
    try:
        other_process.remove([catalog_copy.ids[0]])
    finally:
        other_process.close()
    for _ in range(3):
        assert server.client.get("/metrics").status_code == 200
        assert server.client.get("/info").status_code == 200
    assert index_revision() == before
    assert server.client.post("/search", json={"text": "tile", "mode": "vector"}).status_code == 200
    assert index_revision() == before + 1
