"""The catalog's one writer (search/catalog/writer.py) on a real SQLite catalog, image store, image loader
(a loopback image server) and the tiny random SigLIP model: which pictures are read and how they are
named and stored, the plan's pixels, vectors computed elsewhere, re-embedding, one embedding pass and one
transaction per commit, the listeners, and a manifest's local files kept inside its folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search.catalog import Catalog
from search.catalog.db import migrate
from search.catalog.plan import ImageSource, ProductDraft, ProductLimits, WritePlan
from search.catalog.records import vector_to_bytes
from search.catalog.writer import CatalogWriter, Committed, ImagesRead, PreparedWrite, read_local_image
from search.errors import BadInput, VitrineError
from search.images.loader import decode_image
from search.images.store import ImageStore, sha256_hex
from search.wiring import build_image_loader
from tests.support.http import ImageServer
from tests.support.images import b64, encode_png, patterned_image
from tests.support.settings import settings_for

MODEL = "model-a"
DIM = 8  # vectors given to the writer: any size, the catalog stores them as they are
PNG = [encode_png(patterned_image(seed)) for seed in range(4)]


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    url = f"sqlite:///{tmp_path / 'vitrine.db'}"
    migrate(url)
    catalog = Catalog.open(url)
    yield catalog
    catalog.close()


@pytest.fixture
def origin() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


@pytest.fixture
def writer(catalog, tmp_path, tiny_model_dir, encoder, origin) -> Iterator[CatalogWriter]:
    loader = build_image_loader(settings_for(tiny_model_dir, tmp_path))
    (tmp_path / "images").mkdir()
    writer = CatalogWriter(catalog, ImageStore(tmp_path / "images"), MODEL, ProductLimits(), loader, encoder)
    yield writer
    loader.close()


def put(writer: CatalogWriter, external_id: str, images: list[str], **fields) -> Committed:
    draft = writer.draft(external_id, {"images": images, **fields})
    return writer.commit([writer.prepare(draft, writer.catalog.get(external_id))])


def vectors_of(writer: CatalogWriter, external_id: str) -> list[np.ndarray]:
    return [vector for _, vector in writer.catalog.embeddings(external_id)]


def embedding(writer: CatalogWriter, data: bytes) -> np.ndarray:
    picture = writer.images.decode(data)
    return writer.encoder.embed_pixels(writer.encoder.preprocess([picture]))[0]


# Drafts -----------------------------------------------------------------------------------------------------


def test_writes_to_one_id_wait_for_each_other(writer):
    entered = threading.Event()

    def second_writer() -> None:
        with writer.locks.hold(["p1"]):
            entered.set()

    with writer.locks.hold(["p1"]):
        other = threading.Thread(target=second_writer)
        other.start()
        assert not entered.wait(0.2)  # held here: the other writer waits
    other.join(10)
    assert entered.is_set()


def test_drafts_are_checked_against_the_writers_limits(catalog, tmp_path):
    writer = CatalogWriter(catalog, ImageStore(tmp_path), MODEL, ProductLimits(max_title_chars=3))
    assert writer.draft("p", {"title": "abc"}).title == "abc"
    with pytest.raises(BadInput, match="title is 4 characters; the limit is 3"):
        writer.draft("p", {"title": "abcd"})


# Reading ----------------------------------------------------------------------------------------------------


def test_no_images_named_reads_nothing(writer):
    assert writer.read_images(None, None) == ImagesRead(None)


def test_an_uploaded_picture_is_hashed_named_for_the_store_and_kept_for_the_commit(writer):
    read = writer.read_images([b64(PNG[0])], None)
    name = writer.image_store.name_for(PNG[0])
    assert [(s.image_ref, s.image_sha256, s.image_file, s.stored) for s in read.sources] == [
        ("upload", sha256_hex(PNG[0]), name, None)
    ]
    assert read.files == {name: PNG[0]}
    assert list(read.pictures) == [0]
    assert read.pictures[0].size == (64, 64)


def test_a_url_is_fetched_and_kept_as_a_url_with_no_stored_copy(writer, origin):
    url = origin.add("/a.png", PNG[1])
    read = writer.read_images([url], None)
    assert [(s.image_ref, s.image_sha256, s.image_file) for s in read.sources] == [
        (url, sha256_hex(PNG[1]), None)
    ]
    assert read.files == {}
    assert origin.hits == {"/a.png": 1}


def test_a_stored_url_is_trusted_unread_unless_refetching(writer, origin):
    url = origin.add("/a.png", PNG[1])
    put(writer, "p1", [url])
    stored = writer.catalog.get("p1")
    read = writer.read_images([url, url], stored)
    # The first is the stored image (not fetched); the same URL again is a picture of its own.
    assert [s.stored for s in read.sources] == [stored.images[0], None]
    assert list(read.pictures) == [1]
    assert origin.hits == {"/a.png": 2}
    writer.read_images([url], stored, refetch=True)
    assert origin.hits == {"/a.png": 3}


def test_a_failing_picture_is_named_by_its_position(writer):
    with pytest.raises(BadInput) as one:
        writer.read_images(["not base64 !"], None)
    assert str(one.value).startswith("image: ")
    with pytest.raises(BadInput) as two:
        writer.read_images([b64(PNG[0]), "not base64 !"], None)
    assert str(two.value).startswith("images[1]: ")


def test_a_manifests_picture_keeps_its_path_and_is_stored(writer, tmp_path):
    folder = tmp_path / "manifest"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG[2])
    read = writer.read_images(["a.png"], None, base_dir=folder)
    name = writer.image_store.name_for(PNG[2])
    assert [(s.image_ref, s.image_file) for s in read.sources] == [("a.png", name)]
    assert read.files == {name: PNG[2]}


def test_without_a_loader_images_cannot_be_written(catalog, tmp_path):
    writer = CatalogWriter(catalog, ImageStore(tmp_path), MODEL, ProductLimits())
    with pytest.raises(BadInput) as refused:
        writer.read_images([b64(PNG[0])], None)
    assert str(refused.value) == "writing images needs the image loader, which is not loaded here"


# Planning ---------------------------------------------------------------------------------------------------


def test_the_plan_carries_pixels_of_exactly_the_pictures_to_embed(writer):
    put(writer, "p1", [b64(PNG[0])])
    draft = writer.draft("p1", {"images": [b64(PNG[0]), b64(PNG[1])]})
    stored = writer.catalog.get("p1")
    prepared = writer.plan(draft, stored, writer.read_images(draft.images, stored))
    assert prepared.plan.embed == [1]
    assert prepared.to_embed == 1
    expected = writer.encoder.preprocess([writer.images.decode(PNG[1])])
    np.testing.assert_array_equal(prepared.pixels, expected)
    assert set(prepared.files) == {writer.image_store.name_for(PNG[0]), writer.image_store.name_for(PNG[1])}


def test_prepare_reads_a_manifests_files_and_refetches_when_asked(writer, origin, tmp_path):
    folder = tmp_path / "manifest"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG[2])
    draft = writer.draft("p1", {"image": "a.png"})
    prepared = writer.prepare(draft, None, base_dir=folder)
    assert prepared.draft is draft
    assert prepared.plan.write.images[0].image_ref == "a.png"
    url = origin.add("/u.png", PNG[1])
    put(writer, "p2", [url])
    stored = writer.catalog.get("p2")
    assert writer.prepare(writer.draft("p2", {"image": url}), stored).plan.kind == "unchanged"
    assert origin.hits == {"/u.png": 1}  # trusted: not fetched again
    assert writer.prepare(writer.draft("p2", {"image": url}), stored, refetch=True).plan.kind == "unchanged"
    assert origin.hits == {"/u.png": 2}


def test_a_plan_with_nothing_to_embed_has_no_pixels(writer):
    put(writer, "p1", [b64(PNG[0])])
    stored = writer.catalog.get("p1")
    prepared = writer.prepare(writer.draft("p1", {"images": [b64(PNG[0])], "title": "New"}), stored)
    assert prepared.plan.kind == "metadata"
    assert prepared.pixels is None
    assert prepared.to_embed == 0


def test_a_stored_url_and_an_upload_of_the_same_picture_are_written_together(writer, origin):
    # Found while pinning the writer for mutation testing: the upload (read, same content) took the stored image by its hash, so
    # the trusted URL, which was not read, had to be embedded without pixels: the write failed with
    # "images[1] must be read again: the stored copy changed meanwhile", which was not true.
    url = origin.add("/a.png", PNG[0])
    put(writer, "p1", [url])
    stored = writer.catalog.get("p1")
    prepared = writer.prepare(writer.draft("p1", {"images": [b64(PNG[0]), url]}), stored)
    assert [image.keep_id for image in prepared.plan.write.images] == [None, stored.images[0].id]
    assert prepared.plan.embed == [0]
    writer.commit([prepared])
    assert [image.image_ref for image in writer.catalog.get("p1").images] == ["upload", url]
    assert origin.hits == {"/a.png": 1}


def test_a_read_that_misses_a_picture_the_plan_must_embed_asks_for_a_new_read(writer, origin):
    url = origin.add("/a.png", PNG[1])
    put(writer, "p1", [url])
    stored = writer.catalog.get("p1")
    image = stored.images[0]
    # A read that names one stored image twice, unread: the second must be embedded, and has no pixels.
    read = ImagesRead([ImageSource(url, stored=image), ImageSource(url, stored=image)])
    with pytest.raises(BadInput) as refused:
        writer.plan(writer.draft("p1", {"images": [url, url]}), stored, read)
    assert str(refused.value) == "images[1] must be read again: the stored copy changed meanwhile"


def test_without_a_model_nothing_is_embedded(catalog, tmp_path, writer):
    bare = CatalogWriter(catalog, writer.image_store, MODEL, ProductLimits(), writer.images)
    with pytest.raises(BadInput) as refused:
        bare.prepare(bare.draft("p1", {"image": b64(PNG[0])}), None)
    assert str(refused.value) == "this operation needs the model, which is not loaded here"


# Vectors made elsewhere -------------------------------------------------------------------------------------


def unit(seed: int, dim: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_given_vectors_are_stored_as_given(writer):
    vectors = [unit(1, DIM), unit(2, DIM).astype(np.float64)]
    prepared = writer.plan_with_vectors(writer.draft("p1", {"images": ["a.png", "b.png"]}), None, vectors)
    assert prepared.plan.kind == "created"
    assert prepared.pixels is None
    writer.commit([prepared])
    stored = vectors_of(writer, "p1")
    assert [vector_to_bytes(v) for v in stored] == [vector_to_bytes(v) for v in vectors]


def test_a_vector_equal_to_a_stored_images_keeps_that_image(writer):
    a, b, c = unit(1, DIM), unit(2, DIM), unit(3, DIM).astype(np.float64)
    writer.commit([writer.plan_with_vectors(writer.draft("p1", {"images": ["a", "b"]}), None, [a, b])])
    stored = writer.catalog.get("p1")
    ids = [image.id for image in stored.images]
    # b twice: the first keeps stored image b, the second is new; c is new; a is dropped.
    draft = writer.draft("p1", {"images": ["b", "b2", "c"]})
    prepared = writer.plan_with_vectors(draft, stored, [b, b, c])
    assert prepared.draft is draft
    assert prepared.plan.kind == "updated"
    assert prepared.plan.changes == {"images": {"added": ["b2", "c"], "removed": ["a"], "kept": 1}}
    assert [image.keep_id for image in prepared.plan.write.images] == [ids[1], None, None]
    assert prepared.plan.embed == [1, 2]
    assert prepared.plan.write.images[2].embedding.dtype == np.float32
    writer.commit([prepared])
    assert [vector_to_bytes(v) for v in vectors_of(writer, "p1")] == [vector_to_bytes(v) for v in (b, b, c)]


def test_a_stored_image_of_another_model_is_never_kept(writer, catalog):
    a = unit(1, DIM)
    other = CatalogWriter(catalog, writer.image_store, "model-b", ProductLimits())
    other.commit([other.plan_with_vectors(other.draft("p1", {"images": ["a"]}), None, [a])])
    prepared = writer.plan_with_vectors(writer.draft("p1", {"images": ["a"]}), catalog.get("p1"), [a])
    assert prepared.plan.embed == [0]


def test_vectors_must_match_the_images_one_to_one(writer):
    with pytest.raises(ValueError, match="2 images but 1 vectors"):
        writer.plan_with_vectors(writer.draft("p1", {"images": ["a", "b"]}), None, [unit(1, 4)])


# Re-embedding -----------------------------------------------------------------------------------------------


def test_reembedding_keeps_every_image_and_its_id_with_a_new_vector(writer):
    put(writer, "p1", [b64(PNG[0]), b64(PNG[1])], title="Mug", category="kitchen", color="red")
    record = writer.catalog.get("p1")
    prepared = writer.reembedded(record, [unit(5, DIM).astype(np.float64), unit(6, DIM)], "model-b")
    write = prepared.plan.write
    assert prepared.plan == WritePlan("updated", write, [], {})  # nothing to embed here, no field changes
    assert (write.external_id, write.title, write.category, write.attributes) == (
        "p1",
        "Mug",
        "kitchen",
        {"color": "red"},
    )
    assert write.must_exist is True
    assert [
        (i.keep_id, i.image_ref, i.image_sha256, i.image_file, i.embedding_model) for i in write.images
    ] == [
        (image.id, image.image_ref, image.image_sha256, image.image_file, "model-b")
        for image in record.images
    ]
    assert all(i.embedding.dtype == np.float32 for i in write.images)
    assert prepared.draft == ProductDraft("p1", "Mug", "kitchen", {"color": "red"})
    with pytest.raises(ValueError):
        writer.reembedded(record, [unit(5, DIM)], "model-b")  # one vector per image, in order
    writer.commit([prepared])
    after = writer.catalog.get("p1")
    assert [image.id for image in after.images] == [image.id for image in record.images]
    assert [image.embedding_model for image in after.images] == ["model-b", "model-b"]


def test_reembedding_a_product_removed_meanwhile_fails_and_creates_nothing(writer):
    put(writer, "p1", [b64(PNG[0])])
    record = writer.catalog.get("p1")
    prepared = writer.reembedded(record, [unit(5, DIM)], "model-b")
    writer.remove(["p1"])
    with pytest.raises(VitrineError):
        writer.commit([prepared])
    assert writer.catalog.get("p1") is None


# Committing -------------------------------------------------------------------------------------------------


def test_one_commit_embeds_every_pending_picture_in_one_pass_in_order(writer, monkeypatch):
    batches = []
    embed = writer.encoder.embed_pixels
    monkeypatch.setattr(
        writer.encoder, "embed_pixels", lambda pixels: batches.append(len(pixels)) or embed(pixels)
    )
    first = writer.prepare(writer.draft("p1", {"image": b64(PNG[0])}), None)
    second = writer.prepare(writer.draft("p2", {"images": [b64(PNG[1]), b64(PNG[2])]}), None)
    result = writer.commit([first, second])
    assert batches == [3]
    assert first.pixels is None and second.pixels is None  # a retry does not embed again
    assert [r.external_id for r in result.records] == ["p1", "p2"]
    assert result.created == [True, True]
    assert result.revision == writer.catalog.revision()
    for external_id, pictures in (("p1", [0]), ("p2", [1, 2])):
        stored = vectors_of(writer, external_id)
        for vector, seed in zip(stored, pictures, strict=True):
            np.testing.assert_allclose(vector, embedding(writer, PNG[seed]), atol=1e-5)


def test_a_commit_writes_the_stored_copies_and_tells_the_listeners(writer):
    heard: list[Committed] = []
    writer.listeners.append(heard.append)
    result = put(writer, "p1", [b64(PNG[0])])
    name = writer.image_store.name_for(PNG[0])
    assert writer.image_store.path(name).read_bytes() == PNG[0]
    assert heard == [result]
    again = put(writer, "p1", [b64(PNG[0])], title="New")
    assert again.created == [False]
    assert again.revision == result.revision + 1


def test_a_commit_with_nothing_to_write_tells_nobody(writer):
    heard: list[Committed] = []
    put(writer, "p1", [b64(PNG[0])])
    writer.listeners.append(heard.append)
    revision = writer.catalog.revision()
    assert put(writer, "p1", [b64(PNG[0])]) == Committed([], [])
    assert heard == []
    assert writer.catalog.revision() == revision


def test_a_failed_commit_leaves_no_stored_copy(writer):
    prepared = writer.prepare(writer.draft("p1", {"image": b64(PNG[3])}), None)
    prepared.plan.write.must_exist = True  # gone by the time the transaction runs
    with pytest.raises(VitrineError):
        writer.commit([prepared])
    assert writer.image_store.path(writer.image_store.name_for(PNG[3])) is None
    assert writer.catalog.get("p1") is None


def test_removing_reports_the_ids_that_existed_and_tells_the_listeners(writer):
    put(writer, "p1", [b64(PNG[0])])
    heard: list[Committed] = []
    writer.listeners.append(heard.append)
    assert writer.remove(["p1", "nope"]) == ["p1"]
    assert heard == [Committed([], [], writer.catalog.revision())]


def test_a_prepared_write_without_a_plan_write_is_skipped(writer):
    unchanged = PreparedWrite(writer.draft("p1", {}), WritePlan("unchanged", None, [], {}))
    created = writer.prepare(writer.draft("p2", {"image": b64(PNG[0])}), None)
    result = writer.commit([unchanged, created])
    assert [r.external_id for r in result.records] == ["p2"]


# A manifest's local files -----------------------------------------------------------------------------------


def test_a_local_image_is_read_inside_its_folder_up_to_the_limit(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"12345")
    assert read_local_image(tmp_path, "sub/a.png", max_bytes=5) == b"12345"
    with pytest.raises(BadInput) as big:
        read_local_image(tmp_path, "sub/a.png", max_bytes=4)
    assert str(big.value) == "image file 'sub/a.png' is 5 bytes; the limit is 4 (VITRINE_MAX_IMAGE_BYTES)"


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("../outside.png", "image path '../outside.png' leaves the manifest's folder"),
        ("missing.png", "image file 'missing.png' does not exist"),
        ("sub", "image file 'sub' does not exist"),
    ],
)
def test_a_local_image_outside_the_folder_or_missing_is_refused(tmp_path, relative, message):
    folder = tmp_path / "manifest"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"x")
    with pytest.raises(BadInput) as refused:
        read_local_image(folder, relative, max_bytes=100)
    assert str(refused.value) == message


def test_a_url_in_a_manifest_is_fetched_not_opened(writer, origin, tmp_path):
    url = origin.add("/a.png", PNG[1])
    read = writer.read_images([url], None, base_dir=tmp_path)
    assert read.sources[0].image_ref == url
    assert origin.hits == {"/a.png": 1}


def test_decoded_pictures_match_the_loaders_decoding(writer):
    read = writer.read_images([b64(PNG[0])], None)
    reference = decode_image(PNG[0], writer.images.limits)
    assert read.pictures[0].tobytes() == reference.tobytes()


# A distributed job's writes -----------------------------------------------------------------------------------
# indexer/engines/ray.py: workers read and embed, the driver plans with their sources, files and vectors.


def test_a_jobs_reads_and_vectors_are_written_as_the_local_path_writes_them(writer):
    draft = writer.draft("p1", {"images": [b64(PNG[0]), b64(PNG[1])], "title": "Tile"})
    read = writer.read_images(draft.images, None)  # what a worker's read returns
    vectors = {0: unit(1, DIM), 1: unit(2, DIM).astype(np.float64)}
    prepared = writer.plan_embedded(draft, None, read.sources, read.files, vectors)
    assert (prepared.draft, prepared.plan.kind, prepared.files) == (draft, "created", read.files)
    writer.commit([prepared])
    assert writer.catalog.get("p1").title == "Tile"
    assert [vector_to_bytes(v) for v in vectors_of(writer, "p1")] == [
        vector_to_bytes(unit(1, DIM)),
        vector_to_bytes(unit(2, DIM)),  # stored as float32
    ]
    for data in PNG[:2]:
        assert writer.image_store.path(writer.image_store.name_for(data)).read_bytes() == data
    # The same row again: the same skip decision as the local path, with no vector needed.
    stored = writer.catalog.get("p1")
    again = writer.plan_embedded(draft, stored, writer.read_images(draft.images, stored).sources, {}, {})
    assert again.plan.embed == [] and writer.commit([again]) == Committed([], [])


def test_a_vector_missing_for_an_image_the_plan_embeds_asks_for_a_new_read(writer):
    draft = writer.draft("p1", {"images": [b64(PNG[0]), b64(PNG[1])]})
    read = writer.read_images(draft.images, None)
    with pytest.raises(BadInput) as refused:
        writer.plan_embedded(draft, None, read.sources, read.files, {0: unit(1, DIM)})
    assert refused.value.message == "images[1] must be read again: the stored product changed meanwhile"
    assert writer.catalog.get("p1") is None


def test_with_images_in_the_database_the_files_travel_in_the_transaction(catalog, tmp_path, writer):
    from search.catalog.blobs import DatabaseImageStore

    in_db = CatalogWriter(catalog, DatabaseImageStore(catalog), MODEL, ProductLimits(), writer.images, writer.encoder)
    draft = in_db.draft("p1", {"images": [b64(PNG[2])]})
    in_db.commit([in_db.prepare(draft, None)])
    name = in_db.image_store.name_for(PNG[2])
    assert catalog.image_blob(name) == PNG[2]
    assert list((tmp_path / "images").iterdir()) == []  # nothing in the folder store
