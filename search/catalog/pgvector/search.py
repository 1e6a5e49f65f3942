"""Image hits from ``image_vectors`` in SQL: ``ORDER BY embedding <=> :q LIMIT k``, the filter and the
exclusions in the same statement, each hit re-scored exactly from the float32 vector of its image row.

Three plans (``Plan``):
- ``index``: the vector index at its breadth (ivfflat.probes / hnsw.ef_search: measured, pgvector/tuning.py);
- ``exact``: every allowed vector compared (``ORDER BY distance + 0`` keeps the planner off the vector
  index): for filters allowing few products, where an index scan would find too few of them
  (docs/scaling.md section 4: a 1% filter kept 0.53 recall under IVFFlat);
- ``wide``: the index with iterative scans (``relaxed_order``) and a breadth scaled by 1/share, for
  broad filters: the hits come back a little out of order and the exact re-score sorts them.

halfvec keeps 11 significant bits: the index orders by an approximation, the re-score gives the same
cosine as the FAISS backend (and the same order among the hits found).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy import ColumnElement, Connection, select, text

from search.catalog.pgvector.table import (
    GUESSED_EF_SEARCH,
    GUESSED_PROBES,
    SCORE_SLACK,
    VECTORS,
    PgVectorSpec,
    distance,
    query_param,
)
from search.catalog.schema import Product, ProductImage

Plan = Literal["index", "exact", "wide"]
MIN_SHARE = 1 / 256  # the widest an iterative scan is made before the exact plan is cheaper anyway


@dataclass(frozen=True)
class ImageHit:
    image: int
    product: int
    score: float  # exact cosine (float32 vectors)


def set_breadth(
    connection: Connection, spec: PgVectorSpec, plan: Plan, share: float = 1.0, breadth: int | None = None
) -> None:
    """The index's search breadth for the statements that follow in this transaction (SET LOCAL).
    ``breadth``: IVFFlat lists probed or HNSW ef_search unfiltered (``PgVectorIndex.breadth``: measured,
    configured or guessed); widened by 1/share for a broad filter's iterative scan."""
    wide = plan == "wide"
    share = max(MIN_SHARE, min(1.0, share)) if wide else 1.0
    if spec.index == "hnsw":
        ef_search = breadth or spec.ef_search or GUESSED_EF_SEARCH
        values = {
            "hnsw.ef_search": min(1000, math.ceil(ef_search / share)),
            "hnsw.iterative_scan": "relaxed_order" if wide else "off",
            "hnsw.max_scan_tuples": max(20_000, math.ceil(20_000 / share)),
        }
    else:
        probes = breadth or spec.probes or GUESSED_PROBES
        values = {
            "ivfflat.probes": math.ceil(probes / share),
            "ivfflat.iterative_scan": "relaxed_order" if wide else "off",
            "ivfflat.max_probes": math.ceil(4 * probes / share),
        }
    calls = ", ".join(f"set_config('{name}', :v{i}, true)" for i, name in enumerate(values))
    connection.execute(text(f"SELECT {calls}"), {f"v{i}": str(v) for i, v in enumerate(values.values())})


def image_hits(
    connection: Connection,
    vector: np.ndarray,
    k: int,
    *,
    dim: int,
    where: ColumnElement[bool] | None = None,
    excluded: list[int] | None = None,
    min_score: float | None = None,
    exact: bool = False,
    per_row: bool = False,
) -> list[ImageHit]:
    """The ``k`` nearest image vectors (of products passing ``where``), best first by exact cosine;
    breadth as ``set_breadth`` left it. Fewer than ``k`` when no more pass ``min_score``.

    ``per_row``: ``where`` is a filter's per-row form (``Filters.clause(per_row=True)``), checked on each
    vector the index scan yields by primary-key lookups, instead of listing every product a broad filter
    allows."""
    if k <= 0:
        return []
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    d = distance(query_param(query, dim))
    inner = select(VECTORS.c.image_id, VECTORS.c.product_id)
    if where is not None and per_row:
        inner = inner.where(select(Product.id).where(Product.id == VECTORS.c.product_id, where).exists())
    elif where is not None:
        inner = inner.where(VECTORS.c.product_id.in_(select(Product.id).where(where)))
    if excluded:
        inner = inner.where(VECTORS.c.image_id.not_in([int(i) for i in excluded]))
    if min_score is not None:
        inner = inner.where(d <= 1 - min_score + SCORE_SLACK)
    # "+ 0": an expression the vector index cannot serve, so the planner compares every allowed row.
    hits = inner.order_by((d + 0) if exact else d).limit(k).subquery("hits")
    rows = connection.execute(
        select(hits.c.image_id, hits.c.product_id, ProductImage.embedding).join(
            ProductImage, ProductImage.id == hits.c.image_id
        )
    ).all()
    if not rows:
        return []
    vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4").reshape(len(rows), -1)
    scores = vectors @ query
    found = [
        ImageHit(int(row[0]), int(row[1]), float(score))
        for row, score in zip(rows, scores, strict=True)
        if min_score is None or score >= min_score
    ]
    found.sort(key=lambda hit: (-hit.score, hit.image))
    return found


def allowed_products(connection: Connection, where: ColumnElement[bool], cap: int) -> int:
    """How many products ``where`` allows, counted up to ``cap + 1`` (bounded; read from the filter's
    indexes, never from the wide vector rows)."""
    allowed = select(Product.id).where(where).limit(cap + 1).subquery()
    return int(connection.scalar(select(text("count(*)")).select_from(allowed)) or 0)


def estimated_share(connection: Connection, where: ColumnElement[bool]) -> float | None:
    """The planner's estimate of the share of products ``where`` allows (planning only: no rows read);
    None while ``products`` has no statistics (never analyzed: a fresh bulk load)."""
    statement = select(Product.id).where(where)
    compiled = statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, compiled.params).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    rows = float(plan[0]["Plan"]["Plan Rows"])
    total = connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'products'::regclass"))
    total = float(total or 0)
    if total <= 0:
        return None
    return max(0.0, min(1.0, rows / total))
