"""``indexer add|reembed --engine ray``: the same catalog as the local engine, work spread over the
nodes of a two-node Ray cluster on loopback, shards that import without Ray, and a job killed
mid-run that a rerun completes with nothing lost or repeated and no Ray process left behind
(test_ray_killed_job.py: a file of its own, which ``--dist loadfile`` may run on the other test
worker at the same time).

One two-node cluster (``ray.cluster_utils.Cluster``, 127.0.0.1, no dashboard) serves the module; the
in-process runs join it."""

from __future__ import annotations

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
from tests.support.indexer import product_count, run_indexer_in_process, summary_of
from tests.support.ray_jobs import RAY_TESTS
from tests.support.settings import indexer_settings

# Ray reads its settings when imported: it is imported by the cluster fixture, after they are set.
pytestmark = RAY_TESTS

Indexer = Callable[..., subprocess.CompletedProcess[str]]
# As a job's own Ray has them (indexer/engines/ray.py): loopback, a token, no usage stats.
LOOPBACK_RAY = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
}


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


def model_actor_processes(token: str) -> list[int]:
    """The module cluster's Ray actor processes that run the model (their title names the actor class;
    every process of that Ray carries its token: a job's own Ray elsewhere on this machine, as
    test_ray_killed_job.py's, maybe on the other test worker, is left alone)."""
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"_EmbedActor" in (entry / "cmdline").read_bytes() and marker in (
                    entry / "environ"
                ).read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


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
            for pid in model_actor_processes(os.environ["RAY_AUTH_TOKEN"]):  # set by ray_cluster
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
