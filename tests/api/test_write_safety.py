"""Issue 6, classes 5, 6 and 7 (writes): every PUT is validated before anything is written, a stored
image file lives and dies with its row, writes to one id are serialised and answer truthfully, and the
size caps on ids, titles and attributes hold."""

from __future__ import annotations

import io
import threading
from collections import Counter
from itertools import count
from pathlib import Path

import pytest
from PIL import Image

from search.catalog.locks import IdLocks
from search.images.store import ImageStore
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import LiveServer

IMAGE = b64(encode_png(patterned_image(301)))


def product(server: LiveServer, product_id: str) -> dict:
    response = server.client.get(f"/products/{product_id}")
    assert response.status_code == 200, response.text
    return response.json()


def stored_files(data_dir: Path) -> set[str]:
    folder = data_dir / "images"
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def put_raw(server: LiveServer, product_id: str, body: str):
    return server.client.put(
        f"/products/{product_id}", content=body.encode(), headers={"Content-Type": "application/json"}
    )


# 5. Half-done writes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-Infinity", "1e400"])
def test_a_non_finite_attribute_is_400_and_changes_nothing(server, value):
    assert server.client.put("/products/p1", json={"image": IMAGE, "size": 60}).status_code == 201
    before = product(server, "p1")
    assert_error(put_raw(server, "p1", f'{{"size": {value}, "title": "new"}}'), 400)
    assert product(server, "p1") == before


def test_an_invalid_title_after_a_new_image_leaves_no_file(server, tmp_path):
    data_dir = tmp_path / "data"
    files = stored_files(data_dir)
    new_image = b64(encode_png(patterned_image(302)))
    body = f'{{"image": "{new_image}", "title": "bad \\ud800"}}'
    assert_error(put_raw(server, "p2", body), 400)
    too_long = {"image": new_image, "title": "t" * 1001}
    assert "VITRINE_MAX_TITLE_CHARS" in assert_error(server.client.put("/products/p2", json=too_long), 400)
    assert stored_files(data_dir) == files
    assert_error(server.client.get("/products/p2"), 404)


def test_a_failed_commit_removes_the_file_it_wrote(tmp_path):
    store = ImageStore(tmp_path / "images")
    data = encode_png(patterned_image(303))
    with pytest.raises(RuntimeError), store.stored(data, lambda name: False) as name:
        assert (tmp_path / "images" / name).is_file()
        raise RuntimeError("commit failed")
    assert not (tmp_path / "images" / name).exists()


def test_a_failed_commit_keeps_a_file_that_a_row_or_another_write_needs(tmp_path):
    store = ImageStore(tmp_path / "images")
    data = encode_png(patterned_image(304))
    with pytest.raises(RuntimeError), store.stored(data, lambda name: True) as name:
        raise RuntimeError("commit failed")
    assert (tmp_path / "images" / name).is_file()  # a committed row refers to it
    (tmp_path / "images" / name).unlink()
    with store.stored(data, lambda name: False) as other:
        with pytest.raises(RuntimeError), store.stored(data, lambda name: False):
            raise RuntimeError("commit failed")
        assert (tmp_path / "images" / other).is_file()  # the other write in flight still needs it


def test_concurrent_puts_creating_one_id_answer_created_exactly_once(server):
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def put(i: int) -> None:
        barrier.wait()
        body = {"image": b64(encode_png(patterned_image(310 + i))), "title": f"t{i}"}
        statuses.append(server.client.put("/products/raced", json=body).status_code)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(statuses) == {201: 1, 200: 3}


def test_a_put_waiting_on_a_slow_origin_holds_up_no_other_write(server, image_server):
    """Images are read before the product's lock is taken: a write of another id that hashes to the
    same lock stripe is answered while the first write's origin still has not answered."""
    locks = IdLocks()
    slow_id = "waits-on-origin"
    other_id = next(f"other-{i}" for i in count() if locks.stripe(f"other-{i}") == locks.stripe(slow_id))
    gate = threading.Event()
    url = image_server.add("/slow-origin.png", encode_png(patterned_image(320)), gate=gate)
    answers: dict[str, int] = {}
    slow = threading.Thread(
        target=lambda: answers.update(
            slow=server.client.put(f"/products/{slow_id}", json={"image": url}).status_code
        )
    )
    slow.start()
    try:
        for _ in range(300):  # until the first PUT is inside the origin's answer (at most 30 s)
            if image_server.in_flight:
                break
            threading.Event().wait(0.1)
        assert image_server.in_flight == 1
        other = server.client.put(f"/products/{other_id}", json={"image": IMAGE}, timeout=20)
        assert other.status_code == 201, other.text
        assert image_server.in_flight == 1 and slow.is_alive()  # the slow write was still waiting
    finally:
        gate.set()
        slow.join(30)
    assert answers == {"slow": 201}
    assert product(server, slow_id)["id"] == slow_id


