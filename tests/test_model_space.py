"""The data folder knows its embedding space: fingerprints, 409 on a mismatch, and `indexer reembed`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from api.app import create_app
from indexer.__main__ import main as indexer_main
from search.random_model import write_random_model
from search.weights import Checkpoint
from tests.conftest import LiveServer, assert_error, settings_for


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes as the tiny model, other weights: another embedding space."""
    return write_random_model("tiny", tmp_path_factory.mktemp("other") / "tiny-seed-1", seed=1)


def test_a_hub_id_and_a_local_copy_of_the_same_weights_are_one_space(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    # The hub cache's layout: snapshots/<rev>/model.safetensors -> blobs/<sha256 of the content>.
    from search.weights import file_sha256

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


def run_indexer(capsys, monkeypatch, model: Path | None, data_dir: Path, *argv: str) -> tuple[int, str]:
    if model is None:
        monkeypatch.delenv("VITRINE_MODEL", raising=False)
    else:
        monkeypatch.setenv("VITRINE_MODEL", str(model))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("VITRINE_DEVICE", "cpu")
    monkeypatch.setenv("VITRINE_DTYPE", "float32")
    with pytest.raises(SystemExit) as exited:
        indexer_main(list(argv))
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), captured.out + (code if isinstance(code, str) else "")


def serve(model_dir: Path, data_dir: Path) -> LiveServer:
    return LiveServer(create_app(settings_for(model_dir, data_dir))).start()


def test_a_server_of_another_model_answers_409_on_catalog_routes_until_reembed(
    catalog_copy, tiny_model_dir, other_model_dir, capsys, monkeypatch
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
    code, out = run_indexer(capsys, monkeypatch, None, catalog_copy.data_dir, "stats")
    assert code == 0 and json.loads(out)["index_vectors"] == len(catalog_copy.rows)

    # Adding with the other model is refused with the same explanation.
    code, out = run_indexer(
        capsys, monkeypatch, other_model_dir, catalog_copy.data_dir, "add", str(catalog_copy.manifest)
    )
    assert code == 1 and "python -m indexer reembed" in out

    code, out = run_indexer(
        capsys, monkeypatch, other_model_dir, catalog_copy.data_dir, "reembed", "--json", "--no-progress"
    )
    summary = json.loads(out)
    assert code == 0 and summary["reembedded"] == len(catalog_copy.rows) and summary["switched"] is True

    server = serve(other_model_dir, catalog_copy.data_dir)
    try:
        answer = server.client.post("/search", json={"product_id": "sku-00001", "k": 3})
        assert answer.status_code == 200 and answer.json()["count"] == 3
        assert server.client.get("/ready").json()["catalog"]["mismatch"] is False
    finally:
        server.stop()
    code, out = run_indexer(capsys, monkeypatch, None, catalog_copy.data_dir, "verify")
    assert code == 0, out


def test_reembed_keeps_finished_work_and_switches_once_every_product_is_done(
    catalog_copy, other_model_dir, capsys, monkeypatch
):
    args = (capsys, monkeypatch, other_model_dir, catalog_copy.data_dir)
    for stored in (catalog_copy.data_dir / "images").rglob("*"):
        if stored.is_file():
            stored.unlink()  # every stored image gone: nothing can be re-embedded
            break
    code, out = run_indexer(*args, "reembed", "--json", "--no-progress")
    first = json.loads(out)
    assert code == 2 and len(first["failed"]) >= 1 and first["switched"] is False
    assert first["reembedded"] == len(catalog_copy.rows) - len(first["failed"])
    failed_ids = [line.split(":")[0] for line in first["failed"]]
    assert run_indexer(*args, "remove", *failed_ids)[0] == 0
    code, out = run_indexer(*args, "reembed", "--json", "--no-progress")
    second = json.loads(out)
    assert code == 0 and second["total"] == 0 and second["switched"] is True
