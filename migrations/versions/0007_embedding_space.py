"""The catalog's embedding space: a content fingerprint of the weights that made its vectors.

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row, written by the first process that embeds into the catalog (search/model/space.py).
    op.create_table(
        "catalog_space",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_space")
