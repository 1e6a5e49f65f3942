"""SQLAlchemy models of the catalog. Alembic migrations in migrations/ create and upgrade them.

The database is the source of truth: every product image row carries its embedding, so the FAISS index
can always be rebuilt without running the model. A product has one or more images; each image is one
vector, and an image row's id is its vector id in the index. A global revision counter, bumped in every
write transaction, lets any process bring its in-memory index up to date incrementally: images with a
newer revision are (re)added, removals with a newer revision are taken out.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite's full-text table over products.search_text (FTS5, kept by triggers); on PostgreSQL a GIN
# expression index plays its part. Neither is a model: schema comparisons leave them out.
SEARCH_TABLE = "product_search"
SEARCH_INDEX = "ix_products_search_text"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    # AUTOINCREMENT: a deleted product's row id is never handed to another product.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(256), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(256), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the lexical index reads: id, title, category and attribute values (see search_document).
    search_text: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProductImage(Base):
    """One picture of a product and its embedding; ``id`` is the vector id in the index."""

    __tablename__ = "product_images"
    # AUTOINCREMENT: a removed image's id (its FAISS id) is never handed to another image.
    __table_args__ = (
        Index("ix_product_images_product_position", "product_id", "position"),
        Index("ix_product_images_image_file", "image_file"),  # is a stored blob still used (0012)
        Index("ix_product_images_sha256", "image_sha256"),  # exact copies across products (0010)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # What the catalog gave: a URL, a path relative to the manifest, or "upload" for API bodies.
    image_ref: Mapped[str] = mapped_column(Text)
    # The stored copy under the data folder's images/ (local files and uploads), named by content hash.
    image_file: Mapped[str | None] = mapped_column(String(80))
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised
    embedding_dim: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(String(512))
    revision: Mapped[int] = mapped_column(BigInteger, index=True)


class ImageBlob(Base):
    """A stored image's bytes when the image store is the database (VITRINE_IMAGE_STORE=database),
    named like a stored file (sha256 + extension) and written in the transaction of the row naming it."""

    __tablename__ = "image_blobs"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProductAttribute(Base):
    """One filterable attribute of a product: its key, the canonical text of its scalar value, and its
    number when it is one (a JSON number, or text that reads as a finite number, as CSV cells do).

    Filters compare here rather than inside the JSON column: indexed comparisons that mean the same on
    SQLite and PostgreSQL. Equality compares the text, so a CSV's "60" matches a JSON 60 (both "60");
    ranges compare the number.
    """

    __tablename__ = "product_attributes"
    __table_args__ = (
        # The product id rides in both indexes, so filters and facets never read the table (0008).
        Index("ix_product_attributes_key_value", "key", "value", "product_id"),
        Index("ix_product_attributes_key_number", "key", "number", "product_id"),
    )

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))
    number: Mapped[float | None] = mapped_column(Float)


class ProductTag(Base):
    """One tag of a product: a value of a taxonomy attribute the model scored at or above the attribute's
    threshold (search/catalog/tagging.py). Kept beside the merchant's ``product_attributes``, never in
    them, and read by ``tags.<name>`` filters and facets through the covering (key, value, product_id)
    index, as attributes are (0008). ``multi_label`` says how a product answer shows the attribute.

    One index only, and on SQLite a table clustered on its key (WITHOUT ROWID): re-tagging a million
    products writes millions of rows, and each extra B-tree nearly doubled that (bench_tagging.py)."""

    __tablename__ = "product_tags"
    __table_args__ = (
        Index("ix_product_tags_key_value", "key", "value", "product_id"),
        {"sqlite_with_rowid": False},
    )

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)


class CatalogTaxonomy(Base):
    """One row: the taxonomy document, its version (bumped by every change), and its values' text
    embeddings in the embedding space ``model`` with that space's logit scale and bias, so tagging
    reads vectors and never runs the text tower again for the same version."""

    __tablename__ = "catalog_taxonomy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(512))
    value_vectors: Mapped[bytes] = mapped_column(LargeBinary)  # float32, one row per value, in order
    dim: Mapped[int] = mapped_column(Integer)
    logit_scale: Mapped[float] = mapped_column(Float)
    logit_bias: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RemovedImage(Base):
    """A vector's removal (its image replaced or dropped, or its product removed), kept so that other
    processes' indexes learn of it (the image row itself is gone)."""

    __tablename__ = "removed_images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str] = mapped_column(String(256))
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    removed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CatalogState(Base):
    """One row: the catalog's revision, bumped by every write transaction, and the revision through
    which the removal log was pruned (an index older than that must be rebuilt, not caught up)."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    pruned_revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CatalogSpace(Base):
    """One row: the embedding space of the catalog's vectors (search/model/space.py), recorded by the first
    process that embeds into it and changed only by `python -m indexer reembed`."""

    __tablename__ = "catalog_space"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))  # "sha256:..." content fingerprint of the weights
    name: Mapped[str] = mapped_column(String(512))  # the model id, for people
    dim: Mapped[int] = mapped_column(Integer)


class RelevanceRun(Base):
    """One saved ``python -m indexer evaluate --save``: what was judged, in which embedding space, with
    which settings, and the figures (``--gate`` compares against the last run on the same judgements)."""

    __tablename__ = "relevance_runs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    judgements_sha256: Mapped[str] = mapped_column(String(64), index=True)
    space_key: Mapped[str | None] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)


class RelevanceCalibration(Base):
    """One row: the logistic models (per mode) fitted by ``evaluate --calibrate`` on the judgements."""

    __tablename__ = "relevance_calibration"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    judgements_sha256: Mapped[str] = mapped_column(String(64))
    space_key: Mapped[str | None] = mapped_column(String(128))
    models: Mapped[dict[str, Any]] = mapped_column(JSON)


class DuplicateDecision(Base):
    """A merchandiser's word on a pair of products (row ids, ``product_a < product_b``): "distinct" pairs
    are never reported or grouped, "duplicate" pairs are grouped whatever their score. Keyed by product,
    not by image or vector: it outlives re-embedding and a model change; removing a product removes it."""

    __tablename__ = "duplicate_decisions"

    product_a: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    product_b: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    decision: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DuplicateMember(Base):
    """A product's duplicate group: ``group_id`` is the representative's row id. ``dirty``: a mate was
    removed, so the group is formed again at the next catch-up (search/catalog/duplicate_groups.py)."""

    __tablename__ = "duplicate_members"

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(Integer, index=True)
    score: Mapped[float] = mapped_column(Float)  # cosine to the representative (1 for itself)
    min_score: Mapped[float] = mapped_column(Float)  # the group's lowest pairwise score
    dirty: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class DuplicateState(Base):
    """One row: the calibrated threshold (with the embedding space it was fitted on), and the threshold,
    space and catalog revision the stored groups reflect."""

    __tablename__ = "duplicate_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_model: Mapped[str | None] = mapped_column(String(512))
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    groups_threshold: Mapped[float | None] = mapped_column(Float)
    groups_model: Mapped[str | None] = mapped_column(String(512))
    groups_revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


def attribute_text(value: object) -> str | None:
    """The canonical text of a filterable value; None for values that are not filterable."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None  # lists, objects and null are kept but not filterable
    return text if len(text) <= 512 else None


