"""Verification: the index file plus the change log equals the database, vector for vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search.catalog.store import Catalog
from search.catalog.sync import IndexSync
from search.images.store import ImageStorage
from search.index import IndexFileError, VectorIndex


@dataclass
class VerifyReport:
    ok: bool
    database_products: int
    database_images: int
    index_vectors: int
    database_revision: int
    index_file_revision: int | None
    problems: list[str]


def verify_catalog(sync: IndexSync, image_store: ImageStorage) -> VerifyReport:
    catalog, model = sync.catalog, sync.model
    problems: list[str] = []
    file_revision: int | None = None
    index: VectorIndex
    try:
        index = sync.load_file()
        file_revision = index.revision
        index = sync.apply_changes(index)
    except IndexFileError as exc:
        if catalog.count_images(model):
            problems.append(f"index file: {exc} (run `python -m indexer rebuild`)")
        index = sync.empty()
    db_ids: set[int] = set()
    for ids, vectors in catalog.iter_embeddings(model):
        db_ids.update(int(i) for i in ids)
        norms = np.linalg.norm(vectors, axis=1)
        for image_id, norm in zip(ids, norms, strict=True):
            if abs(norm - 1) > 1e-3:
                problems.append(f"image row {image_id}: embedding norm {norm:.4f}, expected 1")
        if file_revision is not None:
            for image_id, vector in zip(ids, vectors, strict=True):
                stored = index.reconstruct(int(image_id))
                if stored is None:
                    problems.append(f"image row {image_id} is missing from the index")
                elif not np.allclose(stored, vector, atol=1e-6):
                    problems.append(f"image row {image_id}: index vector differs from the database")
    index_ids = {int(i) for i in index.ids()}
    extra = index_ids - db_ids
    if extra:
        problems.append(f"{len(extra)} index vectors have no product image: {sorted(extra)[:10]}")
    if len(index_ids) != len(index):
        problems.append("the index holds duplicate ids")
    problems += stored_image_problems(catalog, image_store) + other_model_problems(catalog, model)
    return VerifyReport(
        ok=not problems,
        database_products=catalog.count(),
        database_images=len(db_ids),
        index_vectors=len(index),
        database_revision=catalog.revision(),
        index_file_revision=file_revision,
        problems=problems[:100],
    )


def stored_image_problems(catalog: Catalog, image_store: ImageStorage) -> list[str]:
    """The stored copies (files or blobs) that product images name but the image store lacks."""
    stored = catalog.stored_images()
    absent = set(image_store.missing(sorted({name for _, name in stored})))
    missing_images = [ext for ext, name in stored if name in absent]
    if not missing_images:
        return []
    where = "files" if image_store.kind == "folder" else f"{image_store.kind} blobs"
    return [f"{len(missing_images)} stored image {where} are missing: {missing_images[:10]}"]


def other_model_problems(catalog: Catalog, model: str) -> list[str]:
    other_models = {m: n for m, n in catalog.count_by_model().items() if m != model}
    if not other_models:
        return []
    return [f"images embedded by other models (re-run the indexer): {other_models}"]
