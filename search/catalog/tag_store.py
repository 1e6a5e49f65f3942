"""Tags and the taxonomy in the database: the stored taxonomy (document, version, value vectors), the
tags of a set of products computed from their stored image embeddings and written in the caller's
transaction, and the tags a product answer shows.

Every write of a product (``transactions.upsert``) re-tags it here, in its own transaction, with the
taxonomy version that transaction sees: a write and a taxonomy change never leave a product tagged by a
version older than the one committed before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, insert, select, true

from search.catalog.schema import CatalogTaxonomy, ProductImage, ProductTag, utcnow
from search.catalog.tagging import Tagger, TagRow
from search.catalog.taxonomy import Taxonomy

_VERSION_QUERY = select(CatalogTaxonomy.version).where(CatalogTaxonomy.id == 1)
_ROW_QUERY = select(
    CatalogTaxonomy.version,
    CatalogTaxonomy.document,
    CatalogTaxonomy.model,
    CatalogTaxonomy.value_vectors,
    CatalogTaxonomy.dim,
    CatalogTaxonomy.logit_scale,
    CatalogTaxonomy.logit_bias,
).where(CatalogTaxonomy.id == 1)
_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class StoredTaxonomy:
    version: int
    taxonomy: Taxonomy
    model: str
    vectors: np.ndarray
    logit_scale: float
    logit_bias: float

    def tagger(self) -> Tagger:
        return Tagger(
            self.taxonomy, self.vectors, self.model, self.logit_scale, self.logit_bias, self.version
        )

    def known_vectors(self, model: str) -> dict[tuple[tuple[str, str], ...], np.ndarray]:
        """Each value's vector by its (prompt, name) pairs, for a new version to reuse (same space only)."""
        if model != self.model:
            return {}
        pairs = [pairs for a in self.taxonomy.attributes for pairs in (a.prompt_pairs(v) for v in a.values)]
        return {tuple(p): vector for p, vector in zip(pairs, self.vectors, strict=True)}


def read_taxonomy(connection: Connection) -> StoredTaxonomy | None:
    row = connection.execute(_ROW_QUERY).first()
    if row is None:
        return None
    version, document, model, blob, dim, scale, bias = row
    vectors = np.frombuffer(blob, dtype="<f4").reshape(-1, dim) if dim else np.zeros((0, 0), np.float32)
    return StoredTaxonomy(
        int(version), Taxonomy.parse(document), model, vectors.astype(np.float32), scale, bias
    )


def taxonomy_version(connection: Connection) -> int:
    return int(connection.scalar(_VERSION_QUERY) or 0)


def save_taxonomy(
    connection: Connection, taxonomy: Taxonomy, vectors: np.ndarray, model: str, scale: float, bias: float
) -> int:
    """Store a new version (in the caller's transaction); returns it. Tags of attributes the new version
    no longer has are dropped at once; the others are replaced as products are re-tagged."""
    version = taxonomy_version(connection) + 1
    values = {
        "version": version,
        "document": taxonomy.as_json(),
        "model": model,
        "value_vectors": np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
        "dim": int(vectors.shape[1]) if vectors.size else 0,
        "logit_scale": float(scale),
        "logit_bias": float(bias),
        "updated_at": utcnow(),
    }
    connection.execute(delete(CatalogTaxonomy))
    connection.execute(insert(CatalogTaxonomy).values(id=1, **values))
    names = [attribute.name for attribute in taxonomy.attributes]
    connection.execute(delete(ProductTag).where(ProductTag.key.not_in(names) if names else true()))
    return version


