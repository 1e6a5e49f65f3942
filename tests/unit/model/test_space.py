"""The data folder knows its embedding space: fingerprints, 409 on a mismatch, and `indexer reembed`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from api.app import create_app
from devtools.random_model import write_random_model
from search.model.weights import Checkpoint
from search.settings import Settings
from tests.support.http import assert_error
from tests.support.indexer import run_indexer_in_process
from tests.support.servers import LiveServer
from tests.support.settings import indexer_settings, settings_for


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes as the tiny model, other weights: another embedding space."""
    return write_random_model("tiny", tmp_path_factory.mktemp("other") / "tiny-seed-1", seed=1)


def test_a_hub_id_and_a_local_copy_of_the_same_weights_are_one_space(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    # The hub cache's layout: snapshots/<rev>/model.safetensors -> blobs/<sha256 of the content>.
    from search.model.weights import file_sha256

    blobs, snapshot = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    weights = tiny_model_dir / "model.safetensors"
    blob = blobs / file_sha256(weights)
    shutil.copy(weights, blob)
    (snapshot / "model.safetensors").symlink_to(blob)
    assert (
        Checkpoint(copy).fingerprint
        == Checkpoint(tiny_model_dir).fingerprint
        == Checkpoint(snapshot).fingerprint
    )


def test_other_weights_are_another_space(tiny_model_dir, other_model_dir):
    assert Checkpoint(other_model_dir).fingerprint != Checkpoint(tiny_model_dir).fingerprint


def run_indexer(model: Path | None, data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The indexer CLI in-process with ``model`` as VITRINE_MODEL (None: not set)."""
    if model is None:
        settings = Settings(data_dir=data_dir, device="cpu", dtype="float32")
    else:
        settings = indexer_settings(model, data_dir)
    return run_indexer_in_process(settings, *argv)


def serve(model_dir: Path, data_dir: Path) -> LiveServer:
    return LiveServer(create_app(settings_for(model_dir, data_dir))).start()


def test_a_server_of_another_model_answers_409_on_catalog_routes_until_reembed(
    catalog_copy, tiny_model_dir, other_model_dir
):
    server = serve(other_model_dir, catalog_copy.data_dir)
    try:
        message = assert_error(server.client.post("/search", json={"text": "tile"}), 409)
        assert str(tiny_model_dir) in message and str(other_model_dir) in message
        assert "python -m indexer reembed" in message
        assert_error(server.client.get("/products/sku-00001/similar"), 409)
        assert_error(server.client.get("/products/sku-00001"), 409)
        inference = server.client.post(
            "/", json={"inputs": ["tile"], "parameters": {"mode": "text_embedding"}}
        )
        assert inference.status_code == 200
        ready = server.client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["catalog"]["mismatch"] is True
    finally:
        server.stop()

    # Maintenance needs no VITRINE_MODEL: it reads the catalog's own space.
    stats = run_indexer(None, catalog_copy.data_dir, "stats")
    assert stats.returncode == 0 and json.loads(stats.stdout)["index_vectors"] == len(catalog_copy.rows)

    # Adding with the other model is refused with the same explanation.
    added = run_indexer(other_model_dir, catalog_copy.data_dir, "add", str(catalog_copy.manifest))
    assert added.returncode == 1 and "python -m indexer reembed" in added.stderr

    reembedded = run_indexer(other_model_dir, catalog_copy.data_dir, "reembed", "--json", "--no-progress")
    summary = json.loads(reembedded.stdout)
    assert (
        reembedded.returncode == 0
        and summary["updated"] == len(catalog_copy.rows)
        and summary["switched"] is True
    )

    server = serve(other_model_dir, catalog_copy.data_dir)
    try:
        answer = server.client.post("/search", json={"product_id": "sku-00001", "k": 3})
        assert answer.status_code == 200 and answer.json()["count"] == 3
        assert server.client.get("/ready").json()["catalog"]["mismatch"] is False
    finally:
        server.stop()
    verify = run_indexer(None, catalog_copy.data_dir, "verify")
    assert verify.returncode == 0, verify.stdout


def test_reembed_keeps_finished_work_and_switches_once_every_product_is_done(catalog_copy, other_model_dir):
    args = (other_model_dir, catalog_copy.data_dir)
    for stored in (catalog_copy.data_dir / "images").rglob("*"):
        if stored.is_file():
            stored.unlink()  # every stored image gone: nothing can be re-embedded
            break
    run = run_indexer(*args, "reembed", "--json", "--no-progress")
    first = json.loads(run.stdout)
    assert run.returncode == 2 and first["failed"] >= 1 and first["switched"] is False
    assert first["updated"] == len(catalog_copy.rows) - first["failed"]
    failed_ids = [failure["id"] for failure in first["failures"]]
    assert run_indexer(*args, "remove", *failed_ids).returncode == 0
    rerun = run_indexer(*args, "reembed", "--json", "--no-progress")
    second = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and second["total"] == 0 and second["switched"] is True
