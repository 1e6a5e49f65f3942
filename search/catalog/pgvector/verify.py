"""Verification of the pgvector backend: every image of the served space has its vector row, each row
holds its image's stored vector (to halfvec's precision), and no row outlives its image's space."""

from __future__ import annotations

import numpy as np
from sqlalchemy import text

from search.catalog.pgvector.sync import PgVectorSync
from search.catalog.pgvector.table import COMPONENT_TOLERANCE, TABLE, parse_vector, table_dim
from search.catalog.verify import VerifyReport, other_model_problems, stored_image_problems
from search.images.store import ImageStorage

_BATCH = 5_000


def verify_vector_table(sync: PgVectorSync, image_store: ImageStorage) -> VerifyReport:
    catalog, model = sync.catalog, sync.model
    problems: list[str] = []
    images = vectors = 0
    missing: list[int] = []
    with catalog.engine.connect() as connection:
        dim = table_dim(connection)
        images = int(
            connection.scalar(
                text("SELECT count(*) FROM product_images WHERE embedding_model = :m"), {"m": model}
            )
            or 0
        )
        if dim is None:
            if images:
                problems.append(
                    f"{TABLE} does not exist: start the server or run `python -m indexer rebuild`"
                )
        else:
            vectors = int(connection.scalar(text(f"SELECT count(*) FROM {TABLE}")) or 0)
            missing = list(
                connection.scalars(
                    text(
                        f"SELECT i.id FROM product_images i LEFT JOIN {TABLE} v ON v.image_id = i.id "
                        "WHERE v.image_id IS NULL AND i.embedding_model = :m ORDER BY i.id"
                    ),
                    {"m": model},
                )
            )
            if missing:
                problems.append(
                    f"{len(missing)} images have no vector row in {TABLE}: {missing[:10]} "
                    "(run `python -m indexer rebuild`)"
                )
            stray = int(
                connection.scalar(
                    text(
                        f"SELECT count(*) FROM {TABLE} v JOIN product_images i ON i.id = v.image_id "
                        "WHERE i.embedding_model <> :m"
                    ),
                    {"m": model},
                )
                or 0
            )
            if stray:
                problems.append(f"{stray} vector rows belong to images of another embedding space")
            problems += _compare_vectors(connection)
    problems += stored_image_problems(catalog, image_store) + other_model_problems(catalog, model)
    return VerifyReport(
        ok=not problems,
        database_products=catalog.count(),
        database_images=images,
        index_vectors=vectors,
        database_revision=catalog.revision(),
        index_file_revision=None,
        problems=problems[:100],
    )


def _compare_vectors(connection: object) -> list[str]:
    """Each row's halfvec against its image's float32 vector, and the stored vectors' norms."""
    problems: list[str] = []
    last = 0
    while True:
        rows = connection.execute(  # type: ignore[attr-defined]
            text(
                f"SELECT v.image_id, v.embedding::text, i.embedding FROM {TABLE} v "
                "JOIN product_images i ON i.id = v.image_id WHERE v.image_id > :last "
                "ORDER BY v.image_id LIMIT :n"
            ),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            return problems
        last = rows[-1][0]
        for image_id, half, blob in rows:
            stored = np.frombuffer(blob, dtype="<f4")
            norm = float(np.linalg.norm(stored))
            if abs(norm - 1) > 1e-3:
                problems.append(f"image row {image_id}: embedding norm {norm:.4f}, expected 1")
            row = parse_vector(half)
            if row.shape != stored.shape or not np.allclose(row, stored, atol=COMPONENT_TOLERANCE):
                problems.append(f"image row {image_id}: its {TABLE} vector differs from the stored one")
