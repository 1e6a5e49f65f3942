"""Crash safety: an indexer killed with SIGKILL loses nothing it committed and resumes to a complete catalog;
a damaged or missing index file is detected and rebuilt from the database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from devtools.sample_catalog import write_sample_catalog
from search.index import IndexFileError, VectorIndex
from search.model.space import space_of
from search.wiring import open_products
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog, read_manifest_rows
from tests.support.images import b64
from tests.support.indexer import finish_indexer, product_count, start_indexer, summary_of
from tests.support.servers import LiveServer
from tests.support.settings import settings_for

CRASH_PRODUCTS = 120


def database_products(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return [(int(pid), ext) for pid, ext in conn.execute("SELECT id, external_id FROM products")]


def index_file(data_dir: Path) -> Path:
    return data_dir / "index" / "products.faiss"


def load_index(data_dir: Path, model_dir: Path) -> VectorIndex:
    # The index is labelled with the embedding space (the weights' fingerprint), not the folder's name.
    return VectorIndex.load(index_file(data_dir), model=space_of(str(model_dir), 32).key, dim=32)


def damage(path: Path) -> None:
    """Overwrite bytes in the middle of the file, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def assert_index_matches_database(data_dir: Path, model_dir: Path) -> None:
    index = load_index(data_dir, model_dir)
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        image_ids = sorted(int(row[0]) for row in conn.execute("SELECT id FROM product_images"))
    assert sorted(index.ids().tolist()) == image_ids