# 6. 500s where a 400 belongs ----------------------------------------------------------------------------------


def test_put_accepts_a_multi_picture_jpeg_like_post(server):
    first, second = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    response = server.client.put("/products/camera", json={"image": b64(buffer.getvalue())})
    assert response.status_code == 201, response.text
    served = server.client.get("/products/camera/image")
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert served.content == buffer.getvalue()


def test_racing_put_put_delete_on_one_id_never_500s(server):
    statuses: list[int] = []

    def run(barrier: threading.Barrier, method: str, body: dict | None) -> None:
        barrier.wait()
        statuses.append(server.client.request(method, "/products/contended", json=body).status_code)

    for round_ in range(6):
        barrier = threading.Barrier(3)
        image = b64(encode_png(patterned_image(320 + round_)))
        actions = [
            ("PUT", {"image": image, "title": "a"}),
            ("PUT", {"title": "metadata only"}),
            ("DELETE", None),
        ]
        threads = [threading.Thread(target=run, args=(barrier, *action)) for action in actions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses and all(status < 500 for status in statuses), statuses
    assert set(statuses) <= {200, 201, 400, 404}


@pytest.mark.parametrize(
    "body",
    [
        '{"title": "\\ud800"}',
        '{"category": "\\udfff"}',
        '{"color": "\\ud800"}',
        '{"\\ud800": "key"}',
        '{"size": %s}' % ("9" * 4301),
    ],
)
def test_lone_surrogates_and_huge_ints_in_a_put_are_400(server, body):
    assert server.client.put("/products/p3", json={"image": IMAGE}).status_code == 201
    before = product(server, "p3")
    assert_error(put_raw(server, "p3", body), 400)
    assert product(server, "p3") == before


# 7. Caps and caching ---------------------------------------------------------------------------------------------


def test_size_caps_on_ids_titles_and_attributes_are_settings(start_server):
    server = start_server(max_id_chars=20, max_title_chars=30, max_attributes=3, max_attribute_chars=40)
    assert "VITRINE_MAX_ID_CHARS" in assert_error(
        server.client.put("/products/" + "x" * 21, json={"image": IMAGE}), 400
    )
    assert "VITRINE_MAX_TITLE_CHARS" in assert_error(
        server.client.put("/products/p", json={"image": IMAGE, "title": "t" * 31}), 400
    )
    many = {"image": IMAGE, **{f"a{i}": i for i in range(4)}}
    assert "VITRINE_MAX_ATTRIBUTES" in assert_error(server.client.put("/products/p", json=many), 400)
    long_value = {"image": IMAGE, "notes": "n" * 41}
    assert "VITRINE_MAX_ATTRIBUTE_CHARS" in assert_error(
        server.client.put("/products/p", json=long_value), 400
    )
    ok = {"image": IMAGE, "title": "t" * 30, "a": 1, "b": [1, 2], "notes": "n" * 30}
    assert server.client.put("/products/" + "x" * 20, json=ok).status_code == 201
    assert_error(server.client.get("/products/p"), 404)  # nothing of the refused writes was stored


def test_stored_images_behind_a_token_are_cache_private(start_server):
    server = start_server(api_tokens=["secret"])
    auth = {"Authorization": "Bearer secret"}
    assert server.client.put("/products/p", json={"image": IMAGE}, headers=auth).status_code == 201
    response = server.client.get("/products/p/image", headers=auth)
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("private")


def test_stored_images_of_an_open_server_are_cache_public(server):
    assert server.client.put("/products/p", json={"image": IMAGE}).status_code == 201
    assert server.client.get("/products/p/image").headers["cache-control"].startswith("public")
