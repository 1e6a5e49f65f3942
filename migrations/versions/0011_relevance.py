"""Relevance evaluation runs (python -m indexer evaluate --save) and the catalog's relevance calibration
(evaluate --calibrate).

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relevance_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("judgements_sha256", sa.String(64), nullable=False),
        sa.Column("space_key", sa.String(128), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_relevance_runs_judgements_sha256", "relevance_runs", ["judgements_sha256"])
    # One row: the fitted logistic models (one per mode) that turn a hit's scores into a probability.
    op.create_table(
        "relevance_calibration",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("judgements_sha256", sa.String(64), nullable=False),
        sa.Column("space_key", sa.String(128), nullable=True),
        sa.Column("models", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("relevance_calibration")
    op.drop_index("ix_relevance_runs_judgements_sha256", table_name="relevance_runs")
    op.drop_table("relevance_runs")