@dataclass
class StoppedRun:
    manifest: Path
    data_dir: Path
    result: subprocess.CompletedProcess[str]

    @property
    def db(self) -> Path:
        return self.data_dir / "vitrine.db"


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, StoppedRun]:
    """Two ``indexer add`` runs of one catalog, started together; each is sent its signal as soon as the
    database shows its first committed batch: "killed" gets SIGKILL, "interrupted" SIGINT (Ctrl-C)."""
    manifest = write_sample_catalog(tmp_path_factory.mktemp("big"), CRASH_PRODUCTS, seed=7, size=48)
    signals = {"killed": signal.SIGKILL, "interrupted": signal.SIGINT}
    data_dirs = {name: tmp_path_factory.mktemp(name) / "data" for name in signals}
    processes = {
        name: start_indexer(
            tiny_model_dir, data_dirs[name], "add", manifest, "--no-progress", "--batch-size", 8
        )
        for name in signals
    }
    try:
        waiting = set(signals)
        deadline = time.monotonic() + 120
        while waiting:
            for name in sorted(waiting):
                if product_count(data_dirs[name] / "vitrine.db") > 0:
                    os.kill(processes[name].pid, signals[name])
                    waiting.discard(name)
                else:
                    assert processes[name].poll() is None, f"{name}: exited before committing anything"
            assert time.monotonic() < deadline, f"{sorted(waiting)} committed nothing in 120 s"
            time.sleep(0.01)
        return {
            name: StoppedRun(manifest, data_dirs[name], finish_indexer(process))
            for name, process in processes.items()
        }
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_killed_indexer_resumes_to_every_product_exactly_once(
    stopped_runs: dict[str, StoppedRun],
    tiny_model_dir: Path,
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    run = stopped_runs["killed"]
    assert run.result.returncode == -signal.SIGKILL
    committed = product_count(run.db)
    assert 0 < committed < CRASH_PRODUCTS, "the catalog must be big enough to kill the indexer mid-run"

    rerun = indexer_cli(run.data_dir, "add", run.manifest, "--no-progress")
    assert rerun.returncode == 0, summary_of(rerun)
    assert (
        f"{CRASH_PRODUCTS} rows: {CRASH_PRODUCTS - committed} added, 0 re-embedded, "
        f"0 metadata updated, {committed} unchanged, 0 failed"
    ) in rerun.stdout, summary_of(rerun)

    verify = indexer_cli(run.data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
    report = json.loads(verify.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["database_products"] == report["index_vectors"] == CRASH_PRODUCTS

    external_ids = [ext for _, ext in database_products(run.db)]
    assert sorted(external_ids) == sorted(row["id"] for row in read_manifest_rows(run.manifest))
    assert len(set(external_ids)) == len(external_ids)
    assert_index_matches_database(run.data_dir, tiny_model_dir)


def test_interrupted_indexer_exits_130_and_saves_its_finished_batches(
    stopped_runs: dict[str, StoppedRun], tiny_model_dir: Path
) -> None:
    run = stopped_runs["interrupted"]
    assert run.result.returncode == 130, summary_of(run.result)
    assert "INTERRUPTED: finished batches are saved" in run.result.stdout
    committed = product_count(run.db)
    assert 0 < committed < CRASH_PRODUCTS
    assert f"{CRASH_PRODUCTS} rows: {committed} added" in run.result.stdout, summary_of(run.result)
    # The index file was saved on the way out, in agreement with the database.
    assert_index_matches_database(run.data_dir, tiny_model_dir)


def test_verify_reports_a_damaged_index_file_and_rebuild_repairs_it(
    catalog_copy: IndexedCatalog,
    tiny_model_dir: Path,
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    damage(index_file(catalog_copy.data_dir))
    with pytest.raises(IndexFileError, match="checksum"):
        load_index(catalog_copy.data_dir, tiny_model_dir)

    result = indexer_cli(catalog_copy.data_dir, "verify")
    assert result.returncode == 1, summary_of(result)
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert any("checksum mismatch" in p and "indexer rebuild" in p for p in report["problems"]), report
    # verify only inspects: the damaged file is still there for whoever investigates.
    with pytest.raises(IndexFileError, match="checksum"):
        load_index(catalog_copy.data_dir, tiny_model_dir)

    rebuild = indexer_cli(catalog_copy.data_dir, "rebuild")
    assert rebuild.returncode == 0, summary_of(rebuild)
    again = indexer_cli(catalog_copy.data_dir, "verify")
    assert again.returncode == 0, summary_of(again)
    report = json.loads(again.stdout)
    assert report["ok"] is True
    assert report["index_vectors"] == SAMPLE_PRODUCTS
    assert_index_matches_database(catalog_copy.data_dir, tiny_model_dir)


@pytest.mark.parametrize("harm", ["damaged", "missing", "emptied"])
def test_server_start_rebuilds_a_bad_index_file_and_search_works(
    catalog_copy: IndexedCatalog,
    tiny_model_dir: Path,
    start_server: Callable[..., LiveServer],
    harm: str,
) -> None:
    path = index_file(catalog_copy.data_dir)
    if harm == "damaged":
        damage(path)
    elif harm == "missing":
        path.unlink()
    else:
        path.write_bytes(b"")
    server = start_server()
    assert server.client.get("/ready").json()["index"]["size"] == SAMPLE_PRODUCTS
    for product_id in ("sku-00000", "sku-00021"):
        response = server.client.post(
            "/search", json={"image": b64(catalog_copy.image_bytes(product_id)), "k": 3}
        )
        top = response.json()["results"][0]
        assert top["id"] == product_id and top["score"] >= 0.999
    # The rebuilt file was written at start-up and is whole again.
    assert_index_matches_database(catalog_copy.data_dir, tiny_model_dir)


def test_rebuilt_index_holds_the_database_vectors(
    catalog_copy: IndexedCatalog, tiny_model_dir: Path, start_server: Callable[..., LiveServer]
) -> None:
    index_file(catalog_copy.data_dir).unlink()
    start_server()
    index = load_index(catalog_copy.data_dir, tiny_model_dir)
    with sqlite3.connect(catalog_copy.data_dir / "vitrine.db") as conn:
        rows = conn.execute("SELECT id, embedding FROM product_images").fetchall()
    assert len(rows) == len(index) == SAMPLE_PRODUCTS
    for product_id, blob in rows:
        np.testing.assert_array_equal(index.reconstruct(product_id), np.frombuffer(blob, dtype="<f4"))


# verify finds what disagrees ------------------------------------------------------------------------------------


def OF(external_id: str) -> str:
    """SQL condition on product_images: the images of one product."""
    return f"product_id = (SELECT id FROM products WHERE external_id = '{external_id}')"


def tamper(data_dir: Path, sql: str, *params: object) -> None:
    """A change behind the catalog's back (no revision bump), as a bad restore or a manual edit makes."""
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        conn.execute(sql, params)


def verify_in_process(data_dir: Path, model_dir: Path) -> list[str]:
    service = open_products(settings_for(model_dir, data_dir), model=space_of(str(model_dir), 32).key)
    try:
        report = service.verify()
    finally:
        service.catalog.close()
    assert report.ok is (not report.problems)
    return report.problems


def test_verify_exits_1_when_an_index_vector_differs_from_the_database(
    catalog_copy: IndexedCatalog, indexer_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    other = np.zeros(32, dtype="<f4")
    other[0] = 1.0
    tamper(
        catalog_copy.data_dir,
        f"UPDATE product_images SET embedding = ? WHERE {OF('sku-00003')}",
        other.tobytes(),
    )
    result = indexer_cli(catalog_copy.data_dir, "verify")
    assert result.returncode == 1, summary_of(result)
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert any("index vector differs from the database" in problem for problem in report["problems"])


def test_verify_reports_index_vectors_without_a_product(
    catalog_copy: IndexedCatalog, tiny_model_dir: Path
) -> None:
    tamper(catalog_copy.data_dir, f"DELETE FROM product_images WHERE {OF('sku-00004')}")
    problems = verify_in_process(catalog_copy.data_dir, tiny_model_dir)
    assert any("1 index vectors have no product" in problem for problem in problems), problems


def test_verify_reports_products_of_another_model(catalog_copy: IndexedCatalog, tiny_model_dir: Path) -> None:
    tamper(
        catalog_copy.data_dir, f"UPDATE product_images SET embedding_model = 'other' WHERE {OF('sku-00005')}"
    )
    problems = verify_in_process(catalog_copy.data_dir, tiny_model_dir)
    assert any("other models" in problem and "'other': 1" in problem for problem in problems), problems


def test_verify_reports_vectors_that_are_not_unit_length(
    catalog_copy: IndexedCatalog, tiny_model_dir: Path
) -> None:
    tamper(
        catalog_copy.data_dir, f"UPDATE product_images SET embedding = ? WHERE {OF('sku-00006')}", bytes(128)
    )
    problems = verify_in_process(catalog_copy.data_dir, tiny_model_dir)
    assert any("embedding norm 0.0000, expected 1" in problem for problem in problems), problems


def test_verify_of_an_untouched_catalog_finds_nothing(
    catalog_copy: IndexedCatalog, tiny_model_dir: Path
) -> None:
    assert verify_in_process(catalog_copy.data_dir, tiny_model_dir) == []


def test_verify_reports_stored_image_files_that_are_missing(
    catalog_copy: IndexedCatalog, tiny_model_dir: Path
) -> None:
    stored = sorted((catalog_copy.data_dir / "images").iterdir())
    stored[0].unlink()
    problems = verify_in_process(catalog_copy.data_dir, tiny_model_dir)
    assert any("stored image files are missing" in problem for problem in problems), problems


def test_compact_prunes_removals_and_an_older_server_index_rebuilds(
    catalog_copy: IndexedCatalog,
    start_server: Callable[..., LiveServer],
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    server = start_server()
    image = catalog_copy.image_bytes("sku-00005")
    assert (
        server.client.post("/search", json={"image": b64(image), "k": 1}).json()["results"][0]["id"]
        == "sku-00005"
    )
    removed = indexer_cli(catalog_copy.data_dir, "remove", "sku-00005")
    assert removed.returncode == 0, summary_of(removed)
    compact = indexer_cli(catalog_copy.data_dir, "compact")
    assert compact.returncode == 0 and "pruned 1 logged removal(s)" in compact.stdout, summary_of(compact)
    with sqlite3.connect(catalog_copy.data_dir / "vitrine.db") as conn:
        assert conn.execute("SELECT count(*) FROM removed_images").fetchone()[0] == 0
    # The running server's index predates the pruned removal: it rebuilds and the product is gone.
    results = server.client.post("/search", json={"image": b64(image), "k": 5}).json()["results"]
    assert "sku-00005" not in [hit["id"] for hit in results]
    assert server.client.get("/ready").json()["index"]["size"] == SAMPLE_PRODUCTS - 1
    verify = indexer_cli(catalog_copy.data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
