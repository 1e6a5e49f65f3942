"""Vector import/export (Parquet, no model loaded) and vector queries on POST /search."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.__main__ import main as indexer_main
from indexer.summary import RunSummary
from indexer.vector_files import VectorImporter
from search.model.vectors import normalise_rows
from search.settings import Settings
from search.wiring import open_products
from tests.support.http import assert_error

DIM = 32  # the tiny test model's embedding dimension


def raw_vectors(count: int, seed: int = 0) -> np.ndarray:
    """Not normalised on purpose: the importer must do it."""
    return (np.random.default_rng(seed).standard_normal((count, DIM)) * 3).astype(np.float32)


def write_parquet(path: Path, ids: list, vectors: list, **columns: list) -> Path:
    table = pa.table({"id": pa.array(ids), "embedding": pa.array(vectors, pa.list_(pa.float32())), **columns})
    pq.write_table(table, path)
    return path


@pytest.fixture
def cli(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """``python -m indexer ...`` in this process, on the data folder the test servers use."""
    monkeypatch.setenv("VITRINE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))

    def run(*args: object) -> int:
        with pytest.raises(SystemExit) as stopped:
            indexer_main([str(arg) for arg in args])
        code = stopped.value.code
        return code if isinstance(code, int) else 1

    return run


def catalog_file(tmp_path: Path, count: int = 12) -> tuple[Path, np.ndarray]:
    vectors = raw_vectors(count)
    path = write_parquet(
        tmp_path / "catalog.parquet",
        [f"v-{i:03d}" for i in range(count)],
        list(vectors),
        title=[f"product {i}" for i in range(count)],
        category=["tile" if i % 2 else "wood" for i in range(count)],
        image=[f"https://img.example/{i}.jpg" for i in range(count)],
        color=["beige", "grey", None, "oak"] * (count // 4),
        size=list(range(count)),
    )
    return path, vectors


def test_import_then_export_round_trips_bit_for_bit(cli, tmp_path, capsys):
    source, vectors = catalog_file(tmp_path)
    assert cli("import", source, "--no-progress") == 0
    assert "12 added" in capsys.readouterr().out
    exported = tmp_path / "out.parquet"
    assert cli("export", exported) == 0
    table = pq.read_table(exported)
    original = pq.read_table(source)
    assert table.column("id").to_pylist() == original.column("id").to_pylist()
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected, _ = normalise_rows(vectors)
    assert got.tobytes() == expected.tobytes()
    for column in ("title", "category", "image", "color", "size"):
        assert table.column(column).to_pylist() == original.column(column).to_pylist(), column
    # The export imports back as unchanged: normalising a unit vector again keeps its bits.
    capsys.readouterr()
    assert cli("import", exported, "--no-progress") == 0
    assert "0 added, 0 new vectors, 0 metadata updated, 12 unchanged" in capsys.readouterr().out


def test_bad_rows_are_reported_by_row_and_skipped(cli, tmp_path, capsys, make_settings):
    good = list(raw_vectors(3))
    nan = good[0].copy()
    nan[4] = np.nan
    path = write_parquet(
        tmp_path / "bad.parquet",
        ["a", "b", "a", "c", "d", "", "e"],
        [good[0], np.ones(DIM + 1, np.float32), good[1], nan, np.zeros(DIM, np.float32), good[2], good[2]],
    )
    assert cli("import", path, "--no-progress", "--dim", DIM) == 2
    out = capsys.readouterr().out
    assert "7 rows: 2 added" in out and "5 failed" in out
    assert "row 2 (id b): embedding has 33 values; the model's dimension is 32" in out
    assert "row 3 (id a): id 'a' appeared in an earlier row (duplicate id)" in out
    assert "row 4 (id c): embedding has a non-finite value" in out
    assert "row 5 (id d): embedding is the zero vector" in out
    assert "row 6: product id must be a non-empty string" in out
    catalog = open_products(make_settings()).catalog
    assert [catalog.get(name) is not None for name in "abcde"] == [True, False, False, False, True]


def test_a_npy_matrix_with_an_ids_file_imports_like_parquet(cli, tmp_path, capsys):
    vectors = raw_vectors(7)
    vectors[3, 4] = np.nan
    np.save(tmp_path / "vectors.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(["n-0", "n-1", "n-2", "n-3", "n-4", "n-1", "n-6"]) + "\n")
    (tmp_path / "short.txt").write_text("n-0\n")
    for extra, message in (
        ([], "name its ids file too (--ids FILE"),
        (["--ids", "short.txt"], "has 1 ids but"),
    ):
        with pytest.raises(SystemExit) as refused:
            indexer_main(
                [
                    "import",
                    str(tmp_path / "vectors.npy"),
                    *(str(tmp_path / e) if e.endswith(".txt") else e for e in extra),
                ]
            )
        assert refused.value.code == 1
        assert message in capsys.readouterr().err
    code = cli(
        "import", tmp_path / "vectors.npy", "--ids", tmp_path / "ids.txt", "--no-progress", "--batch-size", 3
    )
    assert code == 2  # some rows failed
    out = capsys.readouterr().out
    assert "7 rows: 5 added" in out and "2 failed" in out
    assert "row 4 (id n-3): embedding has a non-finite value" in out
    assert "row 6 (id n-1): id 'n-1' appeared in an earlier row (duplicate id)" in out
    exported = tmp_path / "out.parquet"
    assert cli("export", exported) == 0
    table = pq.read_table(exported)
    assert table.column("id").to_pylist() == ["n-0", "n-1", "n-2", "n-4", "n-6"]
    expected, _ = normalise_rows(vectors[[0, 1, 2, 4, 6]])
    assert np.array(table.column("embedding").to_pylist(), np.float32).tobytes() == expected.tobytes()


def test_interrupted_import_resumes_where_it_stopped(cli, tmp_path, capsys, make_settings):
    source, _ = catalog_file(tmp_path, count=20)
    settings: Settings = make_settings()
    cli("migrate")
    service = open_products(settings)

    def stop_after_first_batch(summary: RunSummary) -> None:
        raise KeyboardInterrupt  # Ctrl-C once the first batch is committed

    first = VectorImporter(service, DIM, batch_size=8, on_batch=stop_after_first_batch).run(source)
    assert first.interrupted and first.added == 8
    assert service.catalog.count() == 8
    capsys.readouterr()
    assert cli("import", source, "--no-progress", "--batch-size", 8) == 0
    assert "20 rows: 12 added, 0 new vectors, 0 metadata updated, 8 unchanged" in capsys.readouterr().out
    assert open_products(settings).catalog.count() == 20


def test_vector_query_finds_the_imported_product_first(cli, tmp_path, start_server):
    source, vectors = catalog_file(tmp_path)
    assert cli("import", source, "--no-progress") == 0
    server = start_server()
    # Any scale: the server normalises the query.
    body = {"vector": (vectors[5] * 7).tolist(), "k": 3}
    results = server.client.post("/search", json=body).json()["results"]
    assert results[0]["id"] == "v-005"
    assert math.isclose(results[0]["score"], 1.0, abs_tol=1e-5)
    filtered = server.client.post("/search", json={**body, "filters": {"category": "wood"}}).json()
    assert {hit["id"] for hit in filtered["results"]} <= {f"v-{i:03d}" for i in range(0, 12, 2)}
    index = server.client.get("/info").json()["index"]
    assert index["kind"] == "flat" and index["measured_recall_at_10"]["text_like"] == 1.0


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([0.1] * (DIM - 1), "32 numbers"),
        ([0.0] * DIM, "zero vector"),
        ([1e39] + [0.0] * (DIM - 1), "finite"),
    ],
)
def test_bad_query_vectors_get_a_400(cli, tmp_path, start_server, vector, message):
    source, _ = catalog_file(tmp_path, count=4)
    assert cli("import", source, "--no-progress") == 0
    server = start_server()
    assert message in assert_error(server.client.post("/search", json={"vector": vector}), 400)


def test_a_nan_in_a_query_vector_gets_a_400(cli, tmp_path, start_server):
    source, _ = catalog_file(tmp_path, count=4)
    assert cli("import", source, "--no-progress") == 0
    server = start_server()
    body = '{"vector": [NaN' + ", 0.5" * (DIM - 1) + "]}"
    response = server.client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert "finite" in assert_error(response, 400)


def test_a_larger_import_is_served_by_a_tuned_ivf_index(cli, tmp_path, capsys, monkeypatch, start_server):
    monkeypatch.setenv("VITRINE_INDEX_EXACT_LIMIT", "1000")  # auto: IVF from 1000 vectors on
    vectors = raw_vectors(2500, seed=3)
    source = write_parquet(tmp_path / "big.parquet", [f"b{i}" for i in range(2500)], list(vectors))
    assert cli("import", source, "--no-progress") == 0
    capsys.readouterr()
    assert cli("tune") == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["kind"] == "ivf" and facts["measured_recall_at_10"]["image_like"] >= 0.95
    assert facts["tuning_samples"]["text_source"] == "far proxies of catalog vectors"
    assert cli("verify") == 0
    server = start_server(index_exact_limit=1000)
    info = server.client.get("/info").json()["index"]
    assert info["kind"] == "ivf" and info["server_rss_bytes"] > 0
    # Imported without the model, so tuned on far proxies; the server (model loaded) measured its
    # recall on the text tower's queries before serving one (no titles here: built-in phrases).
    assert info["tuning_samples"]["text_source"] == "text tower: 200 built-in product phrases"
    assert info["measured_recall_at_10"]["text_like"] >= 0.95
    assert info["recall_by_nprobe"][str(info["nprobe"])] == info["measured_recall_at_10"]
    top = server.client.post("/search", json={"vector": vectors[1234].tolist(), "k": 1}).json()["results"][0]
    assert top["id"] == "b1234" and math.isclose(top["score"], 1.0, abs_tol=1e-5)


def test_products_with_several_images_export_one_row_per_image_and_import_back(cli, tmp_path, capsys):
    vectors = raw_vectors(5, seed=3)
    source = write_parquet(
        tmp_path / "multi.parquet",
        ["m-1", "m-1", "m-1", "m-2", "m-2"],
        list(vectors),
        image=[f"https://img.example/m/{i}.jpg" for i in range(5)],
        title=["three views"] * 3 + ["two views"] * 2,
    )
    assert cli("import", source, "--no-progress", "--batch-size", 2) == 0  # m-1 spans two batches
    assert "5 rows: 2 added" in capsys.readouterr().out
    exported = tmp_path / "multi-out.parquet"
    assert cli("export", exported) == 0
    table = pq.read_table(exported)
    assert table.column("id").to_pylist() == ["m-1", "m-1", "m-1", "m-2", "m-2"]
    assert table.column("image").to_pylist() == [f"https://img.example/m/{i}.jpg" for i in range(5)]
    expected, _ = normalise_rows(vectors)
    assert np.array(table.column("embedding").to_pylist(), dtype=np.float32).tobytes() == expected.tobytes()
    capsys.readouterr()
    assert cli("import", exported, "--no-progress", "--batch-size", 2) == 0
    assert "5 rows: 0 added, 0 new vectors, 0 metadata updated" in capsys.readouterr().out
    assert cli("verify") == 0
