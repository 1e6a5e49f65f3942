"""Catalog: products with their embeddings, removals, and the catalog revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("category", sa.String(256), nullable=True),
        sa.Column("image_ref", sa.Text(), nullable=False),
        sa.Column("image_file", sa.String(80), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(512), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("external_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_products_category", "products", ["category"])
    op.create_index("ix_products_revision", "products", ["revision"])
    op.create_table(
        "removed_products",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_removed_products_revision", "removed_products", ["revision"])
    state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "revision": 0}])


def downgrade() -> None:
    op.drop_table("catalog_state")
    op.drop_index("ix_removed_products_revision", table_name="removed_products")
    op.drop_table("removed_products")
    op.drop_index("ix_products_revision", table_name="products")
    op.drop_index("ix_products_category", table_name="products")
    op.drop_table("products")
