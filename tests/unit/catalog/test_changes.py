"""Catalog.changes_since: what another process needs to bring its index up to a database revision.

Vector ids are image row ids: one per picture of a product."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search.catalog import Catalog, ChangesPruned, ImageWrite, ProductWrite
from search.catalog.db import migrate

MODEL = "test-model"


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    url = f"sqlite:///{tmp_path / 'vitrine.db'}"
    migrate(url)
    catalog = Catalog.open(url)
    yield catalog
    catalog.close()


def vector(seed: int) -> np.ndarray:
    value = np.random.default_rng(seed).standard_normal(4).astype(np.float32)
    return value / np.linalg.norm(value)


def product(external_id: str, seed: int, model: str = MODEL, **fields: object) -> ProductWrite:
    image = ImageWrite(f"{external_id}.png", embedding=vector(seed), embedding_model=model)
    return ProductWrite(external_id=external_id, images=[image], **fields)  # type: ignore[arg-type]


def row_id(catalog: Catalog, external_id: str) -> int:
    """The vector id of the product's (first) image."""
    found = catalog.embeddings(external_id)
    assert found
    return found[0][0]


def test_every_write_takes_the_next_revision(catalog: Catalog) -> None:
    assert catalog.revision() == 0
    first, _ = catalog.upsert([product("a", 1), product("b", 2)])
    second, _ = catalog.remove(["a"])
    assert (first, second) == (1, 2)
    assert catalog.revision() == 2


def test_changes_since_zero_hold_every_product(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2)])
    changes = catalog.changes_since(0, MODEL)
    assert changes.revision == 1
    assert changes.removed_ids == []
    assert sorted(changes.upserted_ids.tolist()) == sorted([row_id(catalog, "a"), row_id(catalog, "b")])
    by_id = dict(zip(changes.upserted_ids.tolist(), changes.upserted_vectors, strict=True))
    np.testing.assert_array_equal(by_id[row_id(catalog, "a")], vector(1))


def test_changes_since_a_revision_hold_only_later_upserts(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2)])
    revision = catalog.revision()
    catalog.upsert([product("b", 3), product("c", 4)])
    changes = catalog.changes_since(revision, MODEL)
    assert sorted(changes.upserted_ids.tolist()) == sorted([row_id(catalog, "b"), row_id(catalog, "c")])
    by_id = dict(zip(changes.upserted_ids.tolist(), changes.upserted_vectors, strict=True))
    np.testing.assert_array_equal(by_id[row_id(catalog, "b")], vector(3))  # the new vector


def test_changes_since_a_revision_hold_later_removals(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2)])
    a_id = row_id(catalog, "a")
    revision = catalog.revision()
    _, removed = catalog.remove(["a", "never-existed"])
    assert removed == ["a"]
    changes = catalog.changes_since(revision, MODEL)
    assert changes.removed_ids == [a_id]
    assert len(changes.upserted_ids) == 0
    assert changes.revision == revision + 1


def test_removals_before_the_revision_are_not_repeated(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2)])
    catalog.remove(["a"])
    revision = catalog.revision()
    changes = catalog.changes_since(revision, MODEL)
    assert changes.revision == revision
    assert changes.removed_ids == []
    assert len(changes.upserted_ids) == 0


def test_a_removed_and_re_added_product_gets_a_new_row_id(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1)])
    old_id = row_id(catalog, "a")
    revision = catalog.revision()
    catalog.remove(["a"])
    catalog.upsert([product("a", 2)])
    changes = catalog.changes_since(revision, MODEL)
    new_id = row_id(catalog, "a")
    assert new_id != old_id  # AUTOINCREMENT: a FAISS id is never handed to another product
    assert changes.removed_ids == [old_id]
    assert changes.upserted_ids.tolist() == [new_id]


def test_metadata_only_update_keeps_the_vector_and_leaves_the_index_alone(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1, title="old")])
    image_id = row_id(catalog, "a")
    revision = catalog.revision()
    new_revision, _ = catalog.upsert([ProductWrite(external_id="a", title="new")])  # images=None: kept
    changes = catalog.changes_since(revision, MODEL)
    assert changes.revision == new_revision
    assert changes.removed_ids == [] and len(changes.upserted_ids) == 0
    assert row_id(catalog, "a") == image_id
    np.testing.assert_array_equal(catalog.embeddings("a")[0][1], vector(1))
    record = catalog.get("a")
    assert record is not None and record.title == "new" and record.images[0].image_ref == "a.png"


def test_image_re_embedded_by_another_model_leaves_this_models_index(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2)])
    revision = catalog.revision()
    image_id = row_id(catalog, "a")
    again = ImageWrite("a.png", embedding=vector(3), embedding_model="other-model", keep_id=image_id)
    catalog.upsert([ProductWrite(external_id="a", images=[again])])
    changes = catalog.changes_since(revision, MODEL)
    assert changes.removed_ids == [image_id]
    assert len(changes.upserted_ids) == 0


def test_removing_one_image_keeps_the_others(catalog: Catalog) -> None:
    images = [ImageWrite(f"a{i}.png", embedding=vector(i), embedding_model=MODEL) for i in range(3)]
    catalog.upsert([ProductWrite(external_id="a", images=images)])
    ids = [image_id for image_id, _ in catalog.embeddings("a")]
    revision = catalog.revision()
    kept = [ImageWrite("a0.png", keep_id=ids[0]), ImageWrite("a2.png", keep_id=ids[2])]
    catalog.upsert([ProductWrite(external_id="a", images=kept)])
    changes = catalog.changes_since(revision, MODEL)
    assert changes.removed_ids == [ids[1]] and len(changes.upserted_ids) == 0
    assert [(image.id, image.position) for image in catalog.get("a").images] == [(ids[0], 0), (ids[2], 1)]
    np.testing.assert_array_equal(catalog.embeddings("a")[1][1], vector(2))


def test_pruned_removals_make_older_revisions_rebuild_and_newer_ones_catch_up(catalog: Catalog) -> None:
    catalog.upsert([product("a", 1), product("b", 2), product("c", 3)])
    before_removal = catalog.revision()
    removed_at, _ = catalog.remove(["a"])
    assert catalog.prune_removals(removed_at) == 1
    with pytest.raises(ChangesPruned):
        catalog.changes_since(before_removal, MODEL)  # that index still holds "a": it must rebuild
    b_row = row_id(catalog, "b")
    catalog.remove(["b"])
    changes = catalog.changes_since(removed_at, MODEL)  # indexes at the pruned revision lose nothing
    assert changes.removed_ids == [b_row]
