"""The approximate IVF-SQ8 index: recall against exact search for image-like and text-like (far) queries,
changes visible before a rebuild, filtered search, files, background rebuild and a failing rebuild."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.db import migrate
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.images.store import ImageStore
from search.index import IndexFileError, IndexSpec, VectorIndex
from search.index.tuning import exact_top_k, recall_at_k
from search.wiring import build_products
from tests.support.paths import REPO_ROOT

DIM = 48
IVF = IndexSpec(kind="ivf", recall_target=0.95)


def gap_catalog(count: int, seed: int = 0, clusters: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image-like vectors, their cluster labels, text-like queries) with a modality gap: images share a
    mean direction, texts another one, and a text's best image has a cosine of about 0.1-0.2."""
    mixture = np.random.default_rng(1234)
    basis, _ = np.linalg.qr(mixture.standard_normal((DIM, 18)))
    semantic_basis, g_img, g_txt = basis[:, :16].T, basis[:, 16], basis[:, 17]
    centres = mixture.standard_normal((clusters, 16))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, count)
    semantic = centres[labels] + 0.6 * rng.standard_normal((count, 16))
    semantic /= np.linalg.norm(semantic, axis=1, keepdims=True)
    images = (
        0.8 * g_img + 0.5 * semantic @ semantic_basis + 0.3 * rng.standard_normal((count, DIM)) / np.sqrt(DIM)
    )
    text_semantic = centres[rng.integers(0, clusters, 400)] + 1.5 * rng.standard_normal((400, 16))
    text_semantic /= np.linalg.norm(text_semantic, axis=1, keepdims=True)
    texts = (
        0.85 * g_txt
        + 0.3 * text_semantic @ semantic_basis
        + 0.43 * rng.standard_normal((400, DIM)) / np.sqrt(DIM)
    )
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(images), labels, unit(texts)


def batches(vectors: np.ndarray, first_id: int = 1, size: int = 1000):
    for start in range(0, len(vectors), size):
        chunk = vectors[start : start + size]
        yield np.arange(first_id + start, first_id + start + len(chunk)), chunk


@pytest.fixture(scope="module")
def catalog_vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return gap_catalog(6000)


@pytest.fixture(scope="module")
def ivf_index(catalog_vectors, tmp_path_factory) -> VectorIndex:
    vectors, _, texts = catalog_vectors
    path = tmp_path_factory.mktemp("ivf") / "products.faiss"
    # Tuned on served text queries (the first 200); measured below on the other 200.
    return VectorIndex.build(
        DIM, "m", 1, IVF, batches(vectors), count=len(vectors), path=path, text_samples=texts[:200]
    )


def measured_recall(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, **kwargs) -> float:
    truth = exact_top_k(batches(vectors), queries, 10)
    found = [np.array([hit.id for hit in index.search(query, 10, **kwargs)]) for query in queries]
    return recall_at_k(found, truth)


def test_ivf_reaches_the_recall_target_for_text_like_and_image_like_queries(ivf_index, catalog_vectors):
    vectors, _, texts = catalog_vectors
    assert ivf_index.kind == "ivf"
    facts = ivf_index.describe()
    assert facts["nprobe"] < facts["nlist"], "tuning chose a probe count below a full scan"
    assert facts["measured_recall_at_10"]["text_like"] >= IVF.recall_target
    held_out_texts = texts[200:]
    image_queries = gap_catalog(200, seed=7)[0]
    assert measured_recall(ivf_index, vectors, held_out_texts) >= IVF.recall_target
    assert measured_recall(ivf_index, vectors, image_queries) >= 0.99
    # The scores are exact cosines (re-scored from the float32 rows), not quantised ones.
    hit = ivf_index.search(vectors[41], 1)[0]
    assert hit.id == 42 and abs(hit.score - 1.0) < 1e-5