class TaggerCache:
    """The tagger of the stored taxonomy, rebuilt only when its version changes (one small read per
    write transaction otherwise). Thread-safe; shared by a process's writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tagger: Tagger | None = None

    def current(self, connection: Connection) -> Tagger | None:
        version = taxonomy_version(connection)
        if not version:
            return None
        with self._lock:
            if self._tagger is not None and self._tagger.version == version:
                return self._tagger
        stored = read_taxonomy(connection)
        tagger = stored.tagger() if stored is not None and stored.taxonomy else None
        with self._lock:
            self._tagger = tagger
        return tagger

    def retag(self, connection: Connection, product_ids: Sequence[int]) -> Tagger | None:
        """Replace the tags of ``product_ids`` (in the caller's transaction) by the current taxonomy's."""
        tagger = self.current(connection)
        if tagger is None:
            return None
        replace_tags(connection, tagger, product_ids)
        return tagger


def image_vectors(
    connection: Connection, product_ids: Sequence[int], model: str, *, between: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(owner product ids, vectors) of the images of ``product_ids`` in space ``model``, grouped by
    product. ``between``: ``product_ids`` is a sorted batch; read its id range in one statement."""
    # Ordered by product: a product's images are one run, as Tagger.product_scores groups them.
    query = (
        select(ProductImage.product_id, ProductImage.embedding)
        .where(ProductImage.embedding_model == model)
        .order_by(ProductImage.product_id, ProductImage.position)
    )
    if between:
        statements = [query.where(ProductImage.product_id.between(int(product_ids[0]), int(product_ids[-1])))]
    else:
        ids = sorted({int(i) for i in product_ids})
        statements = [
            query.where(ProductImage.product_id.in_(ids[start : start + _CHUNK]))
            for start in range(0, len(ids), _CHUNK)
        ]
    rows = [row for statement in statements for row in connection.execute(statement).all()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    owners, blobs = zip(*rows, strict=True)
    # One copy of the joined blobs (as the index's builds read them), not an array per row.
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
    return np.asarray(owners, dtype=np.int64), vectors


def replace_tags(
    connection: Connection, tagger: Tagger, product_ids: Sequence[int], *, between: bool = False
) -> int:
    """Compute and store the tags of ``product_ids`` from their stored image vectors; returns how many
    tag rows were written. A product without an image in the tagger's space ends with no tags."""
    if not len(product_ids):
        return 0
    owners, vectors = image_vectors(connection, product_ids, tagger.model, between=between)
    rows = tagger.tags(vectors, owners) if len(owners) and vectors.shape[1] == tagger.dim else []
    if between:
        lo, hi = int(product_ids[0]), int(product_ids[-1])
        connection.execute(delete(ProductTag).where(ProductTag.product_id.between(lo, hi)))
    else:
        ids = [int(i) for i in product_ids]
        for start in range(0, len(ids), _CHUNK):
            connection.execute(
                delete(ProductTag).where(ProductTag.product_id.in_(ids[start : start + _CHUNK]))
            )
    insert_tags(connection, rows)
    return len(rows)


_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def insert_tags(connection: Connection, rows: Sequence[TagRow]) -> None:
    """The driver's own executemany over plain tuples: building SQLAlchemy parameter dictionaries cost
    more than the insert itself (a million products make millions of rows)."""
    if not rows:
        return
    mark = _PLACEHOLDERS.get(connection.dialect.paramstyle)
    if mark is None:  # any other driver: SQLAlchemy's own executemany
        columns = ("product_id", "key", "value", "score", "multi_label")
        connection.execute(insert(ProductTag), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    connection.exec_driver_sql(
        f"INSERT INTO product_tags (product_id, key, value, score, multi_label) VALUES ({', '.join([mark] * 5)})",
        list(rows),
    )


TAG_COLUMNS = (ProductTag.key, ProductTag.value, ProductTag.score, ProductTag.multi_label)


def tags_of(connection: Connection, product_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The ``tags`` of each product (see ``tag_views``)."""
    ids = [int(i) for i in product_ids]
    rows = []
    for start in range(0, len(ids), _CHUNK):
        query = select(ProductTag.product_id, *TAG_COLUMNS).where(
            ProductTag.product_id.in_(ids[start : start + _CHUNK])
        )
        rows += connection.execute(query).all()
    return tag_views(rows)


def tag_views(rows: Iterable[Sequence[Any]]) -> dict[int, dict[str, Any]]:
    """Rows (product id, key, value, score, multi_label) as each product's ``tags`` in an answer:
    ``{"color": {"value", "score"}}``, or for a multi-label attribute ``{"style": {"values": [{"value",
    "score"}, ...]}}`` best first."""
    found: dict[int, dict[str, Any]] = {}
    for pid, key, value, score, multi in sorted(rows, key=lambda r: (r[0], r[1], -r[3], r[2])):
        tags = found.setdefault(pid, {})
        if multi:
            tags.setdefault(key, {"values": []})["values"].append({"value": value, "score": float(score)})
        else:
            tags[key] = {"value": value, "score": float(score)}
    return found
