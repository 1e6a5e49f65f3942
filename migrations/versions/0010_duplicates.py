"""Near-duplicate products: decisions, stored groups, the calibrated threshold, and an index on image
content hashes (exact copies across products in one lookup).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_product_images_sha256", "product_images", ["image_sha256"])
    op.create_table(
        "duplicate_decisions",
        sa.Column(
            "product_a", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "product_b", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_duplicate_decisions_product_b", "duplicate_decisions", ["product_b"])
    op.create_table(
        "duplicate_members",
        sa.Column(
            "product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("min_score", sa.Float(), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False, server_default="0"),
    )
    op.create_index("ix_duplicate_members_group_id", "duplicate_members", ["group_id"])
    op.create_table(
        "duplicate_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("threshold_model", sa.String(512), nullable=True),
        sa.Column("calibration", sa.JSON(), nullable=True),
        sa.Column("groups_threshold", sa.Float(), nullable=True),
        sa.Column("groups_model", sa.String(512), nullable=True),
        sa.Column("groups_revision", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("duplicate_state")
    op.drop_index("ix_duplicate_members_group_id", table_name="duplicate_members")
    op.drop_table("duplicate_members")
    op.drop_index("ix_duplicate_decisions_product_b", table_name="duplicate_decisions")
    op.drop_table("duplicate_decisions")
    op.drop_index("ix_product_images_sha256", table_name="product_images")
