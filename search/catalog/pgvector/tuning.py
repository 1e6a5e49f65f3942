"""The pgvector index's search breadth (IVFFlat probes, HNSW ef_search) chosen by measured recall@10, as
the FAISS IVF's probe count is (search.index.tuning): on a sample of the catalog's own vectors
(image-like queries) and on text-side queries (search.index.tuning_queries: served queries, the text
tower on the catalog's titles, far proxies when no model is loaded), the smallest breadth whose 99%
lower bound reaches the target on both.

Exact answers come from one numpy pass over the stored float32 vectors; each breadth is measured by the
index scan a served search runs (``image_hits``), for every query in one statement. The result is
stored in the catalog's database (``image_vectors_tuning``), so every replica serves the breadth one of
them measured, and it holds for the vector index it was measured on while the catalog stays within 2x
of the size it had then.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text

from search.catalog.pgvector.search import image_hits, set_breadth
from search.catalog.pgvector.table import TABLE, VECTORS, PgVectorSpec, vector_text
from search.catalog.records import bytes_to_vector
from search.catalog.schema import ProductImage
from search.catalog.store import Catalog
from search.index import tuning
from search.index.ivf import TEXT_QUERIES
from search.index.tuning_queries import TextQueries

TUNING_TABLE = "image_vectors_tuning"
LOCK_KEY = 0x76697472 + 2  # pg_try_advisory_lock: one process measures at a time ("vitr" + 2)
IMAGE_QUERIES = 200
K = 10
TIMED_QUERIES = 50  # text-like queries timed one by one, as served, at the chosen breadth
# hnsw.ef_search steps (pgvector caps it at 1000).
EF_LADDER = (40, 64, 100, 160, 250, 400, 600, 1000)
# A stored measurement holds while the catalog has between 1/SIZE_DRIFT and SIZE_DRIFT times the vectors
# it was measured on (IVFFlat's lists are fixed at the build: more rows fill the same lists).
SIZE_DRIFT = 2.0


@dataclass(frozen=True)
class Tuning:
    """A measured breadth and the facts behind it (what /info reports)."""

    breadth: int  # ivfflat.probes or hnsw.ef_search
    definition: str  # the vector index it was measured on
    vectors: int  # the catalog's size then
    recall: dict[str, float]  # mean recall@10 at ``breadth`` by sample
    samples: dict[str, Any]  # sample sizes and the text side's source
    table: dict[str, dict[str, float]] = field(default_factory=dict)  # recall by breadth measured
    p50_ms: float = 0.0  # median text-like query at ``breadth`` (TIMED_QUERIES of them, as served)
    seconds: float = 0.0  # the measurement's wall time

    def fits(self, definition: str | None, size: int) -> bool:
        """Whether this measurement holds for the index ``definition`` over ``size`` vectors."""
        return (
            definition == self.definition
            and size > 0
            and self.vectors / SIZE_DRIFT <= size <= self.vectors * SIZE_DRIFT
        )

    @property
    def text_source(self) -> str:
        return str(self.samples.get("text_source", ""))


def ladder(spec: PgVectorSpec, lists: int | None) -> list[int]:
    if spec.index == "hnsw":
        return list(EF_LADDER)
    lists = max(1, lists or 1)
    return [p for p in tuning.PROBE_LADDER if p < lists] + [lists]


# Stored -------------------------------------------------------------------------------------------------


def load(connection: Connection) -> Tuning | None:
    """The stored measurement, or None (none yet, or an unreadable one: measured again)."""
    if connection.scalar(text("SELECT to_regclass(:t)"), {"t": TUNING_TABLE}) is None:
        return None
    raw = connection.scalar(text(f"SELECT facts FROM {TUNING_TABLE} WHERE name = :n"), {"n": TABLE})
    try:
        return Tuning(**json.loads(raw)) if raw else None
    except (TypeError, ValueError):
        return None


def save(engine: Engine, measured: Tuning) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(f"CREATE TABLE IF NOT EXISTS {TUNING_TABLE} (name text PRIMARY KEY, facts text NOT NULL)")
        )
        connection.execute(
            text(
                f"INSERT INTO {TUNING_TABLE} (name, facts) VALUES (:n, :f) "
                "ON CONFLICT (name) DO UPDATE SET facts = EXCLUDED.facts"
            ),
            {"n": TABLE, "f": json.dumps(asdict(measured))},
        )


@contextlib.contextmanager
def one_at_a_time(engine: Engine) -> Iterator[bool]:
    """Whether this process holds the tuning lock for the block: False while another process measures
    (the caller then serves its current breadth and reads the other's result later)."""
    with engine.connect() as connection:
        held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}))
        try:
            yield held
        finally:
            if held:  # a session lock: the pooled connection outlives the block
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})


# Measuring -----------------------------------------------------------------------------------------------


