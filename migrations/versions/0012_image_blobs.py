"""Stored images in the catalog's database (VITRINE_IMAGE_STORE=database): content-addressed blobs that
are written in the same transaction as the product row that names them, so every replica on the
database serves them and a failed write leaves none behind.

The index on product_images.image_file answers "does any image still use this blob" when a write
drops one (and the folder store's same question after a failed write).

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_blobs",
        sa.Column("name", sa.String(80), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_product_images_image_file", "product_images", ["image_file"])


def downgrade() -> None:
    op.drop_index("ix_product_images_image_file", table_name="product_images")
    op.drop_table("image_blobs")
