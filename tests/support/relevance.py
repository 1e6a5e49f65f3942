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
    """Prices with ties (each value two or three times), one to three digits (so that comparing their
    text would order them wrongly), and a few products without one."""
    return None if i % 11 == 0 else float(5 + ((i * 7) % 50) * 3)


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


def write_hybrid_catalog(url: str, encoder: Encoder, count: int = PRODUCTS) -> HybridCatalog:
    """The generated catalog written into the (migrated) database at ``url``, labelled with the
    encoder's model (the first start relabels it with the weights' fingerprint)."""
    from search.catalog.db import migrate

    migrate(url)
    sample = build_hybrid_catalog(
        count, encoder.embed_texts(list(LOOKS)), noise=0.005, model=encoder.info.model_id
    )
    catalog = Catalog.open(url)
    try:
        catalog.upsert(sample.writes)
    finally:
        catalog.close()
    return sample


def judgements_csv(sample: HybridCatalog, path: Path, image: Path | None = None) -> Path:
    """Graded judgements whose truth is in the generated catalog: a SKU code's product is 3; for
    "<brand> <look>", that brand with that look is 3, the look in another brand 1, the brand in another
    look 0; one query filtered to a category, and one by image (when given)."""
    import csv

    rows = [(code, pid, 3, "") for pid, code in list(sample.sku.items())[::9]]
    for text, look, truth in sample.brand_look_queries()[::7]:
        brand = text.split()[0]
        for pid in sorted(truth):
            rows.append((text, pid, 3, ""))
        same_look = [p for p, other in sample.look.items() if other == look and p not in truth]
        rows += [(text, pid, 1, "") for pid in same_look[:4]]
        same_brand = [p for p, b in sample.brand.items() if b == brand and sample.look[p] != look]
        rows += [(text, pid, 0, "") for pid in same_brand[:3]]
    floor = [p for p, write in zip(sample.look, sample.writes, strict=True) if write.category == "floor"]
    rows += [("acme halden", pid, 2, '{"category": "floor"}') for pid in floor if sample.brand[pid] == "acme"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "product_id", "grade", "filters", "query_image"])
        writer.writerows([(*row, "") for row in rows])
        if image is not None:
            writer.writerow(["", sorted(sample.look)[0], 2, "", image.name])
    return path