def measure(
    catalog: Catalog,
    *,
    space: str,
    dim: int,
    spec: PgVectorSpec,
    definition: str,
    lists: int | None,
    size: int,
    text_queries: TextQueries,
    target: float,
) -> Tuning:
    """Recall@10 of the index by breadth against exact search; the smallest breadth that surely (99%
    lower bound) reaches ``target`` on image-like and text-like samples, found by bisection over the
    ladder (recall grows with the breadth: more lists or a wider beam see a superset)."""
    started = time.monotonic()
    images = image_sample(catalog, IMAGE_QUERIES, dim)
    if text_queries.vectors is not None and len(text_queries.vectors) >= 20:
        chosen = np.random.default_rng(1).choice(
            len(text_queries.vectors), min(TEXT_QUERIES, len(text_queries.vectors)), replace=False
        )
        texts, source = np.ascontiguousarray(text_queries.vectors[chosen], np.float32), text_queries.source
    else:
        texts, source = tuning.far_proxies(images), "far proxies of catalog vectors"
    both = np.concatenate([images, texts])
    truth = tuning.exact_top_k(catalog.iter_embeddings(space), both, K)
    samples = {
        "image_like": (images, truth[: len(images)]),
        "text_like": (texts, truth[len(images) :]),
    }
    table: dict[str, dict[str, float]] = {}

    def reaches(breadth: int) -> bool:
        per_query = {}
        for name, (queries, exact) in samples.items():
            per_query[name] = tuning.recall_per_query(search_ids(catalog, queries, spec, dim, breadth), exact)
        table[str(breadth)] = {name: round(float(v.mean()), 4) for name, v in per_query.items()}
        return all(tuning.lower_bound(v) >= target for v in per_query.values())

    # Bisection for the first step that reaches; the last step (every list: the costliest to measure,
    # about an exact scan) is assumed to and measured only if it is the answer.
    steps = ladder(spec, lists)
    low, high = 0, len(steps) - 1
    while low < high:
        middle = (low + high) // 2
        if reaches(steps[middle]):
            high = middle
        else:
            low = middle + 1
    chosen_breadth = steps[high]
    if str(chosen_breadth) not in table:
        reaches(chosen_breadth)
    return Tuning(
        breadth=chosen_breadth,
        definition=definition,
        vectors=size,
        recall=table[str(chosen_breadth)],
        samples={"image_like": len(images), "text_like": len(texts), "text_source": source},
        table=dict(sorted(table.items(), key=lambda item: int(item[0]))),
        p50_ms=round(served_p50_ms(catalog, texts[:TIMED_QUERIES], spec, dim, chosen_breadth), 2),
        seconds=round(time.monotonic() - started, 1),
    )


def image_sample(catalog: Catalog, count: int, dim: int) -> np.ndarray:
    """Up to ``count`` stored vectors of the table, the same ones each time: ids drawn at random between
    the smallest and the largest (seeded), looked up by the primary key (no scan of the table), drawn
    again while gaps leave too few."""
    rng = np.random.default_rng(0)
    found: list[int] = []
    with catalog.connection() as connection:
        low, high = connection.execute(
            select(func.min(VECTORS.c.image_id), func.max(VECTORS.c.image_id))
        ).one()
        if low is None:
            return np.zeros((0, dim), np.float32)
        span = int(high) - int(low) + 1
        for _ in range(8):  # each round asks for 4x what is missing
            drawn = rng.integers(int(low), int(high) + 1, 4 * (count - len(found)))
            wanted = list(dict.fromkeys(int(i) for i in drawn))
            ids = set(connection.scalars(select(VECTORS.c.image_id).where(VECTORS.c.image_id.in_(wanted))))
            fresh = [i for i in wanted if i in ids and i not in found]  # in the drawn order
            found.extend(fresh[: count - len(found)])
            if len(found) >= count or span <= count:
                break
        blobs = connection.scalars(
            select(ProductImage.embedding).where(ProductImage.id.in_(found)).order_by(ProductImage.id)
        ).all()
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.stack([bytes_to_vector(blob) for blob in blobs]).astype(np.float32)


def search_ids(
    catalog: Catalog, queries: np.ndarray, spec: PgVectorSpec, dim: int, breadth: int
) -> list[np.ndarray]:
    """Each query's top-10 image ids as a served unfiltered search finds them at ``breadth``: the served
    statement's index scan (``ORDER BY embedding <=> q LIMIT 10``, the same plan), run for every query
    in one statement through a LATERAL join instead of one round trip each: 2-3.5x faster at small
    breadths, where the round trips are most of the time, and 0.8x near an exact scan
    (bench/bench_pgvector_measure.py)."""
    statement = text(
        f"SELECT q.n, hits.image_id "
        f"FROM unnest(CAST(:queries AS halfvec({int(dim)})[])) WITH ORDINALITY AS q(v, n) "
        f"CROSS JOIN LATERAL (SELECT image_id FROM {TABLE} ORDER BY embedding <=> q.v LIMIT {K}) AS hits"
    )
    found: list[list[int]] = [[] for _ in queries]
    with catalog.connection() as connection:
        set_breadth(connection, spec, "index", breadth=breadth)
        for n, image_id in connection.execute(statement, {"queries": [vector_text(q) for q in queries]}):
            found[n - 1].append(int(image_id))
    return [np.array(ids, dtype=np.int64) for ids in found]


def served_p50_ms(catalog: Catalog, queries: np.ndarray, spec: PgVectorSpec, dim: int, breadth: int) -> float:
    """The median milliseconds of the served search (``image_hits``) at ``breadth`` over ``queries``."""
    took = []
    with catalog.connection() as connection:
        set_breadth(connection, spec, "index", breadth=breadth)
        for query in queries:
            started = time.perf_counter()
            image_hits(connection, query, K, dim=dim)
            took.append(1000 * (time.perf_counter() - started))
    return float(np.median(took)) if took else 0.0
