"""Recall out of the box on pgvector (issue 17, point 4): the IVFFlat probes / HNSW ef_search are measured
on text-side queries (the text tower on the catalog's titles before the first query, served queries
later) against exact answers, stored in the database for every replica, and reported in /info; a
breadth measured on far proxies does not hold for vague text queries, one measured on text does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from devtools.modality_gap import GapModel
from devtools.pgvector_server import fresh_pgvector_database
from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.pgvector.table import PgVectorSpec
from search.catalog.pgvector.tuning import LOCK_KEY as TUNING_LOCK_KEY
from search.catalog.pgvector.tuning import TUNING_TABLE, Tuning
from search.catalog.service import ProductService
from search.images.store import ImageStore
from search.index.tuning import exact_top_k, recall_at_k
from search.index.tuning_queries import MIN_SERVED
from search.model.encoder import Encoder
from search.wiring import build_products
from tests.unit.index.test_ivf import nearest

MODEL = "m"
# The FAISS test's geometry (tests/unit/index/test_text_tuning.py): texts vaguer than bench's `hard`.
HARDER = GapModel(dim=128, rank=32, clusters=200, hard=True, text_spread=6.0, text_weight=0.05)
LISTS_128 = PgVectorSpec(index="ivfflat", index_min_rows=1000, lists=128)


def add_products(catalog: Catalog, vectors: np.ndarray, titles: bool = True) -> None:
    for start in range(0, len(vectors), 1000):
        catalog.upsert(
            [
                ProductWrite(
                    external_id=f"p{i}",
                    title=f"{['red', 'blue', 'oak'][i % 3]} product number {i}" if titles else None,
                    category=f"shelf {i % 7}" if titles else None,
                    images=[ImageWrite("", embedding=vector, embedding_model=MODEL)],
                )
                for i, vector in enumerate(vectors[start : start + 1000], start=start)
            ]
        )


def serve(
    catalog: Catalog, root: Path, spec: PgVectorSpec, encoder: Encoder | None = None, dim: int = 128
) -> ProductService:
    """The catalog as a server opens it (background upkeep), with the model loaded or not."""
    return build_products(
        catalog,
        model=MODEL,
        index_path=root / "index" / "products.faiss",
        image_store=ImageStore(root / "images"),
        encoder=encoder,
        dim=dim,
        vector_backend="pgvector",
        pgvector=spec,
        rebuild_in_background=True,
    )


def forget_tuning(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {TUNING_TABLE}"))
    engine.dispose()


@pytest.fixture(scope="module")
def harder(pgvector_server_url: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """A pgvector catalog of 4,000 image-like vectors (no titles), 300 held-out text-like queries and
    their exact top 10 image ids."""
    vectors = next(HARDER.images(4000, seed=1, chunk=4000))[0]
    queries = HARDER.texts(300, seed=99)
    with fresh_pgvector_database(pgvector_server_url) as url:
        catalog = Catalog.open(url)
        try:
            add_products(catalog, vectors, titles=False)
            truth = exact_top_k(catalog.iter_embeddings(MODEL), queries, 10)
        finally:
            catalog.close()
        yield url, queries, truth


def held_out_recall(service: ProductService, queries: np.ndarray, truth: np.ndarray) -> float:
    found = [np.array([hit.id for hit in service.index.search(query, 10)]) for query in queries]
    return recall_at_k(found, truth)


def test_a_breadth_measured_on_text_side_queries_holds_where_far_proxies_do_not(harder, tmp_path) -> None:
    url, held_out, truth = harder
    forget_tuning(url)
    catalog = Catalog.open(url)
    try:
        service = serve(catalog, tmp_path, LISTS_128)  # no model: nothing measured before serving
        assert service.index.describe()["probes_source"] == "guessed"
        guessed = service.tune()  # `indexer tune` without a model: far proxies
        assert guessed["tuning_samples"]["text_source"] == "far proxies of catalog vectors"
        assert guessed["probes_source"] == "measured"
        assert held_out_recall(service, held_out, truth) < 0.93  # the proxies' measurement did not hold

        facts = service.tune(HARDER.texts(300, seed=5))
        assert facts["tuning_samples"] == {
            "image_like": 200,
            "text_like": 300,
            "text_source": "300 given queries",
        }
        assert facts["probes"] > guessed["probes"]
        assert facts["measured_recall_at_10"]["text_like"] >= 0.95
        assert facts["recall_by_probes"][str(facts["probes"])] == facts["measured_recall_at_10"]
        assert held_out_recall(service, held_out, truth) >= 0.95
        # The smallest breadth that reaches the target: every smaller one measured fell short.
        smaller = [int(p) for p in facts["recall_by_probes"] if int(p) < facts["probes"]]
        assert smaller and all(facts["recall_by_probes"][str(p)]["text_like"] < 0.97 for p in smaller)
    finally:
        catalog.close()


def test_a_server_re_measures_in_the_background_on_the_queries_it_served(harder, tmp_path) -> None:
    url, held_out, truth = harder
    forget_tuning(url)
    catalog = Catalog.open(url)
    try:
        service = serve(catalog, tmp_path, LISTS_128)  # no model: guessed until it has served queries
        before = service.index.describe()
        assert before["probes_source"] == "guessed" and "measured_recall_at_10" not in before
        for query in HARDER.texts(MIN_SERVED, seed=5):
            nearest(service, query, 10)
        service.refresh()  # a search's refresh sees that 200 were logged
        service.sync._tune_thread.join(timeout=60)
        facts = service.index.describe()
        assert facts["tuning_samples"]["text_source"] == f"{MIN_SERVED} served queries"
        assert facts["probes_source"] == "measured"
        assert held_out_recall(service, held_out, truth) >= 0.95
        service.sync.save()
        # The next process starts with the measured breadth (from the database) and the served sample.
        again = serve(catalog, tmp_path, LISTS_128)
        assert again.index.describe()["probes"] == facts["probes"]
        assert len(again.sync.query_log) == MIN_SERVED
    finally:
        catalog.close()


@pytest.fixture(scope="module")
def titled_url(encoder: Encoder, pgvector_server_url: str) -> Iterator[str]:
    """A catalog of 1,500 random unit vectors in the tiny model's space, with titles and categories."""
    vectors = np.random.default_rng(3).standard_normal((1500, encoder.info.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with fresh_pgvector_database(pgvector_server_url) as url:
        catalog = Catalog.open(url)
        add_products(catalog, vectors)
        catalog.close()
        yield url


@pytest.fixture
def titled(titled_url: str) -> Iterator[Catalog]:
    """That catalog with no vector index and nothing measured: each test builds and measures its own."""
    forget_tuning(titled_url)
    engine = create_engine(titled_url)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX IF EXISTS ix_image_vectors_embedding"))
    engine.dispose()
    catalog = Catalog.open(titled_url)
    yield catalog
    catalog.close()


def test_with_the_model_loaded_the_breadth_is_measured_before_the_first_query_and_replicas_share_it(
    encoder: Encoder, titled: Catalog, tmp_path: Path
) -> None:
    dim = encoder.info.embedding_dim
    spec = PgVectorSpec(index="ivfflat", index_min_rows=1000, lists=32)
    facts = serve(titled, tmp_path / "a", spec, encoder, dim).index.describe()
    assert facts["tuning_samples"]["text_source"] == "text tower: 300 catalog titles and categories"
    assert facts["probes_source"] == "measured"
    assert facts["measured_recall_at_10"]["text_like"] >= 0.95
    # A replica without the model (or `indexer stats`) serves the stored measurement.
    replica = serve(titled, tmp_path / "b", spec, None, dim).index.describe()
    assert (replica["probes"], replica["probes_source"]) == (facts["probes"], "measured")
    # A restart with the model does not measure again.
    assert serve(titled, tmp_path / "a", spec, encoder, dim).index.describe()["tuning"] == facts["tuning"]

    # Opened with other lists, the index stays as built, and so does its measurement; a rebuild with
    # them measures again (far proxies: no model), and a replica picks the new index up without a write.
    lists_16 = PgVectorSpec(index="ivfflat", index_min_rows=1000, lists=16)
    rebuilt = serve(titled, tmp_path / "a", lists_16, None, dim)
    assert rebuilt.index.describe()["probes"] == facts["probes"]
    rebuilt.rebuild()
    after = rebuilt.index.describe()
    assert after["lists"] == 16 and after["probes_source"] == "measured" and after["probes"] <= 16
    assert after["tuning_samples"]["text_source"] == "far proxies of catalog vectors"
    replica_service = serve(titled, tmp_path / "b", spec, None, dim)
    replica_service.sync.index.definition = facts["index_definition"]  # as it was before the rebuild
    replica_service.sync._checked_at = 0.0  # INDEX_RECHECK_S have passed
    assert replica_service.sync.refresh().describe()["probes"] == after["probes"]


def test_hnsw_ef_search_is_measured_too(encoder: Encoder, titled: Catalog, tmp_path: Path) -> None:
    dim = encoder.info.embedding_dim
    facts = serve(titled, tmp_path, PgVectorSpec(index="hnsw"), encoder, dim).index.describe()
    assert facts["ef_search_source"] == "measured"
    assert facts["ef_search"] in (40, 64, 100, 160, 250, 400, 600, 1000)
    assert facts["measured_recall_at_10"]["text_like"] >= 0.95
    assert set(facts["recall_by_ef_search"]) >= {str(facts["ef_search"])}


def test_a_configured_breadth_is_served_as_it_is_and_not_measured(
    encoder: Encoder, titled: Catalog, tmp_path: Path
) -> None:
    spec = PgVectorSpec(index="ivfflat", index_min_rows=1000, lists=32, probes=3)
    service = serve(titled, tmp_path, spec, encoder, encoder.info.embedding_dim)  # the model loaded
    facts = service.index.describe()
    assert (facts["probes"], facts["probes_source"]) == (3, "configured")
    assert "measured_recall_at_10" not in facts
    assert "set it to 0 to have it measured" in service.tune()["note"]


def test_one_process_measures_at_a_time_and_releases_the_lock_when_done(
    encoder: Encoder, titled: Catalog, titled_url: str, tmp_path: Path
) -> None:
    dim = encoder.info.embedding_dim
    spec = PgVectorSpec(index="ivfflat", index_min_rows=1000, lists=32)
    first = serve(titled, tmp_path / "a", spec, None, dim)
    engine = create_engine(titled_url)
    with engine.connect() as other:  # another replica measuring
        other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": TUNING_LOCK_KEY})
        assert "another process is measuring" in first.tune()["note"]
        assert first.index.describe()["probes_source"] == "guessed"
        other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": TUNING_LOCK_KEY})
    engine.dispose()
    assert first.tune()["probes_source"] == "measured"
    second = Catalog.open(titled_url)  # a replica of its own, with connections of its own
    try:
        assert "note" not in serve(second, tmp_path / "b", spec, None, dim).tune()
    finally:
        second.close()


def test_a_measurement_holds_for_its_index_within_twice_or_half_its_size() -> None:
    measured = Tuning(
        breadth=24, definition="CREATE INDEX ... lists='32'", vectors=1000, recall={}, samples={}
    )
    assert measured.fits("CREATE INDEX ... lists='32'", 1000)
    assert measured.fits("CREATE INDEX ... lists='32'", 2000) and measured.fits(
        "CREATE INDEX ... lists='32'", 500
    )
    assert not measured.fits("CREATE INDEX ... lists='32'", 2001)
    assert not measured.fits("CREATE INDEX ... lists='32'", 499)
    assert not measured.fits("CREATE INDEX ... lists='16'", 1000)  # rebuilt: other lists
    assert not measured.fits(None, 1000)


def test_the_image_sample_is_stored_vectors_drawn_by_id_across_gaps(
    pgvector_url: str, tmp_path: Path
) -> None:
    from search.catalog.pgvector.tuning import image_sample

    vectors = np.random.default_rng(8).standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog.open(pgvector_url)
    try:
        add_products(catalog, vectors)
        serve(catalog, tmp_path, PgVectorSpec(), dim=16)  # fills image_vectors
        catalog.remove(f"p{i}" for i in range(0, 300, 2))  # every other product: gaps in the ids
        kept = {vector.tobytes() for vector in vectors[1::2]}
        sample = image_sample(catalog, 100, 16)
        assert len(sample) == 100 and len({row.tobytes() for row in sample}) == 100
        assert {row.tobytes() for row in sample} <= kept
        assert np.array_equal(image_sample(catalog, 100, 16), sample)  # the same draw each time
        assert len(image_sample(catalog, 500, 16)) == 150  # fewer stored than asked: all of them
    finally:
        catalog.close()


def test_the_measurement_finds_at_each_breadth_what_the_served_search_finds(harder, tmp_path) -> None:
    """Each breadth is scored with every query in one statement (a LATERAL join): its top 10 are the
    served search's (``image_hits``, one statement per query) at that breadth, as sets."""
    from search.catalog.pgvector.search import image_hits, set_breadth
    from search.catalog.pgvector.tuning import search_ids

    url, held_out, _ = harder
    queries = held_out[:40]
    catalog = Catalog.open(url)
    try:
        serve(catalog, tmp_path, LISTS_128)  # the IVFFlat index over the 4,000 vectors
        found = {}
        for breadth in (1, 8, 128):
            batched = search_ids(catalog, queries, LISTS_128, 128, breadth)
            with catalog.connection() as connection:
                set_breadth(connection, LISTS_128, "index", breadth=breadth)
                served = [{hit.image for hit in image_hits(connection, q, 10, dim=128)} for q in queries]
            found[breadth] = [set(ids.tolist()) for ids in batched]
            assert found[breadth] == served, breadth
        assert found[1] != found[128]  # the breadth was applied to the batched statement
    finally:
        catalog.close()
