"""Index sync (search/catalog/sync.py) on a real SQLite catalog and real FAISS indexes: opening (no file,
a good file, a file newer than the database, an empty catalog), catching up with upserts and removals
made by "another process", a catch-up past pruned removals, the first vectors of an empty catalog, the
rebuild of an outgrown index in the open and in the background, and what is saved when."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select

from search.catalog import Catalog
from search.catalog.db import migrate
from search.catalog.records import ImageWrite, ProductWrite
from search.catalog.schema import Product, ProductImage
from search.catalog.sync import IndexSync, catalog_dim
from search.index import IndexSpec, VectorIndex
from search.index.tuning_queries import MIN_SERVED, RETUNE_AFTER

MODEL = "model-a"
DIM = 8
FLAT = IndexSpec(kind="flat")
# auto with a tiny exact limit: a flat index of 100 vectors or more is outgrown, a rebuild makes it IVF.
SMALL_AUTO = IndexSpec(kind="auto", exact_limit=100)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    url = f"sqlite:///{tmp_path / 'vitrine.db'}"
    migrate(url)
    catalog = Catalog.open(url)
    yield catalog
    catalog.close()


@pytest.fixture
def index_path(tmp_path: Path) -> Path:
    return tmp_path / "index" / "vectors.idx"


def vector(seed: int) -> np.ndarray:
    value = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return value / np.linalg.norm(value)


def write(catalog: Catalog, *seeds: int, model: str = MODEL) -> None:
    catalog.upsert(
        [
            ProductWrite(
                f"p{seed}", images=[ImageWrite(f"{seed}.png", embedding=vector(seed), embedding_model=model)]
            )
            for seed in seeds
        ]
    )


def vector_id(catalog: Catalog, seed: int) -> int:
    return catalog.embeddings(f"p{seed}")[0][0]


def contents(index: VectorIndex) -> dict[int, bytes]:
    """The index as {vector id: vector bytes}."""
    return {int(i): index.reconstruct(int(i)).tobytes() for i in index.ids()}


def expected(catalog: Catalog, *seeds: int) -> dict[int, bytes]:
    return {vector_id(catalog, seed): vector(seed).tobytes() for seed in seeds}


def sync_of(catalog: Catalog, index_path: Path, spec: IndexSpec = FLAT, **options) -> IndexSync:
    index_path.parent.mkdir(exist_ok=True)
    return IndexSync(catalog, model=MODEL, index_path=index_path, dim=None, spec=spec, **options)


# Opening ----------------------------------------------------------------------------------------------------


def test_the_dimension_comes_from_the_catalog_when_not_given(catalog, index_path):
    assert catalog_dim(catalog, MODEL) is None
    write(catalog, 1, model="model-b")
    assert catalog_dim(catalog, MODEL) is None
    write(catalog, 2)
    assert catalog_dim(catalog, MODEL) == DIM
    assert sync_of(catalog, index_path).dim == DIM
    given = IndexSync(catalog, model=MODEL, index_path=index_path, dim=16, spec=FLAT, load=False)
    assert given.dim == 16
    # load=False: an empty index of the given shape, model and spec, the file left as it is
    assert (given.index.dim, given.index.model, given.index.spec, given.index.revision) == (16, MODEL, FLAT, 0)


def test_an_empty_catalog_opens_an_empty_index_at_its_revision_without_a_warning(catalog, index_path, caplog):
    catalog.remove(["nothing"])  # revision 1, no image
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        sync = sync_of(catalog, index_path)
    assert (sync.dim, sync.index.dim, len(sync.index), sync.index.revision) == (None, 0, 0, 1)
    assert (sync.index.model, sync.index.spec) == (MODEL, FLAT)
    assert caplog.records == []
    sync.save()
    assert not index_path.exists()  # nothing to save without a dimension


def test_a_catalog_with_only_another_models_images_opens_without_a_warning(catalog, index_path, caplog):
    write(catalog, 1, model="model-b")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        sync = sync_of(catalog, index_path)
    assert caplog.records == []  # nothing of this model to lose: no file is expected yet
    assert (sync.dim, len(sync.index), sync.index.revision) == (None, 0, catalog.revision())


def test_no_index_file_builds_one_from_the_database_and_saves_it(catalog, index_path, caplog):
    write(catalog, 1, 2)
    write(catalog, 3, model="model-b")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        sync = sync_of(catalog, index_path)
    assert contents(sync.index) == expected(catalog, 1, 2)
    assert sync.index.revision == catalog.revision()
    assert [r.getMessage() for r in caplog.records] == [
        f"index file unusable (no index file at {index_path}); rebuilding it from the database"
    ]
    saved = sync.load_file()
    assert contents(saved) == expected(catalog, 1, 2)
    assert saved.revision == catalog.revision()


def test_a_saved_index_is_loaded_and_caught_up(catalog, index_path, caplog):
    write(catalog, 1, 2)
    sync_of(catalog, index_path)  # saves the file at this revision
    write(catalog, 3)
    catalog.remove(["p1"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        sync = sync_of(catalog, index_path)
    assert caplog.records == []  # loaded, not rebuilt
    assert contents(sync.index) == expected(catalog, 2, 3)
    assert sync.index.revision == catalog.revision()
    sync.save()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        again = sync_of(catalog, index_path)  # the file at the database's revision: loaded as it is
    assert caplog.records == []
    assert contents(again.index) == expected(catalog, 2, 3)


def test_an_index_file_newer_than_the_database_is_rebuilt(catalog, index_path, caplog):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    sync.index.revision = catalog.revision() + 5  # as if the database came from an older backup
    sync.save()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        reopened = sync_of(catalog, index_path)
    assert [r.getMessage() for r in caplog.records] == [
        "index file unusable (index file is newer than the database (restored from a backup?)); "
        "rebuilding it from the database"
    ]
    assert reopened.index.revision == catalog.revision()
    assert reopened.load_file().revision == catalog.revision()  # the rebuilt index was saved


def test_load_false_leaves_the_file_alone(catalog, index_path):
    write(catalog, 1)
    sync = sync_of(catalog, index_path, load=False)
    assert (sync.index.dim, len(sync.index), sync.index.revision, sync.index.model) == (DIM, 0, 0, MODEL)
    assert not index_path.exists()
    empty = sync.empty()
    assert (empty.dim, len(empty), empty.revision, empty.model, empty.spec) == (DIM, 0, 0, MODEL, FLAT)


def test_load_false_on_an_empty_catalog_has_no_dimension(catalog, index_path):
    sync = sync_of(catalog, index_path, load=False)
    assert (sync.index.dim, sync.empty().dim) == (0, 0)


# Catching up ------------------------------------------------------------------------------------------------


def test_refresh_applies_upserts_and_removals_made_elsewhere(catalog, index_path):
    write(catalog, 1, 2)
    sync = sync_of(catalog, index_path)
    before = sync.index
    assert sync.refresh() is before  # nothing changed: the same index
    write(catalog, 3)
    catalog.upsert(
        [ProductWrite("p2", images=[ImageWrite("2.png", embedding=vector(9), embedding_model=MODEL)])]
    )
    catalog.remove(["p1"])
    index = sync.refresh()
    assert contents(index) == {vector_id(catalog, 2): vector(9).tobytes(), **expected(catalog, 3)}
    assert index.revision == catalog.revision()


def test_apply_changes_with_nothing_new_returns_the_index_unchanged(catalog, index_path):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    index = sync.index
    assert sync.apply_changes(index) is index
    assert index.revision == catalog.revision()


def test_an_index_behind_pruned_removals_is_rebuilt(catalog, index_path, caplog):
    write(catalog, 1, 2)
    sync = sync_of(catalog, index_path)
    stale = sync.index
    catalog.remove(["p1"])
    write(catalog, 3)
    assert catalog.prune_removals(catalog.revision()) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.catalog.sync"):
        index = sync.apply_changes(stale)
    assert [r.getMessage() for r in caplog.records] == [
        "removals up to revision 3 were pruned; asked from 1: rebuilding the index from the database"
    ]
    assert contents(index) == expected(catalog, 2, 3)
    assert index.revision == catalog.revision()
    # A refresh rebuilds in memory: the file is written by checkpoints and saves, not by a search.
    assert sync.load_file().revision == stale.revision


def test_the_first_vectors_of_an_empty_catalog_fix_the_dimension(catalog, index_path):
    sync = sync_of(catalog, index_path)
    assert sync.index.dim == 0
    write(catalog, 1)
    index = sync.refresh()
    assert (sync.dim, index.dim, index.model, index.spec) == (DIM, DIM, MODEL, FLAT)
    assert contents(index) == expected(catalog, 1)
    assert index.revision == catalog.revision()
    sync.save()
    assert contents(sync.load_file()) == expected(catalog, 1)


def test_a_removal_only_change_moves_the_revision(catalog, index_path):
    write(catalog, 1, 2)
    sync = sync_of(catalog, index_path)
    catalog.remove(["p2"])
    index = sync.refresh()
    assert contents(index) == expected(catalog, 1)
    assert index.revision == catalog.revision()


# Saving, compacting, checkpoints ----------------------------------------------------------------------------


def test_compact_saves_then_prunes_the_removal_log_through_the_index(catalog, index_path):
    write(catalog, 1, 2, 3)
    sync = sync_of(catalog, index_path)
    catalog.remove(["p1", "p2"])
    assert sync.compact() == 2
    assert sync.load_file().revision == catalog.revision()
    assert contents(sync.load_file()) == expected(catalog, 3)


def test_checkpoint_catches_up_and_saves(catalog, index_path):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    write(catalog, 2)
    sync.checkpoint()
    saved = sync.load_file()
    assert contents(saved) == expected(catalog, 1, 2)
    assert saved.revision == catalog.revision()
    assert sync.query_log.path.exists() or len(sync.query_log) == 0


def test_checkpoint_rebuilds_an_outgrown_index_in_the_open(catalog, index_path):
    write(catalog, *range(1, 11))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    assert sync.index.kind == "flat"
    write(catalog, *range(11, 131))
    sync.checkpoint()
    assert sync.index.kind == "ivf"
    assert len(sync.index) == 130
    saved = sync.load_file()
    assert (saved.kind, len(saved), saved.revision) == ("ivf", 130, catalog.revision())


def test_the_kind_of_a_build_counts_only_this_models_images(catalog, index_path):
    write(catalog, *range(1, 61))
    write(catalog, *range(61, 121), model="model-b")  # 120 images in all, 60 of this model
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    assert (sync.index.kind, len(sync.index)) == ("flat", 60)  # under the exact limit of 100


def test_rebuild_returns_the_count_and_drops_parts_no_index_uses(catalog, index_path):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    first_parts = {p.name for p in index_path.parent.glob("*.f32")}
    assert sync.rebuild() == 130
    parts = {p.name for p in index_path.parent.glob("*.f32")}
    assert len(parts) == 1 and parts != first_parts  # the new generation only
    assert sync.load_file().revision == catalog.revision()


def test_tune_measures_and_saves(catalog, index_path):
    write(catalog, 1, 2)
    sync = sync_of(catalog, index_path)
    write(catalog, 3)
    facts = sync.tune()
    assert facts["vectors"] == 3
    assert facts["measured_recall_at_10"] == {"image_like": 1.0, "text_like": 1.0}
    assert sync.load_file().revision == catalog.revision()


# Rebuilding in the background -------------------------------------------------------------------------------


def test_an_outgrown_index_is_rebuilt_in_the_background_and_swapped_in(catalog, index_path, caplog):
    write(catalog, *range(1, 11))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, rebuild_in_background=True)
    write(catalog, *range(11, 131))
    current = sync.refresh()  # caught up at once; the rebuild starts in a thread
    assert current.kind == "flat" and len(current) == 130
    thread = sync._rebuild_thread
    assert thread is not None and thread.name == "vitrine-index-rebuild" and thread.daemon
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="search.catalog.sync"):
        thread.join(60)
    assert caplog.records[-1].getMessage().startswith("index rebuilt in the background: IVF,SQ8,IP")
    assert sync.index is not current
    assert (sync.index.kind, len(sync.index), sync.index.revision) == ("ivf", 130, catalog.revision())
    assert sync.load_file().kind == "ivf"


def test_without_background_rebuilds_refresh_only_catches_up(catalog, index_path):
    write(catalog, *range(1, 11))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    write(catalog, *range(11, 131))
    assert sync.refresh().kind == "flat"
    assert sync._rebuild_thread is None


def test_an_outgrown_index_file_is_rebuilt_in_the_background_on_open(catalog, index_path):
    write(catalog, *range(1, 131))
    sync_of(catalog, index_path, spec=IndexSpec(kind="flat")).save()  # a flat file of 130 vectors
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, rebuild_in_background=True)
    assert sync._rebuild_thread is not None
    sync._rebuild_thread.join(60)
    assert sync.index.kind == "ivf"


def test_one_background_rebuild_at_a_time(catalog, index_path, monkeypatch):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    release = threading.Event()
    build = sync._build
    monkeypatch.setattr(sync, "_build", lambda save: release.wait(30) and build(save))
    first = sync.start_background_rebuild()
    assert first is not None
    assert sync.start_background_rebuild() is None
    release.set()
    first.join(60)
    assert sync.start_background_rebuild() is not None
    sync._rebuild_thread.join(60)


def test_a_failed_background_rebuild_keeps_the_current_index(catalog, index_path, monkeypatch, caplog):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    current = sync.index

    def broken(save: bool) -> VectorIndex:
        raise RuntimeError("disk full")

    monkeypatch.setattr(sync, "_build", broken)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="search.catalog.sync"):
        sync.start_background_rebuild().join(60)
    assert sync.index is current
    assert [r.getMessage() for r in caplog.records] == [
        "background index rebuild failed; the previous index keeps serving"
    ]


def test_a_background_rebuild_catches_up_with_writes_made_while_it_built(catalog, index_path, monkeypatch):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    build = sync._build

    def slow_build(save: bool) -> VectorIndex:
        fresh = build(save)
        write(catalog, 2)  # lands after the build read the database
        return fresh

    monkeypatch.setattr(sync, "_build", slow_build)
    sync.start_background_rebuild().join(60)
    assert contents(sync.index) == expected(catalog, 1, 2)
    assert sync.index.revision == catalog.revision()
    assert contents(sync.load_file()) == expected(catalog, 1, 2)


def test_tune_measures_text_like_recall_on_the_logged_queries(catalog, index_path):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    assert sync.tune()["tuning_samples"]["text_source"] == "far proxies of catalog vectors"
    for seed in range(25):
        sync.query_log.add(vector(1000 + seed))
    assert sync.tune()["tuning_samples"] == {"image_like": 130, "text_like": 25, "text_source": "25 served queries"}
    given = np.stack([vector(2000 + seed) for seed in range(30)])
    assert sync.tune(given)["tuning_samples"]["text_like"] == 30
    assert sync.load_file().describe()["tuning_samples"]["text_like"] == 30  # saved with the index


def test_logged_queries_are_kept_beside_the_index_across_restarts(catalog, index_path):
    write(catalog, 1)
    sync = sync_of(catalog, index_path)
    sync.query_log.add(vector(77))
    sync.save()
    assert (index_path.parent / "vectors.idx.queries.npy").exists()
    again = sync_of(catalog, index_path)
    np.testing.assert_array_equal(again.query_log.sample(DIM), vector(77)[None])


# A bulk load --------------------------------------------------------------------------------------------------


def add_images(catalog: Catalog, seed: int, count: int) -> None:
    """``count`` more images of product ``p{seed}``, at its revision, written straight into the table (the
    catalog's writer would take minutes for the 50,000 a bulk load needs)."""
    with catalog.engine.begin() as connection:
        product_id, revision = connection.execute(
            select(Product.id, Product.revision).where(Product.external_id == f"p{seed}")
        ).one()
        embedding = vector(seed).tobytes()
        connection.execute(
            insert(ProductImage),
            [
                {
                    "product_id": product_id,
                    "position": position,
                    "image_ref": f"{seed}-{position}.png",
                    "embedding": embedding,
                    "embedding_dim": DIM,
                    "embedding_model": MODEL,
                    "revision": revision,
                }
                for position in range(1, count + 1)
            ],
        )


def test_more_than_50000_changed_images_are_read_by_a_fresh_build(catalog, index_path, caplog):
    write(catalog, 1)
    add_images(catalog, 1, 49_999)
    sync = sync_of(catalog, index_path, load=False)
    caplog.set_level(logging.INFO, logger="search.catalog.sync")
    # 50,000 changes: caught up from the change log, as any other.
    assert len(sync.apply_changes(sync.empty())) == 50_000
    assert "rebuilding" not in caplog.text
    write(catalog, 2)
    # One more: a fresh build streams them from the database instead, and says so.
    caught_up = sync.apply_changes(sync.empty())
    assert len(caught_up) == 50_001
    assert caught_up.revision == catalog.revision()
    assert [r.getMessage() for r in caplog.records] == [
        "50001 changed images: rebuilding the index from the database"
    ]
    assert not index_path.exists()  # built in memory for the catch-up, not saved


# Tuning on text-side queries ----------------------------------------------------------------------------------
# embed_texts stands for the text tower here (tests/unit/index/test_text_tuning.py runs the real one): a
# fixed vector per text, so what the index was tuned on shows in its saved facts.


def embed_texts(texts) -> np.ndarray:
    return np.stack([vector(10_000 + sum(map(ord, text))) for text in texts])


def write_titled(catalog: Catalog, count: int) -> None:
    catalog.upsert(
        [
            ProductWrite(
                f"p{seed}",
                title=f"{['red', 'oak', 'linen'][seed % 3]} item {seed}",
                category=f"shelf {seed % 5}",
                images=[ImageWrite(f"{seed}.png", embedding=vector(seed), embedding_model=MODEL)],
            )
            for seed in range(1, count + 1)
        ]
    )


def text_source(index: VectorIndex) -> str | None:
    return index.describe().get("tuning_samples", {}).get("text_source")


def test_a_build_with_the_text_tower_is_tuned_on_the_catalogs_titles(catalog, index_path, caplog):
    write_titled(catalog, 130)
    caplog.set_level(logging.INFO, logger="search.catalog.sync")
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, embed_texts=embed_texts)
    # Tuned by the build itself, not re-tuned after it as a guess would be.
    assert not [r for r in caplog.records if r.getMessage().startswith("index tuned on")]
    assert sync.index.kind == "ivf"
    facts = sync.index.describe()["tuning_samples"]
    # 130 titles and 5 categories: the 300-text sample holds all of them
    assert facts["text_source"] == "text tower: 135 catalog titles and categories"
    assert facts["text_like"] == 135
    assert text_source(sync.load_file()) == facts["text_source"]  # saved with the build


