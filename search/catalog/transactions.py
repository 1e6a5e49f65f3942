"""The catalog's write transactions: each takes the next revision first and writes a product's row,
its images, its attribute rows (filters) and its full-text row (lexical search) together, so readers can
ask "what changed since R" and never see half a write. ``Catalog`` runs them in its write sessions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from search.catalog.records import ImageWrite, ProductWrite, vector_to_bytes
from search.catalog.schema import (
    CatalogState,
    DuplicateDecision,
    DuplicateMember,
    ImageBlob,
    Product,
    ProductAttribute,
    ProductImage,
    ProductTag,
    RemovedImage,
    attribute_rows,
    search_document,
    utcnow,
)
from search.errors import Conflict, NotFound

if TYPE_CHECKING:
    from search.catalog.pgvector.table import VectorRows
    from search.catalog.tag_store import TaggerCache


class ConcurrentChange(Conflict):
    """The write was planned against images another writer has since replaced."""


class MissingEmbedding(ValueError):
    """A write without vectors for a product that does not exist (any more)."""


class ProductGone(NotFound):
    """A change of a stored product (PATCH, reembed) whose product was removed meanwhile."""


def upsert(
    session: Session,
    writes: Sequence[ProductWrite],
    blobs: Mapping[str, bytes] | None = None,
    tags: TaggerCache | None = None,
    vectors: VectorRows | None = None,
) -> tuple[int, list[int], list[bool]]:
    """Insert or update products (and their images); returns (revision, their row ids, which were created).

    ``blobs``: stored images (name -> bytes) the writes name, kept in the database (the database image
    store); written in this transaction, after the revision lock, so no concurrent write drops them.
    With ``tags``, the written products are re-tagged by the stored taxonomy in the same transaction;
    with ``vectors`` (the pgvector backend), the new vectors are written to its table in it too."""
    now = utcnow()
    created: list[bool] = []
    revision = _next_revision(session)
    if blobs:
        _store_blobs(session, blobs, now)
    rows: list[Product] = []
    dropped_files: set[str] = set()
    embedded: list[tuple[ProductImage, ImageWrite]] = []
    # A few statements per run of writes, not per product: a round trip each on PostgreSQL.
    for run in _runs_of_distinct_ids(writes):
        found = _products_by_external_id(session, [write.external_id for write in run])
        run_rows: list[Product] = []
        for write in run:
            row = found.get(write.external_id)
            created.append(row is None)
            if row is None and write.must_exist:
                raise ProductGone(f"no product with id {write.external_id!r} (it was removed meanwhile)")
            if row is None:
                if not write.images or any(image.keep_id is not None for image in write.images):
                    raise MissingEmbedding(f"new product {write.external_id!r} needs its images embedded")
                row = Product(external_id=write.external_id, created_at=now)
                session.add(row)
            row.title = write.title
            row.category = write.category
            row.attributes = dict(write.attributes)
            row.search_text = search_document(
                write.external_id, write.title, write.category, write.attributes
            )
            row.revision = revision
            row.updated_at = now
            run_rows.append(row)
        session.flush()  # new rows get their ids
        images = _images_by_product(
            session, [row.id for row, write in zip(run_rows, run, strict=True) if write.images is not None]
        )
        dropped: list[tuple[ProductImage, str]] = []
        for row, write in zip(run_rows, run, strict=True):
            if write.images is not None:
                dropped += _replace_images(session, row, write, images.get(row.id, []), revision, embedded)
        dropped_files |= _drop_images(session, dropped, revision)
        session.flush()  # the next run (the same ids again) reads these images
        rows.extend(run_rows)
    distinct = list(dict.fromkeys(rows))  # a product written twice holds its last write
    _replace_attributes(session, distinct)
    session.flush()
    if vectors is not None:
        _write_vectors(session, vectors, embedded)
    _drop_unused_blobs(session, dropped_files)
    if tags is not None:
        tags.retag(session.connection(), [row.id for row in distinct])
    return revision, [row.id for row in rows], created


def remove(session: Session, external_ids: list[str]) -> tuple[int, list[str]]:
    """Remove products and all their images; returns (revision, the external ids that existed)."""
    revision = _next_revision(session)
    rows = session.execute(
        select(Product.id, Product.external_id).where(Product.external_id.in_(external_ids))
    ).all()
    if rows:
        row_ids = [row[0] for row in rows]
        external = dict(rows)
        images = session.execute(
            select(ProductImage.id, ProductImage.product_id, ProductImage.image_file).where(
                ProductImage.product_id.in_(row_ids)
            )
        ).all()
        _log_removals(session, [(image_id, external[pid]) for image_id, pid, _ in images], revision)
        session.execute(delete(ProductImage).where(ProductImage.product_id.in_(row_ids)))
        session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_(row_ids)))
        session.execute(delete(ProductTag).where(ProductTag.product_id.in_(row_ids)))
        _forget_duplicates(session, row_ids)
        session.execute(delete(Product).where(Product.id.in_(row_ids)))
        _drop_unused_blobs(session, {name for _, _, name in images if name})
    return revision, [ext for _, ext in rows]


def _forget_duplicates(session: Session, row_ids: list[int]) -> None:
    """A removed product's decisions go with it; its group's mates are formed again at the next catch-up
    (search/catalog/duplicate_groups.py)."""
    session.execute(
        delete(DuplicateDecision).where(
            DuplicateDecision.product_a.in_(row_ids) | DuplicateDecision.product_b.in_(row_ids)
        )
    )
    groups = select(DuplicateMember.group_id).where(DuplicateMember.product_id.in_(row_ids))
    session.execute(update(DuplicateMember).where(DuplicateMember.group_id.in_(groups)).values(dirty=True))
    session.execute(delete(DuplicateMember).where(DuplicateMember.product_id.in_(row_ids)))


def prune_removals(session: Session, through_revision: int) -> int:
    state = session.get(CatalogState, 1)
    through_revision = min(through_revision, state.revision)
    deleted = session.execute(delete(RemovedImage).where(RemovedImage.revision <= through_revision))
    state.pruned_revision = max(state.pruned_revision, through_revision)
    return int(deleted.rowcount or 0)


def _next_revision(session: Session) -> int:
    # The first statement of every write transaction: it takes the write lock, so revisions are
    # handed out in commit order and no reader can see revision R before R's rows.
    session.execute(
        update(CatalogState).where(CatalogState.id == 1).values(revision=CatalogState.revision + 1)
    )
    return int(session.scalar(select(CatalogState.revision).where(CatalogState.id == 1)))


def _log_removals(session: Session, images: Sequence[tuple[int, str]], revision: int) -> None:
    if images:
        now = utcnow()
        session.execute(
            insert(RemovedImage),
            [
                {"image_id": image_id, "external_id": ext, "revision": revision, "removed_at": now}
                for image_id, ext in images
            ],
        )


def _store_blobs(session: Session, blobs: Mapping[str, bytes], now: object) -> None:
    """Insert the blobs not stored yet (content-addressed: a stored name holds the same bytes). Writes
    run one at a time behind the revision lock, so no other write inserts or drops one meanwhile."""
    names = list(blobs)
    have = set(session.scalars(select(ImageBlob.name).where(ImageBlob.name.in_(names))))
    new = [
        {"name": n, "data": blobs[n], "size": len(blobs[n]), "created_at": now}
        for n in names
        if n not in have
    ]
    if new:
        session.execute(insert(ImageBlob), new)


def _drop_unused_blobs(session: Session, names: set[str]) -> None:
    """Blobs of dropped images that no image names any more (after this write's own changes)."""
    if names:
        still_used = select(ProductImage.id).where(ProductImage.image_file == ImageBlob.name).exists()
        session.execute(delete(ImageBlob).where(ImageBlob.name.in_(sorted(names)), ~still_used))


LOOKUP_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


def _runs_of_distinct_ids(writes: Sequence[ProductWrite]) -> Iterator[list[ProductWrite]]:
    """The writes in order, cut wherever an id repeats: within a run each product is looked up once,
    and a later write of the same id sees what the earlier one wrote."""
    run: list[ProductWrite] = []
    ids: set[str] = set()
    for write in writes:
        if write.external_id in ids or len(run) == LOOKUP_CHUNK:
            yield run
            run, ids = [], set()
        run.append(write)
        ids.add(write.external_id)
    if run:
        yield run


def _products_by_external_id(session: Session, external_ids: list[str]) -> dict[str, Product]:
    return {
        row.external_id: row
        for row in session.scalars(select(Product).where(Product.external_id.in_(external_ids)))
    }


def _images_by_product(session: Session, product_ids: list[int]) -> dict[int, list[ProductImage]]:
    images: dict[int, list[ProductImage]] = {}
    if product_ids:
        query = select(ProductImage).where(ProductImage.product_id.in_(product_ids))
        for image in session.scalars(query):
            images.setdefault(image.product_id, []).append(image)
    return images


def _replace_images(
    session: Session,
    row: Product,
    write: ProductWrite,
    stored_images: list[ProductImage],
    revision: int,
    embedded: list[tuple[ProductImage, ImageWrite]],
) -> list[tuple[ProductImage, str]]:
    """The product's images (``stored_images``) become exactly ``write.images``: kept ones keep their
    vector (and id). Returns the images to drop, with the product's id (``_drop_images`` drops them);
    the images given a vector are added to ``embedded``."""
    stored = {image.id: image for image in stored_images}
    kept = {image.keep_id for image in write.images or () if image.keep_id is not None}
    missing = kept - set(stored)
    if missing:
        # Planned against images another writer has since replaced: the plan is stale.
        raise ConcurrentChange(f"product {row.external_id!r} changed while it was being written; retry")
    dropped = [(image, row.external_id) for image_id, image in stored.items() if image_id not in kept]
    for position, image in enumerate(write.images or ()):
        if image.keep_id is not None:
            target = stored[image.keep_id]
        else:
            if image.embedding is None:
                raise ValueError(f"a new image of {row.external_id!r} needs an embedding")
            target = ProductImage(product_id=row.id)
            session.add(target)
        target.position = position
        target.image_ref = image.image_ref
        target.image_file = image.image_file
        target.image_sha256 = image.image_sha256
        if image.embedding is not None:
            target.embedding = vector_to_bytes(image.embedding)
            target.embedding_dim = int(image.embedding.shape[-1])
            target.embedding_model = image.embedding_model
            target.revision = revision
            embedded.append((target, image))
        elif target.revision is None:
            raise ValueError(f"image of {row.external_id!r} has no vector")
    return dropped


def _drop_images(session: Session, dropped: list[tuple[ProductImage, str]], revision: int) -> set[str]:
    """Delete the images (logged as removed, for the indexes to catch up) in one statement, not one
    per row as the session would; returns their stored files (a blob may now be unused)."""
    if not dropped:
        return set()
    _log_removals(session, [(image.id, external_id) for image, external_id in dropped], revision)
    session.execute(delete(ProductImage).where(ProductImage.id.in_([image.id for image, _ in dropped])))
    for image, _ in dropped:
        session.expunge(image)
    return {image.image_file for image, _ in dropped if image.image_file}


def _write_vectors(
    session: Session, vectors: VectorRows, embedded: list[tuple[ProductImage, ImageWrite]]
) -> None:
    """The pgvector table's rows of the images given a vector (their ids exist after the flush)."""
    from search.catalog.pgvector.table import VectorRow

    rows = [
        VectorRow(target.id, target.product_id, image.embedding, image.embedding_model)
        for target, image in embedded
        if image.embedding is not None
    ]
    vectors.write(session.connection(), rows)


def _replace_attributes(session: Session, rows: Sequence[Product]) -> None:
    session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_([row.id for row in rows])))
    values = [item for row in rows for item in attribute_rows(row.id, row.attributes or {})]
    if values:
        # The table, not the class: the ORM would split the rows by which values are None (one
        # statement per product); the table takes them all in one executemany.
        session.execute(insert(ProductAttribute.__table__), values)