def attribute_number(value: object) -> float | None:
    """The number a range filter compares: JSON numbers, and text that is a finite number ("19.90")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def attribute_rows(product_id: int, attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """The product_attributes rows of one product."""
    return [
        {"product_id": product_id, "key": key, "value": text, "number": attribute_number(value)}
        for key, value in (attributes or {}).items()
        if len(key) <= 256 and (text := attribute_text(value)) is not None
    ]


def search_document(
    external_id: str, title: str | None, category: str | None, attributes: dict[str, Any]
) -> str:
    """The text the lexical index reads. Codes like "TX-4471" are kept whole (the tokenizer keeps '-'
    inside words) and also added as their parts and joined ("tx", "4471", "tx4471"), so a shopper who
    types any of those forms finds them."""
    values = [external_id, title or "", category or ""]
    values += [text for value in (attributes or {}).values() if (text := attribute_text(value)) is not None]
    words = " ".join(values).split()
    extra = []
    for word in words:
        if "-" in word.strip("-"):
            parts = [part for part in word.split("-") if part]
            extra += [*parts, "".join(parts)]
    return " ".join(words + extra)


def is_model_table(name: str | None, type_: str = "table", _parents: object = None) -> bool:
    """Alembic's include_name: the full-text table (FTS5 and its shadow tables) and PostgreSQL's
    full-text expression index are not models."""
    if type_ == "table" and name is not None and name.startswith(SEARCH_TABLE):
        return False
    return not (type_ == "index" and name == SEARCH_INDEX)