@pytest.mark.parametrize("exact_limit", [2_000, 10], ids=["exact scan of allowed rows", "IVF with selector"])
def test_filtered_search_returns_only_allowed_ids_selective_and_broad(
    ivf_index, catalog_vectors, monkeypatch, exact_limit
):
    # Small catalogs' filters fit the exact scan; a lower limit sends them through the IVF paths that
    # a million-vector catalog uses (all lists for a selective filter, more probes for a broad one).
    monkeypatch.setattr("search.index.ivf.EXACT_FILTER_LIMIT", exact_limit)
    vectors, _, texts = catalog_vectors
    for share in (0.01, 0.3):
        allowed = np.flatnonzero(np.random.default_rng(3).random(len(vectors)) < share) + 1
        allowed_set = set(allowed.tolist())
        for query in texts[200:230]:
            hits = ivf_index.search(query, 10, allowed_ids=allowed)
            assert len(hits) == 10 and {hit.id for hit in hits} <= allowed_set
        restricted = vectors[allowed - 1]
        truth = exact_top_k([(allowed, restricted)], texts[200:300], 10)
        found = [
            np.array([h.id for h in ivf_index.search(q, 10, allowed_ids=allowed)]) for q in texts[200:300]
        ]
        assert recall_at_k(found, truth) >= IVF.recall_target, share


def test_adds_and_removes_are_visible_before_a_rebuild(catalog_vectors, tmp_path):
    vectors = catalog_vectors[0]
    path = tmp_path / "products.faiss"
    index = VectorIndex.build(DIM, "m", 1, IVF, batches(vectors[:3000]), count=3000, path=path)
    new_vector = vectors[4000]
    index.upsert(np.array([99_999]), new_vector[None])
    assert index.search(new_vector, 1)[0].id == 99_999
    index.upsert(np.array([7]), vectors[4001][None])  # a replaced vector: its old version is gone
    assert index.search(vectors[6], 3)[0].id != 7
    assert index.search(vectors[4001], 1)[0].id == 7
    assert index.remove([8, 99_999, 123_456]) == 2
    assert 8 not in [hit.id for hit in index.search(vectors[7], 10)]
    assert index.reconstruct(8) is None and index.reconstruct(99_999) is None
    assert len(index) == 2999 and sorted(index.ids().tolist()) == sorted({*range(1, 3001)} - {8})
    hits = index.search(vectors[9], 5, excluded_ids=[10])
    assert 10 not in [hit.id for hit in hits]
    # The changes survive a save and load (deletion marks and side index are in the file).
    index.save(path)
    loaded = VectorIndex.load(path, model="m", dim=DIM, spec=IVF)
    assert loaded.kind == "ivf" and len(loaded) == 2999 and loaded.reconstruct(8) is None
    np.testing.assert_array_equal(loaded.reconstruct(7), vectors[4001])
    assert loaded.describe()["nprobe"] == index.describe()["nprobe"]


def test_a_damaged_ivf_part_is_detected_before_faiss_reads_it(catalog_vectors, tmp_path):
    vectors, _, _ = catalog_vectors
    path = tmp_path / "products.faiss"
    VectorIndex.build(DIM, "m", 1, IVF, batches(vectors[:2000]), count=2000, path=path).save(path)
    (part,) = tmp_path.glob("products.faiss.*.f32")
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        VectorIndex.load(path, model="m", dim=DIM, spec=IVF)


# Through the product service: auto kind, background rebuild, a failing rebuild ---------------------------


def nearest(service: ProductService, vector: np.ndarray, k: int, filters: dict | None = None) -> list[str]:
    """Product ids of a vector search through the service, as the API runs it."""
    query = SearchQuery([Example(vector=tuple(vector))], filters=Filters.parse(filters, 100), k=k)
    return [hit.record.external_id for hit in service.search(query).hits]


def add_products(catalog: Catalog, vectors: np.ndarray, first_id: int = 1) -> None:
    """Products p{first_id}... with one image each, a category and two attributes to filter on."""
    for ids, chunk in batches(vectors, first_id):
        catalog.upsert(
            [
                ProductWrite(
                    external_id=f"p{i}",
                    category="even" if i % 2 == 0 else "odd",
                    # tier "a": 30% of the catalog (a broad filter); shelf: 2% each (a selective one)
                    attributes={"tier": "a" if i % 10 < 3 else "b", "shelf": f"s{i % 50}"},
                    images=[ImageWrite("", embedding=vector, embedding_model="m")],
                )
                for i, vector in zip(ids, chunk, strict=True)
            ]
        )