def test_a_catalog_without_titles_is_tuned_on_the_built_in_phrases(catalog, index_path):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, embed_texts=embed_texts)
    assert text_source(sync.index) == "text tower: 200 built-in product phrases"


def test_given_queries_are_named_by_their_count(catalog, index_path):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    given = np.stack([vector(2000 + seed) for seed in range(30)])
    assert sync.tune(given)["tuning_samples"]["text_source"] == "30 given queries"


def test_an_index_tuned_on_far_proxies_is_re_tuned_once_the_text_tower_is_loaded(catalog, index_path, caplog):
    write(catalog, *range(1, 131))
    built = sync_of(catalog, index_path, spec=SMALL_AUTO).index  # no model: `indexer import`
    assert text_source(built) == "far proxies of catalog vectors"
    caplog.set_level(logging.INFO, logger="search.catalog.sync")
    caplog.clear()
    opened = sync_of(catalog, index_path, spec=SMALL_AUTO, embed_texts=embed_texts).index
    assert opened.parts() == built.parts()  # loaded from its file and re-tuned, not rebuilt
    assert text_source(opened) == "text tower: 200 built-in product phrases"
    assert text_source(sync_of(catalog, index_path, spec=SMALL_AUTO).load_file()) == text_source(opened)
    recall = opened.describe()["measured_recall_at_10"]
    assert [r.getMessage() for r in caplog.records] == [
        f"index tuned on text tower: 200 built-in product phrases: {recall}"
    ]
    # Opened again: already measured on text-side queries, so left as it is.
    caplog.clear()
    sync_of(catalog, index_path, spec=SMALL_AUTO, embed_texts=embed_texts)
    assert caplog.records == []


