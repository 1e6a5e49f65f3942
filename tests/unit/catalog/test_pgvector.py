"""The pgvector backend against a real PostgreSQL + pgvector (devtools/pgvector_server.py): the same
answers as the FAISS backend on the same catalog, selective filters (exact plan) and broad ones
(iterative index scans) alike, with the IVFFlat and HNSW indexes; writes searchable at commit from
another catalog connection; verify and rebuild; and a clear error where the backend cannot run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, text

from devtools.pgvector_server import fresh_pgvector_database
from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.filters import Filters
from search.catalog.pgvector.table import PgVectorSpec, VectorRows
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.errors import VectorBackendError
from search.images.store import ImageStore
from search.settings import Settings
from search.wiring import build_products
from tests.unit.catalog.test_store_congruence import MODEL, scenario

DIM = 16
# Each variant searches exactly on this small catalog (probes cover every list, ef_search every node),
# so its answers must equal FAISS's exact search; exact_limit 40 sends broad filters through the index
# with iterative scans and selective ones through the exact plan.
VARIANTS = {
    "no index": PgVectorSpec(exact_limit=40),
    "ivfflat": PgVectorSpec(index="ivfflat", index_min_rows=0, lists=4, probes=4, exact_limit=40),
    "hnsw": PgVectorSpec(index="hnsw", exact_limit=40),
}


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def catalog_rows(count: int = 240, seed: int = 5) -> list[ProductWrite]:
    rng = np.random.default_rng(seed)
    return [
        ProductWrite(
            f"p{i:03d}",
            f"product {i}",
            "rare" if i % 60 == 0 else ("tile" if i % 2 else "wood"),
            {"color": ["red", "blue", "green"][i % 3], "price": float(i)},
            images=[
                ImageWrite(f"https://img.example/{i}-{n}.jpg", embedding=unit(rng), embedding_model=MODEL)
                for n in range(1 + i % 3)
            ],
        )
        for i in range(count)
    ]


def service_on(catalog: Catalog, root: Path, **backend: Any) -> ProductService:
    return build_products(
        catalog,
        model=MODEL,
        index_path=root / "index.faiss",
        image_store=ImageStore(root / "images"),
        **backend,
    )


def pgvector(spec: PgVectorSpec | None = None) -> dict[str, Any]:
    return {"vector_backend": "pgvector", "pgvector": spec or PgVectorSpec(), "dim": DIM}


def answers(service: ProductService, queries: list[np.ndarray]) -> list[Any]:
    out = []
    for filters in (None, {"category": "rare"}, {"color": "red"}, {"price": {"lt": 180}}):
        for query in queries:
            search = SearchQuery(
                [Example(vector=tuple(query))], filters=Filters.parse(filters, 100), k=8, mode="vector"
            )
            out.append(
                (
                    filters,
                    [
                        (hit.record.external_id, round(hit.score, 5), hit.matched_image.position)
                        for hit in service.search(search).hits
                    ],
                )
            )
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_filters_selective_and_broad_give_faiss_s_products(variant, pgvector_url, tmp_path) -> None:
    rows = catalog_rows()
    queries = [unit(np.random.default_rng(900 + i)) for i in range(4)]
    reference_catalog = Catalog.open(f"sqlite:///{tmp_path / 'faiss.db'}")
    from search.catalog.db import migrate

    migrate(str(reference_catalog.engine.url))
    reference = service_on(reference_catalog, tmp_path / "faiss")
    reference_catalog.upsert(rows)
    reference.refresh()
    expected = answers(reference, queries)
    reference_catalog.close()

    catalog = Catalog.open(pgvector_url)
    try:
        service = service_on(catalog, tmp_path / "pg", **pgvector(VARIANTS[variant]))
        catalog.upsert(rows)
        if variant == "ivfflat":
            service.rebuild()  # its lists are trained on the rows present
        definition = service.index.refresh().definition
        assert (definition is None) == (variant == "no index")
        got = answers(service, queries)
    finally:
        catalog.close()
    for (filters, want), (_, found) in zip(expected, got, strict=True):
        assert found == want, filters
    assert any(len(found) == 4 for filters, found in got if filters == {"category": "rare"})  # 4 rare


def test_the_congruence_scenario_answers_as_with_faiss(pgvector_url, tmp_path) -> None:
    reference_catalog = Catalog.open(f"sqlite:///{tmp_path / 'reference.db'}")
    from search.catalog.db import migrate

    migrate(str(reference_catalog.engine.url))
    reference = scenario(reference_catalog, tmp_path / "reference")
    reference_catalog.close()
    catalog = Catalog.open(pgvector_url)
    try:
        trace = scenario(catalog, tmp_path / "pg", vector_backend="pgvector")
    finally:
        catalog.close()
    for (step, expected), (_, got) in zip(reference, trace, strict=True):
        assert got == expected, step


def test_a_commit_is_searchable_from_another_connection_without_any_sync(pgvector_url, tmp_path) -> None:
    writer_catalog, reader_catalog = Catalog.open(pgvector_url), Catalog.open(pgvector_url)
    try:
        service_on(writer_catalog, tmp_path / "w", **pgvector())
        reader = service_on(reader_catalog, tmp_path / "r", **pgvector())
        rows = catalog_rows(12)
        query = rows[7].images[1].embedding
        search = SearchQuery([Example(vector=tuple(query))], k=3, mode="vector")
        assert reader.search(search).hits == []
        writer_catalog.upsert(rows)
        # Straight to the retrieval, no catch_up: the reader holds nothing that must follow the write.
        found = reader.finder.vectors.nearest(query, 3, Filters(), [], None)
        assert found[0].product == writer_catalog.get("p007").id and len(reader.index) == 0
        hits = reader.search(search).hits
        assert hits[0].record.external_id == "p007" and hits[0].matched_image.position == 1
        assert hits[0].score == pytest.approx(1.0, abs=1e-6)  # re-scored from the float32 vector
        writer_catalog.remove(["p007"])
        assert "p007" not in [hit.record.external_id for hit in reader.search(search).hits]
        with reader_catalog.engine.connect() as connection:  # the rows went with the images
            images = connection.scalar(text("SELECT count(*) FROM product_images"))
            assert connection.scalar(text("SELECT count(*) FROM image_vectors")) == images == 22
    finally:
        writer_catalog.close()
        reader_catalog.close()


def test_verify_finds_a_missing_vector_row_and_rebuild_restores_it(pgvector_url, tmp_path) -> None:
    catalog = Catalog.open(pgvector_url)
    try:
        service = service_on(catalog, tmp_path, **pgvector())
        catalog.upsert(catalog_rows(6))
        assert service.verify().ok
        with catalog.engine.begin() as connection:
            connection.execute(text("DELETE FROM image_vectors WHERE image_id = 3"))
        report = service.verify()
        assert not report.ok and "1 images have no vector row in image_vectors: [3]" in report.problems[0]
        assert service.rebuild() == 12
        assert service.verify().ok
        stats = service.stats()
        assert stats["vector_backend"] == "pgvector" and stats["index_file"] is None
    finally:
        catalog.close()


def test_a_catalog_served_by_faiss_is_filled_when_pgvector_starts(pgvector_url, tmp_path) -> None:
    catalog = Catalog.open(pgvector_url)
    try:
        service_on(catalog, tmp_path / "faiss")
        catalog.upsert(catalog_rows(9))
        catalog.vector_rows = None
        service = service_on(catalog, tmp_path / "pg", **pgvector())
        assert len(service.index) == 18 and service.verify().ok
    finally:
        catalog.close()


def test_without_the_vector_extension_start_up_names_create_extension(pgvector_server_url, tmp_path) -> None:
    with fresh_pgvector_database(pgvector_server_url, extension=False) as url:
        catalog = Catalog.open(url)
        try:
            with pytest.raises(VectorBackendError, match=r"CREATE EXTENSION vector"):
                service_on(catalog, tmp_path, **pgvector())
        finally:
            catalog.close()


def test_sqlite_with_pgvector_is_a_settings_error_naming_create_extension(tmp_path) -> None:
    with pytest.raises(ValidationError, match=r"needs the catalog in PostgreSQL.*CREATE EXTENSION vector"):
        Settings(data_dir=tmp_path, vector_backend="pgvector")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        with pytest.raises(VectorBackendError, match=r"CREATE EXTENSION vector.*sqlite"):
            service_on(catalog, tmp_path, **pgvector())
    finally:
        catalog.close()


def test_the_pgvector_server_url_is_a_superuser_of_a_server_with_the_extension(pgvector_server_url) -> None:
    engine = create_engine(pgvector_server_url)
    with engine.connect() as connection:
        available = connection.scalar(
            text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        )
    engine.dispose()
    assert available is not None


def test_a_table_of_another_dimension_is_recreated_only_when_empty(pgvector_url) -> None:
    from search.catalog.pgvector.table import ensure_table, table_dim

    catalog = Catalog.open(pgvector_url)
    try:
        catalog.vector_rows = VectorRows(MODEL, 8)
        catalog.upsert([_product_of_dim(8)])
        with catalog.engine.begin() as connection, pytest.raises(VectorBackendError, match="DROP TABLE"):
            ensure_table(connection, 16)
        catalog.remove(["d8"])  # the rows go with the images: the table is empty
        with catalog.engine.begin() as connection:
            ensure_table(connection, 16)
            assert table_dim(connection) == 16
    finally:
        catalog.close()


def _product_of_dim(dim: int) -> ProductWrite:
    vector = unit(np.random.default_rng(dim), dim)
    return ProductWrite(
        "d8",
        None,
        None,
        {},
        images=[ImageWrite("https://img.example/d.jpg", embedding=vector, embedding_model=MODEL)],
    )


def test_the_duplicate_pass_finds_copies_through_the_database(pgvector_url, tmp_path) -> None:
    catalog = Catalog.open(pgvector_url)
    try:
        service = service_on(catalog, tmp_path, **pgvector())
        rows = catalog_rows(20)
        copy = rows[4].images[0].embedding
        rows.append(
            ProductWrite(
                "copy",
                None,
                None,
                {},
                images=[ImageWrite("https://img.example/c.jpg", embedding=copy, embedding_model=MODEL)],
            )
        )
        catalog.upsert(rows)
        pairs, groups, _ = service.duplicates.full_pass(0.99)
        names = {
            r.id: r.external_id
            for r in catalog.get_by_ids([p for pair in pairs.scores for p in pair]).values()
        }
        assert [tuple(sorted(names[p] for p in pair)) for pair in pairs.scores] == [("copy", "p004")]
        assert len(groups) == 1
        found = service.duplicates.of_product("copy", None, 10)
        assert [names[m.product] for m in found] == ["p004"]
    finally:
        catalog.close()


def test_a_faiss_process_on_a_catalog_with_the_table_keeps_it_whole(pgvector_url, tmp_path) -> None:
    served = Catalog.open(pgvector_url)
    other = Catalog.open(pgvector_url)
    try:
        service = service_on(served, tmp_path / "pg", **pgvector())
        served.upsert(catalog_rows(3))
        service_on(other, tmp_path / "faiss")  # VITRINE_VECTOR_BACKEND=faiss, e.g. a forgotten indexer
        other.upsert(catalog_rows(8)[3:])
        assert service.verify().ok
        assert len(service.index.refresh()) == 15  # 6 + 9 images
    finally:
        served.close()
        other.close()


def test_an_unavailable_pgvector_server_fails_under_ci_and_skips_elsewhere(monkeypatch) -> None:
    from tests.support.pgvector import unavailable

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unavailable under CI: no server"):
        unavailable("no server")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no server"):
        unavailable("no server")


def test_one_process_builds_the_vector_index_the_others_go_on_exact(pgvector_url, tmp_path) -> None:
    from search.catalog.pgvector.table import _BUILD_KEY, create_index

    catalog = Catalog.open(pgvector_url)
    try:
        service_on(catalog, tmp_path, **pgvector())
        catalog.upsert(catalog_rows(10))
        spec = PgVectorSpec(index_min_rows=0)
        builder = create_engine(pgvector_url)
        with builder.connect() as other:  # another replica holds the build
            other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _BUILD_KEY})
            assert create_index(catalog.engine, spec) is None
            other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _BUILD_KEY})
        builder.dispose()
        assert "ivfflat" in create_index(catalog.engine, spec)
    finally:
        catalog.close()


def test_an_ivfflat_build_over_maintenance_work_mem_is_retried_with_what_pgvector_asks(
    pgvector_url, tmp_path, monkeypatch, caplog
) -> None:
    from search.catalog.pgvector import table

    monkeypatch.setattr(table, "BUILD_MEMORY", "1MB")  # as 512MB is for 4,000 lists at 1M vectors
    catalog = Catalog.open(pgvector_url)
    try:
        service_on(catalog, tmp_path, **pgvector())
        catalog.upsert(catalog_rows(1000))
        with caplog.at_level("WARNING", logger=table.__name__):
            definition = table.create_index(catalog.engine, PgVectorSpec(index_min_rows=0, lists=500))
        assert "lists='500'" in definition
        assert "needs" in caplog.text and "maintenance_work_mem" in caplog.text
        with catalog.engine.connect() as connection:  # the failed try left no invalid index behind
            names = connection.scalars(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'image_vectors'")
            )
            assert sorted(names) == [
                "image_vectors_pkey",
                "ix_image_vectors_embedding",
                "ix_image_vectors_product",
            ]
    finally:
        catalog.close()


def test_guessed_ivfflat_probes_scan_at_least_min_scanned_vectors_and_never_more_than_the_lists() -> None:
    from search.catalog.pgvector.index import MIN_SCANNED, guessed_probes

    assert guessed_probes(None, 100_000) == 32  # no index yet: searches are exact anyway
    assert guessed_probes(1264, 100_000) == 64  # 64 x 79 vectors >= 5,000
    assert guessed_probes(400, 10_000) == 200
    assert guessed_probes(16, 100) == 16  # all the lists, no more
    assert guessed_probes(4000, 10_000_000) == 32  # big lists: the guess's floor rules
    assert MIN_SCANNED == 5_000
