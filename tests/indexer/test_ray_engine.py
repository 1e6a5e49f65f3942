"""``indexer add|reembed --engine ray``: the same catalog as the local engine, work spread over the
nodes of a two-node Ray cluster on loopback, shards that import without Ray, and a job killed
mid-run that a rerun completes with nothing lost or repeated and no Ray process left behind.

One two-node cluster (``ray.cluster_utils.Cluster``, 127.0.0.1, no dashboard) serves the module; the
in-process runs join it. The killed job runs as a process of its own with its own Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools.random_model import write_random_model
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog, copy_catalog
from tests.support.http import ImageServer
from tests.support.indexer import finish_indexer, run_indexer_in_process, start_indexer, summary_of
from tests.support.settings import indexer_settings

# Ray reads its settings when imported: it is imported by the cluster fixture, after they are set.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the ray extra is not installed (pip install -e '.[ray]')"
)

Indexer = Callable[..., subprocess.CompletedProcess[str]]
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """Two Ray nodes on 127.0.0.1 (2 logical CPUs each), joined by this process: the ray module."""
    saved = {name: os.environ.get(name) for name in [*LOOPBACK_RAY, "RAY_AUTH_TOKEN"]}
    os.environ.update(LOOPBACK_RAY, RAY_AUTH_TOKEN=secrets.token_hex(32))
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "node_ip_address": "127.0.0.1"},
    )
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stored(data_dir: Path) -> dict[tuple[str, int], tuple[tuple, np.ndarray]]:
    """(external id, image position) -> (the product's and image's fields, the vector)."""
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        rows = conn.execute(
            "SELECT p.external_id, i.position, p.title, p.category, p.attributes, i.image_ref, "
            "i.image_sha256, i.image_file, i.embedding_model, i.embedding "
            "FROM products p JOIN product_images i ON i.product_id = p.id"
        ).fetchall()
    return {(row[0], row[1]): (tuple(row[2:9]), np.frombuffer(row[9], "<f4")) for row in rows}


def assert_same_catalog(actual: Path, expected: Path, *, files: bool = True) -> None:
    got, want = stored(actual), stored(expected)
    assert sorted(got) == sorted(want)
    for key, (fields, vector) in want.items():
        if files:
            assert got[key][0] == fields, key
        assert np.abs(got[key][1] - vector).max() <= 1e-5, key


@pytest.fixture(scope="module")
def ray_run(
    ray_cluster: Any,
    indexed_catalog: IndexedCatalog,
    indexer_cli: Indexer,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, dict]:
    """The session's sample catalog (indexed by the local engine) added again on the cluster, with
    --out shards: (data folder, shards folder, the run's JSON summary)."""
    root = tmp_path_factory.mktemp("ray-run")
    shards = root / "shards"
    result = indexer_cli(
        root / "data",
        "add",
        indexed_catalog.manifest,
        "--engine",
        "ray",
        "--batch-size",
        2,
        "--out",
        shards,
        "--json",
        "--no-progress",
    )
    assert result.returncode == 0, summary_of(result)
    return root / "data", shards, json.loads(result.stdout)


def test_ray_stores_the_rows_and_vectors_the_local_engine_stores(
    ray_run: tuple[Path, Path, dict], indexed_catalog: IndexedCatalog, indexer_cli: Indexer
) -> None:
    data_dir, _, summary = ray_run
    assert (summary["added"], summary["embedded"], summary["failed"]) == (SAMPLE_PRODUCTS, SAMPLE_PRODUCTS, 0)
    assert_same_catalog(data_dir, indexed_catalog.data_dir)
    verify = indexer_cli(data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
    assert json.loads(verify.stdout)["ok"] is True


def test_a_rerun_on_ray_skips_every_stored_product(
    ray_run: tuple[Path, Path, dict], indexed_catalog: IndexedCatalog, indexer_cli: Indexer
) -> None:
    data_dir, _, _ = ray_run
    rerun = indexer_cli(
        data_dir, "add", indexed_catalog.manifest, "--engine", "ray", "--json", "--no-progress"
    )
    assert rerun.returncode == 0, summary_of(rerun)
    summary = json.loads(rerun.stdout)
    assert (summary["skipped"], summary["added"], summary["embedded"]) == (SAMPLE_PRODUCTS, 0, 0)


def test_two_nodes_share_the_embedding(ray_run: tuple[Path, Path, dict], ray_cluster: Any) -> None:
    nodes = {node["NodeID"] for node in ray_cluster.nodes() if node["Alive"]}
    per_node = ray_run[2]["nodes"]
    assert set(per_node) == nodes and len(nodes) == 2
    assert all(count > 0 for count in per_node.values()), per_node
    assert sum(per_node.values()) == SAMPLE_PRODUCTS


def test_the_shards_import_without_ray_into_the_same_catalog(
    ray_run: tuple[Path, Path, dict],
    indexed_catalog: IndexedCatalog,
    indexer_cli: Indexer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails: a machine without the extra
    imported = indexer_cli(tmp_path / "data", "import", ray_run[1], "--no-progress")
    assert imported.returncode == 0, summary_of(imported)
    assert f"{SAMPLE_PRODUCTS} rows: {SAMPLE_PRODUCTS} added" in imported.stdout
    # Imported vectors carry no stored image files (the shards hold vectors, not pictures).
    assert_same_catalog(tmp_path / "data", indexed_catalog.data_dir, files=False)


def test_without_the_extra_the_ray_engine_is_one_error_naming_it(
    indexer_cli: Indexer, indexed_catalog: IndexedCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = indexer_cli(tmp_path / "data", "add", indexed_catalog.manifest, "--engine", "ray")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --engine ray needs Ray, which is not installed: pip install 'vitrine[ray]' "
        "(the optional extra 'ray': ray[data]==2.60.0)"
    )


def test_reembed_on_ray_matches_the_local_reembed(
    ray_cluster: Any, indexed_catalog: IndexedCatalog, tmp_path: Path
) -> None:
    other = write_random_model("tiny", tmp_path / "tiny-seed-1", seed=1)
    local = copy_catalog(indexed_catalog, tmp_path / "local")
    on_ray = copy_catalog(indexed_catalog, tmp_path / "ray")
    runs = {
        "local": run_indexer_in_process(indexer_settings(other, local.data_dir), "reembed", "--json"),
        "ray": run_indexer_in_process(
            indexer_settings(other, on_ray.data_dir), "reembed", "--engine", "ray", "--json"
        ),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {summary_of(run)}"
        summary = json.loads(run.stdout)
        assert (summary["updated"], summary["switched"]) == (SAMPLE_PRODUCTS, True), name
    assert_same_catalog(on_ray.data_dir, local.data_dir)


def model_actor_processes() -> list[int]:
    """This machine's Ray actor processes that run the model (their title names the actor class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"_EmbedActor" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.e2e  # kills a process
def test_a_model_worker_killed_mid_job_loses_nothing(
    ray_cluster: Any, slow_url_manifest: Path, indexer_cli: Indexer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    results: list[subprocess.CompletedProcess[str]] = []
    job = threading.Thread(
        target=lambda: results.append(
            indexer_cli(
                data_dir,
                "add",
                slow_url_manifest,
                "--engine",
                "ray",
                "--batch-size",
                2,
                "--json",
                "--no-progress",
                url_allow_hosts=["127.0.0.1"],
            )
        )
    )
    job.start()
    deadline = time.monotonic() + 240
    killed = []
    while not killed and job.is_alive() and time.monotonic() < deadline:
        if product_count(data_dir / "vitrine.db") > 0:  # mid-job: batches are in flight
            for pid in model_actor_processes():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    job.join(timeout=300)
    assert killed, "the job ended before a model worker could be killed"
    assert results and results[0].returncode == 0, summary_of(results[0]) if results else "no result"
    summary = json.loads(results[0].stdout)
    assert (summary["added"], summary["failed"]) == (SAMPLE_PRODUCTS, 0), summary
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        images = conn.execute("SELECT count(*) FROM product_images").fetchone()[0]
    assert images == SAMPLE_PRODUCTS
    verify = indexer_cli(data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)


# A job killed mid-run ------------------------------------------------------------------------------------


def process_group(pgid: int) -> list[int]:
    """The live processes (not zombies) of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def ray_head_of(driver: int) -> int | None:
    """The pid of the ``ray start --head`` a driver started (its Ray's process group), if any yet."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == driver and b"ray.scripts.scripts start --head" in command:
            return int(entry.name)
    return None


def ray_token_of(head: int) -> bytes:
    """The ``RAY_AUTH_TOKEN=...`` entry of a job's Ray head: every process of that Ray carries it."""
    entries = Path(f"/proc/{head}/environ").read_bytes().split(b"\0")
    return next(entry for entry in entries if entry.startswith(b"RAY_AUTH_TOKEN="))


def live_processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_ray_gone(group: int, token: bytes, within: float = 20.0) -> None:
    """No process of the job's Ray is left: neither in its head's group nor any with its token (Ray's
    workers run in sessions of their own)."""
    deadline = time.monotonic() + within
    while (process_group(group) or live_processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [
        Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
        for pid in {*process_group(group), *live_processes_with(token)}
    ]
    assert not left, f"Ray processes left behind: {left}"


def product_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM products").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0


@pytest.fixture
def slow_url_manifest(indexed_catalog: IndexedCatalog, image_server: ImageServer, tmp_path: Path) -> Path:
    """The sample catalog with each picture behind a URL that answers after 0.1 s: a run lasts long
    enough to be killed in the middle."""
    lines = ["id,image,title,category"]
    for row in indexed_catalog.rows:
        body = (indexed_catalog.manifest.parent / row["image"]).read_bytes()
        url = image_server.add(f"/ray-slow/{row['id']}.png", body, delay=0.1)
        lines.append(f"{row['id']},{url},{row['title']},{row['category']}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.mark.e2e
def test_a_killed_ray_job_leaves_no_ray_and_its_rerun_loses_and_repeats_nothing(
    slow_url_manifest: Path, tiny_model_dir: Path, tmp_path: Path, indexer_cli: Indexer
) -> None:
    data_dir = tmp_path / "data"
    db = data_dir / "vitrine.db"
    args = ("add", slow_url_manifest, "--engine", "ray", "--batch-size", 2, "--no-progress", "--json")
    env = {"VITRINE_URL_ALLOW_HOSTS": "127.0.0.1"}
    job = start_indexer(tiny_model_dir, data_dir, *args, env=env)
    group = None
    try:
        deadline = time.monotonic() + 240
        while product_count(db) == 0:
            if group is None and (group := ray_head_of(job.pid)) is not None:
                token = ray_token_of(group)
            assert job.poll() is None, summary_of(finish_indexer(job))
            assert time.monotonic() < deadline, "the Ray job committed nothing in 240 s"
            time.sleep(0.01)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            job.kill()
        killed = finish_indexer(job)
    assert killed.returncode == -signal.SIGKILL
    committed = product_count(db)
    assert 0 < committed < SAMPLE_PRODUCTS, "the job must be killed in the middle"
    assert group is not None
    assert_ray_gone(group, token)  # the reaper ended the dead job's Ray

    rerun = start_indexer(tiny_model_dir, data_dir, *args, env=env)
    group = None
    while rerun.poll() is None and group is None:
        if (group := ray_head_of(rerun.pid)) is not None:
            token = ray_token_of(group)
        time.sleep(0.05)
    finished = finish_indexer(rerun)
    assert finished.returncode == 0, summary_of(finished)
    summary = json.loads(finished.stdout)
    assert (summary["added"], summary["skipped"], summary["failed"]) == (
        SAMPLE_PRODUCTS - committed,
        committed,
        0,
    )
    assert group is not None
    assert_ray_gone(group, token, within=5)  # a job that ends normally leaves no Ray either
    with sqlite3.connect(db) as conn:
        products = [row[0] for row in conn.execute("SELECT external_id FROM products")]
        images = conn.execute("SELECT count(*) FROM product_images").fetchone()[0]
    assert len(products) == len(set(products)) == SAMPLE_PRODUCTS and images == SAMPLE_PRODUCTS
    verify = indexer_cli(data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