def test_an_exact_index_is_never_tuned(catalog, index_path):
    write(catalog, *range(1, 11))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, embed_texts=embed_texts, rebuild_in_background=True)
    assert sync.index.kind == "flat" and text_source(sync.index) is None
    for seed in range(MIN_SERVED):
        sync.query_log.add(vector(3000 + seed))
    sync.refresh()
    assert sync._retune_thread is None and text_source(sync.index) is None


def log_served(sync: IndexSync, count: int, seed: int = 3000) -> None:
    for offset in range(count):
        sync.query_log.add(vector(seed + offset))


def test_a_server_re_tunes_in_the_background_once_enough_queries_are_served(catalog, index_path, caplog):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, rebuild_in_background=True)
    log_served(sync, MIN_SERVED - 1)
    sync.refresh()
    assert sync._retune_thread is None  # 199 logged: not enough to measure on
    log_served(sync, 1, seed=9000)
    sync.refresh()
    thread = sync._retune_thread
    assert thread is not None and thread.name == "vitrine-index-retune" and thread.daemon
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="search.catalog.sync"):
        thread.join(60)
    recall = sync.index.describe()["measured_recall_at_10"]
    assert [r.getMessage() for r in caplog.records] == [f"index re-tuned on {MIN_SERVED} served queries: {recall}"]
    assert text_source(sync.index) == f"{MIN_SERVED} served queries"
    assert text_source(sync.load_file()) == f"{MIN_SERVED} served queries"  # saved
    # The next re-tune waits for RETUNE_AFTER more queries, not for the same ones again.
    sync.refresh()
    assert sync._retune_thread is thread
    log_served(sync, RETUNE_AFTER, seed=20_000)
    sync.refresh()
    assert sync._retune_thread is not thread
    sync._retune_thread.join(60)


