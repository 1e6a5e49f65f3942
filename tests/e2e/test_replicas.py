"""Replicas: two `python -m api` processes (real uvicorn on 127.0.0.1) on one throwaway PostgreSQL, each
with its own data folder, images in the database (VITRINE_IMAGE_STORE=database).

A write on one is searchable and served on the other within a bounded time; a delete on one is gone on
the other; writes racing from both end in one state that both serve and ``indexer verify`` passes.
Runs when VITRINE_TEST_POSTGRES_URL is set (``.ci/with-postgres``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from devtools.api_process import clean_env, free_port, start_api
from search.settings import Settings
from tests.support.images import b64, encode_png, patterned_image
from tests.support.indexer import run_indexer_in_process
from tests.support.postgres import postgres_database_lock

URL = os.environ.get("VITRINE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set VITRINE_TEST_POSTGRES_URL to run against PostgreSQL")
VISIBLE_WITHIN_S = 10  # a bound for the test, not the measured staleness (bench/bench_replicas.py)


class Replica:
    def __init__(self, model_dir: Path, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = clean_env()
        env.update(
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            VITRINE_MODEL=str(model_dir),
            VITRINE_DATA_DIR=str(data_dir),
            VITRINE_DATABASE_URL=URL or "",
            VITRINE_IMAGE_STORE="database",
            VITRINE_DEVICE="cpu",
            VITRINE_DTYPE="float32",
        )
        self.process = start_api(env, self.port, output=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            assert self.process.poll() is None, "the replica exited"
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "replica did not become ready"
            time.sleep(0.1)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()  # a graceful stop saves the index file
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def replicas(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    with postgres_database_lock(tmp_path_factory):
        engine = create_engine(URL)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
        root = tmp_path_factory.mktemp("replicas")
        first = Replica(tiny_model_dir, root / "a")
        first.wait_ready()  # the first migrates and records the embedding space; then the second
        second = Replica(tiny_model_dir, root / "b")
        try:
            second.wait_ready()
            yield first, second
        finally:
            first.stop()
            second.stop()


def picture(seed: int) -> bytes:
    return encode_png(patterned_image(seed))


def top_hit(replica: Replica, image: bytes) -> str | None:
    found = replica.client.post("/search", json={"image": b64(image), "k": 1}).json()["results"]
    return found[0]["id"] if found else None


def within(condition: Callable[[], bool], seconds: float = VISIBLE_WITHIN_S) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_put_on_one_replica_is_searched_and_served_on_the_other(replicas) -> None:
    a, b = replicas
    image = picture(960)
    assert (
        a.client.put("/products/r-1", json={"image": b64(image), "title": "replica tile"}).status_code == 201
    )
    within(lambda: top_hit(b, image) == "r-1")
    assert b.client.get("/products/r-1").json()["title"] == "replica tile"
    served = b.client.get("/products/r-1/image")
    assert served.status_code == 200 and served.content == image
    assert b.client.get("/info").json()["storage"]["image_store"] == "database"


def test_a_delete_on_one_replica_is_gone_on_the_other(replicas) -> None:
    a, b = replicas
    image = picture(961)
    assert a.client.put("/products/r-2", json={"image": b64(image)}).status_code == 201
    within(lambda: top_hit(b, image) == "r-2")
    assert b.client.delete("/products/r-2").status_code == 200
    assert a.client.get("/products/r-2").status_code == 404
    within(lambda: top_hit(a, image) != "r-2")
    assert a.client.get("/products/r-2/image").status_code == 404


def test_racing_writes_from_both_replicas_end_in_one_state(
    replicas, tiny_model_dir: Path, tmp_path: Path
) -> None:
    a, b = replicas
    ids = [f"race-{i}" for i in range(4)]
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def write(replica: Replica, side: int) -> None:
        barrier.wait()
        for round_ in range(3):
            for i, pid in enumerate(ids):
                body = {"image": b64(picture(970 + 10 * side + i)), "title": f"{side}-{round_}"}
                statuses.append(replica.client.put(f"/products/{pid}", json=body).status_code)
        barrier.wait()  # every PUT answered before either side removes (a later PUT would recreate it)
        replica.client.delete(f"/products/{ids[side]}")  # each side removes one

    threads = [threading.Thread(target=write, args=(replica, side)) for side, replica in enumerate((a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {200, 201} and statuses.count(201) >= len(ids)

    def listing(replica: Replica) -> list[tuple[str, str, list[str]]]:
        items = replica.client.get("/products", params={"limit": 100}).json()["results"]
        return [(p["id"], p["title"], p["updated_at"]) for p in items if p["id"].startswith("race-")]

    assert listing(a) == listing(b)
    assert [pid for pid, *_ in listing(a)] == ids[2:]
    for pid, *_ in listing(a):  # the vector both indexes hold is the stored image's
        image = a.client.get(f"/products/{pid}/image").content
        within(lambda image=image, pid=pid: top_hit(a, image) == pid == top_hit(b, image))
    settings = Settings(
        model=str(tiny_model_dir), data_dir=tmp_path / "verify", database_url=URL, image_store="database"
    )
    # A third machine's view: the database's rows, vectors and blobs agree (its own index built first).
    assert run_indexer_in_process(settings, "rebuild").returncode == 0
    verified = run_indexer_in_process(settings, "verify")
    assert verified.returncode == 0, verified.stdout
