"""SQLAlchemy models of the catalog. Alembic migrations in migrations/ create and upgrade them.

The database is the source of truth: every product row carries its embedding, so the FAISS index can
always be rebuilt without running the model. A global revision counter, bumped in every write
transaction, lets any process bring its in-memory index up to date incrementally: products with a
newer revision are (re)added, removals with a newer revision are taken out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    # AUTOINCREMENT: a deleted product's row id (its FAISS id) is never handed to another product.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(256), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(256), index=True)
    # What the catalog gave: a URL, a path relative to the manifest, or "upload" for API bodies.
    image_ref: Mapped[str] = mapped_column(Text)
    # The stored copy under the data folder's images/ (local files and uploads), named by content hash.
    image_file: Mapped[str | None] = mapped_column(String(80))
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised
    embedding_dim: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(String(512))
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProductAttribute(Base):
    """One filterable attribute of a product: its key and the canonical text of its scalar value.

    Filters compare here rather than inside the JSON column: one indexed equality that means the same
    on SQLite and PostgreSQL, and a CSV's "60" matches a JSON 60 (both are stored as "60").
    """

    __tablename__ = "product_attributes"
    __table_args__ = (Index("ix_product_attributes_key_value", "key", "value"),)

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))


class RemovedProduct(Base):
    """A removal, kept so that other processes' indexes learn of it (the product row itself is gone)."""

    __tablename__ = "removed_products"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(Integer)
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
    """One row: the embedding space of the catalog's vectors (search/space.py), recorded by the first
    process that embeds into it and changed only by `python -m indexer reembed`."""

    __tablename__ = "catalog_space"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))  # "sha256:..." content fingerprint of the weights
    name: Mapped[str] = mapped_column(String(512))  # the model id, for people
    dim: Mapped[int] = mapped_column(Integer)


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