def test_a_batch_job_never_re_tunes_in_the_background(catalog, index_path):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO)
    log_served(sync, MIN_SERVED)
    sync.refresh()
    assert sync._retune_thread is None
    assert text_source(sync.index) == "far proxies of catalog vectors"


def test_one_re_tune_at_a_time(catalog, index_path, monkeypatch):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, rebuild_in_background=True)
    release = threading.Event()
    tune = sync.index.tune
    monkeypatch.setattr(sync.index, "tune", lambda *args: release.wait(30) and tune(*args))
    log_served(sync, MIN_SERVED)
    sync.refresh()
    first = sync._retune_thread
    log_served(sync, RETUNE_AFTER, seed=20_000)  # due again while the first still runs
    sync.refresh()
    assert sync._retune_thread is first
    release.set()
    first.join(60)


def test_a_failed_re_tune_keeps_the_probe_count(catalog, index_path, monkeypatch, caplog):
    write(catalog, *range(1, 131))
    sync = sync_of(catalog, index_path, spec=SMALL_AUTO, rebuild_in_background=True)
    before = sync.index.describe()

    def broken(*args) -> dict:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sync.index, "tune", broken)
    log_served(sync, MIN_SERVED)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="search.catalog.sync"):
        sync.refresh()
        sync._retune_thread.join(60)
    assert [r.getMessage() for r in caplog.records] == [
        "background re-tune failed; the index keeps its probe count"
    ]
    assert sync.index.describe() == before
