"""Zero-shot tags beside merchant attributes, and the taxonomy they come from.

- ``product_tags``: (product, attribute, value) -> score, indexed (key, value, product_id) so that
  ``tags.<name>`` filters and facets read the index alone, as attribute filters do (0008). On SQLite the
  table is clustered on its primary key (WITHOUT ROWID) and has no other index: a re-tag of a million
  products writes millions of rows, and every extra B-tree costs about as much as the table.
- ``catalog_taxonomy``: one row, the taxonomy document, its version and its values' text embeddings.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "product_tags",
        sa.Column(
            "product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.String(512), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("multi_label", sa.Boolean(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_product_tags_key_value", "product_tags", ["key", "value", "product_id"])
    op.create_table(
        "catalog_taxonomy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("value_vectors", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("logit_scale", sa.Float(), nullable=False),
        sa.Column("logit_bias", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_taxonomy")
    op.drop_index("ix_product_tags_key_value", table_name="product_tags")
    op.drop_table("product_tags")