@pytest.fixture(scope="module")
def catalog_file(catalog_vectors, tmp_path_factory) -> Callable[[int], Path]:
    """``catalog_file(n)``: a SQLite catalog of the first n vectors as products p1..pn, written once per
    module (3,000 products take seconds to write) and copied by each test that opens it."""
    vectors = catalog_vectors[0]
    written: dict[int, Path] = {}

    def database(count: int) -> Path:
        if count not in written:
            path = tmp_path_factory.mktemp(f"catalog-{count}") / "vitrine.db"
            smaller = max((n for n in written if n < count), default=0)
            if smaller:
                shutil.copyfile(written[smaller], path)
            else:
                migrate(f"sqlite:///{path}")
            catalog = Catalog.open(f"sqlite:///{path}")
            add_products(catalog, vectors[smaller:count], first_id=smaller + 1)
            catalog.close()  # the last connection closed: the WAL is folded into the file
            written[count] = path
        return written[count]

    return database


def service_with_catalog(tmp_path: Path, database: Path, **spec: object) -> ProductService:
    """The product service, as the API builds it, on a private copy of ``database``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, tmp_path / "vitrine.db")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'vitrine.db'}")
    return build_products(
        catalog,
        model="m",
        index_path=tmp_path / "index" / "products.faiss",
        image_store=ImageStore(tmp_path / "images"),
        index_spec=IndexSpec(kind="auto", **spec),
        rebuild_in_background=True,
    )


@pytest.fixture(scope="module")
def served_3000(catalog_file, tmp_path_factory) -> Path:
    """A folder as a server leaves it after opening ``catalog_file(3000)`` with ``exact_limit=1000``: the
    catalog and the IVF index ``auto`` built for it (about 0.5 s of CPU each time). Built once per module;
    each test opens a private copy with ``served_copy`` (loaded from its file, as after a restart)."""
    root = tmp_path_factory.mktemp("served-3000")
    service = service_with_catalog(root, catalog_file(3000), exact_limit=1000)
    assert service.index.kind == "ivf"
    service.catalog.close()  # the last connection closed: the WAL is folded into the file
    return root


def served_copy(tmp_path: Path, served: Path) -> ProductService:
    """The product service, as the API opens it, on a private copy of a ``served_3000`` folder."""
    shutil.copytree(served, tmp_path, dirs_exist_ok=True)
    service = build_products(
        Catalog.open(f"sqlite:///{tmp_path / 'vitrine.db'}"),
        model="m",
        index_path=tmp_path / "index" / "products.faiss",
        image_store=ImageStore(tmp_path / "images"),
        index_spec=IndexSpec(kind="auto", exact_limit=1000),
        rebuild_in_background=True,
    )
    index_file = Path("index") / "products.faiss"
    assert (tmp_path / index_file).read_bytes() == (served / index_file).read_bytes()  # loaded, not rebuilt
    return service


def test_auto_is_exact_for_a_small_catalog_and_ivf_past_the_limit(
    catalog_vectors, catalog_file, served_3000, tmp_path
):
    vectors, _, _ = catalog_vectors
    small = service_with_catalog(tmp_path / "small", catalog_file(500), exact_limit=1000)
    assert small.index.kind == "flat"
    large = served_copy(tmp_path / "large", served_3000)  # built by auto with exact_limit=1000
    assert large.index.kind == "ivf"
    assert large.stats()["index"]["kind"] == "ivf"
    hits = nearest(large, vectors[10], 5, {"category": "even"})
    assert hits and all(int(hit[1:]) % 2 == 0 for hit in hits)


def test_background_rebuild_folds_changes_in_and_searches_keep_working(
    catalog_vectors, served_3000, tmp_path
):
    vectors, _, _ = catalog_vectors
    service = served_copy(tmp_path, served_3000)
    before = service.index
    service.catalog.upsert(
        [
            ProductWrite(
                external_id=f"new{i}",
                images=[ImageWrite("", embedding=vectors[3000 + i], embedding_model="m")],
            )
            for i in range(1200)
        ]
    )
    service.refresh()  # visible at once (side index), and big enough to start a rebuild
    assert nearest(service, vectors[3005], 1)[0] == "new5"
    thread = service.sync._rebuild_thread
    assert thread is not None
    while thread.is_alive():  # searches run while the rebuild does
        assert nearest(service, vectors[3006], 1)[0] == "new6"
        thread.join(0.05)
    assert service.index is not before and service.index.describe()["side_index_vectors"] == 0
    assert len(service.index) == 4200
    assert service.verify().ok
    parts = sorted(
        p.name for p in (tmp_path / "index").glob("products.faiss.*.*") if p.suffix in (".f32", ".ivf")
    )
    assert len(parts) == 2, parts  # the old generation's parts were deleted


def test_a_failing_rebuild_leaves_the_previous_index_serving(
    catalog_vectors, served_3000, tmp_path, monkeypatch
):
    vectors, _, _ = catalog_vectors
    service = served_copy(tmp_path, served_3000)
    path = service.index_path
    saved = path.read_bytes()
    serving = service.index

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    # The failure strikes after the new parts are written, just before the index file's rename.
    monkeypatch.setattr("search.index.vector_index.write_state", disk_full)
    thread = service.start_background_rebuild()
    thread.join()
    assert service.index is serving
    assert nearest(service, vectors[20], 1)[0] == "p21"
    assert path.read_bytes() == saved
    monkeypatch.undo()
    reloaded = VectorIndex.load(path, model="m", dim=DIM, spec=service.index_spec)
    assert reloaded.kind == "ivf" and len(reloaded) == 3000
    assert reloaded.search(vectors[20], 1)[0].id == 21
    assert threading.active_count() >= 1


def test_broad_filters_are_checked_on_the_hits_and_keep_the_recall_target(
    catalog_vectors, catalog_file, tmp_path
):
    """A 30% filter is checked in SQL on the nearest hits (its ids are never listed), a 2% one lists
    its ids; either way only allowed products come back, at the recall target against exact search."""
    vectors, _, texts = catalog_vectors
    service = service_with_catalog(tmp_path, catalog_file(4000), exact_limit=1000)
    assert service.index.kind == "ivf"
    listed: list[int] = []
    list_ids = service.catalog.image_ids

    def counting(where: object) -> np.ndarray:
        ids = list_ids(where)
        listed.append(len(ids))
        return ids

    service.catalog.image_ids = counting  # type: ignore[method-assign]
    ids = np.arange(1, 4001)
    for filters, allows, lists in (
        ({"tier": "a"}, ids % 10 < 3, False),
        ({"shelf": "s7"}, ids % 50 == 7, True),
        ({"tier": {"not": "b"}, "category": "even"}, (ids % 10 < 3) & (ids % 2 == 0), False),
    ):
        queries = texts[200:260]
        truth = exact_top_k([(ids[allows], vectors[:4000][allows])], queries, 10)
        listed.clear()
        found = [np.array([int(hit[1:]) for hit in nearest(service, q, 10, filters)]) for q in queries]
        assert all(allows[hits - 1].all() and len(hits) == 10 for hits in found), filters
        assert recall_at_k(found, truth) >= 0.95, filters
        assert bool(listed) == lists, (filters, listed)


CRASHING_REBUILD = """
import sys, time
from pathlib import Path
from search.catalog import Catalog
from search.catalog.service import ProductService
from search.wiring import build_products
from search.images.store import ImageStore
from search.index import IndexSpec
from search.index import ivf

