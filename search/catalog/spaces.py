"""The embedding space a catalog records (``search.model.space``): read, recorded, settled at start-up."""

from __future__ import annotations

from search.catalog.store import Catalog
from search.model.space import EmbeddingSpace


def recorded_space(catalog: Catalog) -> EmbeddingSpace | None:
    row = catalog.recorded_space()
    return EmbeddingSpace(*row) if row else None


def record_space(catalog: Catalog, space: EmbeddingSpace) -> None:
    catalog.record_space(space.key, space.name, space.dim)


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
        catalog.relabel_model(served.name, served.key)
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
    return catalog.product_ids_outside(key)
