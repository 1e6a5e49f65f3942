"""VITRINE_IMAGE_STORE: where uploaded and local images are stored, seen from two replicas on one database.

Two servers share one catalog database and each has its own data folder, as two API processes on two
machines do. With the folder store an upload lives in the writer's folder only; with the database store
it is a blob written in the row's transaction, served by every replica, checked by ``verify`` and
dropped with the last image that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from search.catalog.plan import ProductDraft
from search.catalog.schema import ImageBlob
from search.catalog.service import ProductService
from search.catalog.transactions import ProductGone
from search.model.encoder import Encoder
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import InProcessServer, TestServer
from tests.support.settings import settings_for

Replicas = tuple[TestServer, TestServer]


@pytest.fixture
def replicas(encoder: Encoder, tiny_model_dir: Path, tmp_path: Path) -> Iterator[Callable[[str], Replicas]]:
    """Two in-process servers on one SQLite catalog, each with a data folder of its own."""
    from api.app import create_app

    started: list[InProcessServer] = []

    def start(image_store: str) -> Replicas:
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        for name in ("a", "b"):
            settings = settings_for(
                tiny_model_dir, tmp_path / name, database_url=url, image_store=image_store
            )
            started.append(InProcessServer(create_app(settings, encoder=encoder)).start())
        return started[0], started[1]

    yield start
    for server in started:
        server.stop()


def products_of(server: TestServer) -> ProductService:
    return server.app.state.vitrine.components.products


def png(seed: int) -> bytes:
    return encode_png(patterned_image(seed))


def test_an_upload_on_one_replica_is_served_by_the_other_from_the_database_store(replicas) -> None:
    a, b = replicas("database")
    picture = png(901)
    assert a.client.put("/products/p1", json={"image": b64(picture), "title": "tile"}).status_code == 201
    served = b.client.get("/products/p1/image")
    assert served.status_code == 200 and served.content == picture
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert b.client.get("/products/p1/images/0").content == picture
    report = products_of(b).verify()
    assert report.ok, report.problems
    assert not (Path(products_of(a).sync.index_path).parents[1] / "images").exists()  # no file written


def test_with_the_folder_store_the_other_replica_has_no_copy(replicas) -> None:
    """Why the choice exists: a folder is one machine's."""
    a, b = replicas("folder")
    assert a.client.put("/products/p1", json={"image": b64(png(902))}).status_code == 201
    assert a.client.get("/products/p1/image").status_code == 200
    assert_error(b.client.get("/products/p1/image"), 404)
    problems = products_of(b).verify().problems
    assert any("stored image files are missing" in problem for problem in problems)


def test_verify_reports_a_missing_blob(replicas) -> None:
    a, b = replicas("database")
    assert a.client.put("/products/p1", json={"image": b64(png(903))}).status_code == 201
    catalog = products_of(b).catalog
    with catalog.engine.begin() as connection:
        connection.execute(delete(ImageBlob))
    problems = products_of(b).verify().problems
    assert problems == ["1 stored image database blobs are missing: ['p1']"]
    assert_error(b.client.get("/products/p1/image"), 404)


def test_a_blob_lives_as_long_as_an_image_names_it(replicas) -> None:
    a, b = replicas("database")
    catalog = products_of(a).catalog
    first, second = png(904), png(905)
    for pid in ("p1", "p2"):  # one picture, two products: one blob
        assert a.client.put(f"/products/{pid}", json={"image": b64(first)}).status_code == 201
    [shared] = catalog.get("p1").images
    assert catalog.blob_names([shared.image_file]) == {shared.image_file}
    assert a.client.delete("/products/p1").status_code == 200
    assert catalog.blob_names([shared.image_file]) == {shared.image_file}  # p2 still shows it
    assert b.client.put("/products/p2", json={"image": b64(second)}).status_code == 200  # replaced
    assert catalog.blob_names([shared.image_file]) == set()
    [new] = catalog.get("p2").images
    assert b.client.delete("/products/p2").status_code == 200
    assert catalog.blob_names([new.image_file]) == set()
    assert products_of(a).verify().ok


def test_a_failed_write_leaves_no_blob(replicas) -> None:
    a, _ = replicas("database")
    service = products_of(a)
    writer = service.writer
    draft = ProductDraft.from_fields("gone", {"image": b64(png(906))}, writer.limits)
    prepared = writer.plan(draft, None, writer.read_images(draft.images, None, refetch=True))
    prepared.plan.write.must_exist = True  # a PATCH whose product was removed meanwhile
    [name] = prepared.files
    with pytest.raises(ProductGone):
        writer.commit([prepared])
    assert service.catalog.blob_names([name]) == set()
    assert service.verify().ok
