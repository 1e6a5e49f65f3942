"""Filterable product attributes: (product, key) -> canonical text of the value, indexed by (key, value).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from search.catalog.schema import attribute_text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "product_attributes",
        sa.Column(
            "product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.String(512), nullable=False),
    )
    op.create_index("ix_product_attributes_key_value", "product_attributes", ["key", "value"])
    # Backfill from the products already in the catalog.
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, attributes FROM products")).all()
    values = []
    for product_id, attributes in rows:
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        for key, value in (attributes or {}).items():
            text = attribute_text(value)
            if text is not None and len(key) <= 256:
                values.append({"product_id": product_id, "key": key, "value": text})
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    op.drop_index("ix_product_attributes_key_value", table_name="product_attributes")
    op.drop_table("product_attributes")
