"""The embedding space of a catalog: which weights made its vectors.

Vectors from different weights cannot be compared, so the catalog records the space of its vectors
(a content fingerprint of the weight files plus a readable name) and every process checks it against
the model it loaded. Image rows carry the fingerprint as their ``embedding_model``: a hub id and a
local copy of the same weights are one space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update

from search.catalog import Catalog
from search.errors import VitrineError
from search.schema import CatalogSpace, ProductImage
from search.weights import Checkpoint, checkpoint_folder

log = logging.getLogger(__name__)

REEMBED_COMMAND = "python -m indexer reembed"


@dataclass(frozen=True)
class EmbeddingSpace:
    key: str  # "sha256:..." of the weight files' content
    name: str  # the model id it was loaded as, for people
    dim: int

    def describe(self) -> str:
        if self.key == self.name:  # rows from before fingerprints were recorded
            return f"{self.name} (no fingerprint recorded)"
        return f"{self.name} ({self.key}, {self.dim}-d)"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "fingerprint": self.key, "dim": self.dim}


class SpaceMismatch(VitrineError):
    """Catalog routes while the served model is not the catalog's: 409, naming both and the fix."""

    status = 409

    def __init__(self, catalog: EmbeddingSpace, served: EmbeddingSpace) -> None:
        self.catalog = catalog
        self.served = served
        super().__init__(
            f"the catalog's vectors were made by {catalog.describe()}, but this process runs "
            f"{served.describe()}; vectors of different models cannot be compared. Re-embed the catalog "
            f"with the served model (VITRINE_MODEL={served.name} {REEMBED_COMMAND}), or run "
            f"VITRINE_MODEL={catalog.name} again. Inference (POST /) is not affected."
        )


def space_of(model_id: str, dim: int, checkpoint: Checkpoint | None = None) -> EmbeddingSpace:
    """The space of a loaded model: its weights' fingerprint (the hub cache or a local folder).

    ``checkpoint``: the loaded encoder's, whose files were hashed once already (for its exports).
    """
    checkpoint = checkpoint or Checkpoint(checkpoint_folder(model_id))
    return EmbeddingSpace(checkpoint.fingerprint, model_id, dim)


def recorded_space(catalog: Catalog) -> EmbeddingSpace | None:
    with catalog.engine.connect() as connection:
        row = connection.execute(select(CatalogSpace.key, CatalogSpace.name, CatalogSpace.dim)).first()
    return EmbeddingSpace(row.key, row.name, row.dim) if row else None


def record_space(catalog: Catalog, space: EmbeddingSpace) -> None:
    with catalog.engine.begin() as connection:
        connection.execute(CatalogSpace.__table__.delete())
        connection.execute(
            CatalogSpace.__table__.insert().values(id=1, key=space.key, name=space.name, dim=space.dim)
        )


def settle_space(catalog: Catalog, served: EmbeddingSpace) -> EmbeddingSpace:
    """The catalog's space, recording ``served`` for a catalog that has none yet.

    A catalog from before spaces were recorded has rows labelled with a model id: when that id is the
    served one, its rows are relabelled with the fingerprint (same weights, same space).
    """
    recorded = recorded_space(catalog)
    if recorded is not None:
        return recorded
    labels = catalog.count_by_model()
    if served.name in labels:
        with catalog.engine.begin() as connection:
            connection.execute(
                update(ProductImage)
                .where(ProductImage.embedding_model == served.name)
                .values(embedding_model=served.key)
            )
        labels[served.key] = labels.pop(served.name) + labels.get(served.key, 0)
    if labels and set(labels) != {served.key}:
        # Vectors of another (unfingerprinted) model: their space is unknown, so it is not the served one.
        name = max(labels, key=labels.get)
        return EmbeddingSpace(name, name, 0)
    record_space(catalog, served)
    return served


def catalog_model_key(catalog: Catalog, fallback: str) -> str:
    """The ``embedding_model`` label of the catalog's vectors, for commands that load no model."""
    recorded = recorded_space(catalog)
    if recorded is not None:
        return recorded.key
    labels = catalog.count_by_model()
    return max(labels, key=labels.get) if labels else fallback


def ids_outside(catalog: Catalog, key: str) -> list[int]:
    """Row ids of the products with vectors not in space ``key`` (what reembed still has to do)."""
    with catalog.engine.connect() as connection:
        query = (
            select(ProductImage.product_id)
            .where(ProductImage.embedding_model != key)
            .distinct()
            .order_by(ProductImage.product_id)
        )
        return [int(row_id) for row_id in connection.execute(query).scalars()]
