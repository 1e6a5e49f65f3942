"""What the relevance lab keeps in the catalog (migration 0011): evaluation runs and the calibration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from search.catalog.schema import RelevanceCalibration, RelevanceRun, utcnow
from search.catalog.store import Catalog


def space_key(catalog: Catalog) -> str | None:
    """The fingerprint of the catalog's embedding space (search/model/space.py), if recorded."""
    recorded = catalog.recorded_space()
    return recorded[0] if recorded else None


def save_run(catalog: Catalog, judgements_sha256: str, settings: dict[str, Any], figures: Any) -> int:
    with catalog.engine.begin() as connection:
        result = connection.execute(
            insert(RelevanceRun).values(
                created_at=utcnow(),
                judgements_sha256=judgements_sha256,
                space_key=space_key(catalog),
                settings=settings,
                figures=figures,
            )
        )
        return int(result.inserted_primary_key[0])


def last_run(catalog: Catalog, judgements_sha256: str) -> dict[str, Any] | None:
    """The last saved run on these judgements: id, created_at, space_key, settings, figures."""
    query = (
        select(RelevanceRun)
        .where(RelevanceRun.judgements_sha256 == judgements_sha256)
        .order_by(RelevanceRun.id.desc())
        .limit(1)
    )
    with catalog.engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def save_calibration(catalog: Catalog, judgements_sha256: str, models: dict[str, Any]) -> None:
    with catalog.engine.begin() as connection:
        connection.execute(delete(RelevanceCalibration))
        connection.execute(
            insert(RelevanceCalibration).values(
                id=1,
                fitted_at=utcnow(),
                judgements_sha256=judgements_sha256,
                space_key=space_key(catalog),
                models=models,
            )
        )


def load_calibration(catalog: Catalog) -> dict[str, Any] | None:
    """The stored models by mode, when fitted for the catalog's current embedding space."""
    with catalog.engine.connect() as connection:
        row = connection.execute(select(RelevanceCalibration.models, RelevanceCalibration.space_key)).first()
    if row is None or row.space_key != space_key(catalog):
        return None  # fitted on another space's scores: a reembed makes it meaningless
    return dict(row.models)
