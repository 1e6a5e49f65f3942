"""Several images per product, typed attributes and a lexical index.

- ``product_images``: one row (and one vector) per picture. Existing products keep their one image with
  the image row id equal to the old product row id, so the index file and its vectors stay valid:
  nothing is re-embedded and nothing is rebuilt.
- ``removed_images`` replaces ``removed_products`` (the ids it logged are those same vector ids).
- ``product_attributes.number``: the numeric value of an attribute, for range filters.
- ``products.search_text`` and its full-text index: FTS5 on SQLite (kept by triggers, in the same
  transaction as the row), a GIN index over ``to_tsvector('simple', ...)`` on PostgreSQL.

Revision ID: 0006
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from search.catalog.schema import SEARCH_INDEX, SEARCH_TABLE, attribute_rows, search_document

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None

_IMAGE_COLUMNS = ("image_ref", "image_file", "image_sha256", "embedding", "embedding_dim", "embedding_model")


def _images_table() -> None:
    op.create_table(
        "product_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("image_ref", sa.Text(), nullable=False),
        sa.Column("image_file", sa.String(80), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(512), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_product_images_product_position", "product_images", ["product_id", "position"])
    op.create_index("ix_product_images_revision", "product_images", ["revision"])


def upgrade() -> None:
    connection = op.get_bind()
    sqlite = connection.dialect.name == "sqlite"
    columns = ", ".join(_IMAGE_COLUMNS)
    _images_table()
    op.execute(
        f"INSERT INTO product_images (id, product_id, position, {columns}, revision) "
        f"SELECT id, id, 0, {columns}, revision FROM products"
    )
    if not sqlite:  # explicit ids were inserted: move the sequence past them
        op.execute(
            "SELECT setval(pg_get_serial_sequence('product_images', 'id'), "
            "GREATEST((SELECT max(id) FROM product_images), (SELECT max(id) FROM products), 1))"
        )
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch rebuild: rebuilding ``products``
    # drops the old table, and with foreign keys on that would delete the rows pointing at it.
    for column in _IMAGE_COLUMNS:
        op.drop_column("products", column)
    op.add_column("products", sa.Column("search_text", sa.Text(), nullable=True))

    op.create_table(
        "removed_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_removed_images_revision", "removed_images", ["revision"])
    op.execute(
        "INSERT INTO removed_images (image_id, external_id, revision, removed_at) "
        "SELECT product_id, external_id, revision, removed_at FROM removed_products ORDER BY id"
    )
    op.drop_index("ix_removed_products_revision", table_name="removed_products")
    op.drop_table("removed_products")

    op.add_column("product_attributes", sa.Column("number", sa.Float(), nullable=True))
    op.create_index("ix_product_attributes_key_number", "product_attributes", ["key", "number"])
    products = connection.execute(
        sa.text("SELECT id, external_id, title, category, attributes FROM products")
    ).all()
    numbers, texts = [], []
    for product_id, external_id, title, category, values in products:
        if isinstance(values, str):
            values = json.loads(values)
        numbers += [
            {"pid": row["product_id"], "key": row["key"], "number": row["number"]}
            for row in attribute_rows(product_id, values or {})
            if row["number"] is not None
        ]
        texts.append({"pid": product_id, "text": search_document(external_id, title, category, values or {})})
    if numbers:
        connection.execute(
            sa.text("UPDATE product_attributes SET number = :number WHERE product_id = :pid AND key = :key"),
            numbers,
        )
    if texts:
        connection.execute(sa.text("UPDATE products SET search_text = :text WHERE id = :pid"), texts)

    if sqlite:
        create_sqlite_search_table()
        op.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')")
    else:
        op.execute(
            f"CREATE INDEX {SEARCH_INDEX} ON products "
            "USING gin (to_tsvector('simple', coalesce(search_text, '')))"
        )


def create_sqlite_search_table() -> None:
    """FTS5 over products.search_text (external content: the text is stored once, in products), kept in
    step by triggers so it commits or rolls back with the row. ``tokenchars '-'`` keeps codes whole."""
    op.execute(
        f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5(search_text, content='products', "
        "content_rowid='id', tokenize=\"unicode61 tokenchars '-'\")"
    )
    op.execute(
        f"CREATE TRIGGER products_search_insert AFTER INSERT ON products BEGIN "
        f"INSERT INTO {SEARCH_TABLE}(rowid, search_text) VALUES (new.id, new.search_text); END"
    )
    op.execute(
        f"CREATE TRIGGER products_search_delete AFTER DELETE ON products BEGIN "
        f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, search_text) "
        f"VALUES ('delete', old.id, old.search_text); END"
    )
    op.execute(
        f"CREATE TRIGGER products_search_update AFTER UPDATE OF search_text ON products BEGIN "
        f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, search_text) "
        f"VALUES ('delete', old.id, old.search_text); "
        f"INSERT INTO {SEARCH_TABLE}(rowid, search_text) VALUES (new.id, new.search_text); END"
    )


def downgrade() -> None:
    raise NotImplementedError("0006 is not reversible: restore the backup taken before upgrading")