root, stage = Path(sys.argv[1]), sys.argv[2]
marker = root / "inside-the-build"

def stop_here():
    marker.write_text(stage)
    time.sleep(120)  # killed here with SIGKILL

if stage == "writing rows":  # a part file half written (its temp file)
    rows = Catalog.iter_embeddings
    def slow_rows(self, model, batch=50_000):
        for count, chunk in enumerate(rows(self, model, batch=500)):
            yield chunk
            if count == 2:
                stop_here()
    Catalog.iter_embeddings = slow_rows
else:  # "tuning": the new parts complete on disk, the index file not yet renamed
    tune = ivf.IvfStore.tune
    def slow_tune(self, *args, **kwargs):
        stop_here()
    ivf.IvfStore.tune = slow_tune

service = build_products(
    Catalog.open(f"sqlite:///{root / 'vitrine.db'}"),
    model="m",
    index_path=root / "index" / "products.faiss",
    image_store=ImageStore(root / "images"),
    index_spec=IndexSpec(kind="auto", exact_limit=1000),
)
service.rebuild()
"""


@pytest.mark.e2e  # a build process of its own, killed
@pytest.mark.parametrize("stage", ["writing rows", "tuning"])
def test_a_rebuild_killed_mid_build_leaves_the_previous_index_serving(
    catalog_vectors, served_3000, tmp_path, stage
):
    """A real crash: a process rebuilding the index gets SIGKILL inside the build (part files half or
    fully written, the index file not renamed); the catalog then opens on the previous index."""
    vectors, _, _ = catalog_vectors
    service = served_copy(tmp_path, served_3000)
    path = service.index_path
    saved, parts = path.read_bytes(), service.index.parts()
    service.catalog.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_REBUILD, str(tmp_path), stage], env=env, stderr=subprocess.PIPE
    )
    marker = tmp_path / "inside-the-build"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the rebuild never reached the crash point"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    left = {p.name for p in path.parent.iterdir()} - {path.name} - {path.name + s for s in parts}
    left -= {path.name + ".queries.npy"}
    # What the killed build left: a temp file, or complete parts of a generation no index file names.
    assert left, "the crash should have left the new build's files behind"
    assert path.read_bytes() == saved

    reopened = build_products(
        Catalog.open(f"sqlite:///{tmp_path / 'vitrine.db'}"),
        model="m",
        index_path=path,
        image_store=ImageStore(tmp_path / "images"),
        index_spec=IndexSpec(kind="auto", exact_limit=1000),
    )
    assert reopened.index.kind == "ivf" and reopened.index.parts() == parts
    assert path.read_bytes() == saved  # loaded, not rebuilt
    assert nearest(reopened, vectors[20], 1)[0] == "p21"
    assert reopened.verify().ok
    reopened.rebuild()  # the next rebuild clears the dead build's parts
    assert not any(p.suffix in (".f32", ".ivf") and p.name in left for p in path.parent.iterdir())


def near_copies(vectors: np.ndarray, every: int, seed: int) -> np.ndarray:
    """``vectors`` with every ``every``-th one replaced by a near copy (cosine 0.97-0.995) of the one before."""
    rng = np.random.default_rng(seed)
    out = vectors.copy()
    for i in range(every, len(out), every):
        noise = rng.standard_normal(DIM).astype(np.float32)
        noise -= (noise @ out[i - 1]) * out[i - 1]
        noise /= np.linalg.norm(noise)
        cosine = rng.uniform(0.97, 0.995)
        out[i] = cosine * out[i - 1] + np.sqrt(1 - cosine**2) * noise
    return out


def exact_pairs(ids: np.ndarray, vectors: np.ndarray, cut: float) -> set[tuple[int, int]]:
    gram = vectors @ vectors.T
    left, right = np.nonzero(np.triu(gram >= cut, 1))
    return {(int(ids[a]), int(ids[b])) for a, b in zip(left, right, strict=True)}


def test_near_pairs_by_a_self_join_of_the_lists_find_every_close_pair(catalog_vectors, tmp_path):
    """The whole-catalog duplicate pass on IVF joins each list with its boundary visitors: every pair
    above the cut is found with its exact score, changes since the build included."""
    vectors = near_copies(catalog_vectors[0][:4000], every=20, seed=5)
    path = tmp_path / "products.faiss"
    index = VectorIndex.build(DIM, "m", 1, IVF, batches(vectors), count=len(vectors), path=path)
    extra = near_copies(np.concatenate([vectors[:50], gap_catalog(50, seed=9)[0]]), every=10, seed=6)[50:]
    index.upsert(np.arange(5001, 5051), extra)  # the side index
    index.remove(np.arange(1, 41))  # dead marks
    ids = np.concatenate([np.arange(41, 4001), np.arange(5001, 5051)])
    live = np.concatenate([vectors[40:], extra])
    truth = exact_pairs(ids, live, 0.96)
    assert len(truth) >= 190  # the planted copies, and whatever else is that close
    found: dict[tuple[int, int], float] = {}
    for left, right, scores in index.near_pairs(0.96):
        for a, b, score in zip(left.tolist(), right.tolist(), scores.tolist(), strict=True):
            found[(min(a, b), max(a, b))] = score
    assert set(found) == truth
    by_id = dict(zip(ids.tolist(), live, strict=True))
    assert all(abs(score - float(by_id[a] @ by_id[b])) < 1e-5 for (a, b), score in found.items())
