"""The generated hybrid catalog (devtools/sample_hybrid.py: SKU codes in titles, looks in vectors) with
sortable attributes, served by a product service on a given store: for the relevance tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devtools.sample_hybrid import LOOKS, HybridCatalog, build_hybrid_catalog
from search.catalog import Catalog
from search.catalog.service import ProductService
from search.images.store import ImageStore
from search.model.encoder import Encoder
from search.wiring import build_products
from tests.support.stores import fresh_database

PRODUCTS = 120


def price_of(i: int) -> float | None:
    """Prices with ties (every value twice) and a few products without one."""
    return None if i % 11 == 0 else float(10 + (i * 7) % 50)


@contextlib.contextmanager
def hybrid_service(
    store: str, root: Path, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProductService, HybridCatalog]]:
    """A hybrid catalog of ``PRODUCTS`` on ``store``, written in two batches (so updated_at differs),
    each product with a ``price`` (some missing) and a text ``finish``."""
    directions = encoder.embed_texts(list(LOOKS))
    sample = build_hybrid_catalog(PRODUCTS, directions, noise=0.005, model=encoder.info.model_id)
    for i, write in enumerate(sample.writes):
        price = price_of(i)
        write.attributes = {"finish": ["matte", "glossy", "satin"][i % 3]}
        if price is not None:
            write.attributes["price"] = price
    with fresh_database(store, root, tmp_path_factory) as url:
        catalog = Catalog.open(url)
        half = PRODUCTS // 2
        catalog.upsert(sample.writes[:half])
        catalog.upsert(sample.writes[half:])
        service = build_products(
            catalog,
            model=encoder.info.model_id,
            index_path=root / "index.faiss",
            image_store=ImageStore(root / "images"),
            encoder=encoder,
        )
        try:
            yield service, sample
        finally:
            catalog.close()


def best_cosines(sample: HybridCatalog, query: np.ndarray) -> dict[str, float]:
    """Each product's best image cosine to ``query``, computed here from the written vectors."""
    return {
        write.external_id: max(float(np.dot(image.embedding, query)) for image in write.images)
        for write in sample.writes
    }
