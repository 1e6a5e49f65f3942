"""The indexer with VITRINE_IMAGE_STORE=database: a manifest's local images become blobs in the catalog's
database (no images/ folder), `verify` checks them there, and `reembed` reads them back from there."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.random_model import write_random_model
from search.catalog import Catalog
from tests.support.indexer import run_indexer_in_process
from tests.support.settings import indexer_settings


def test_add_verify_and_reembed_with_images_in_the_database(tiny_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    def indexer(model: Path, *argv: object):  # type: ignore[no-untyped-def]
        settings = indexer_settings(model, data_dir, image_store="database")
        return run_indexer_in_process(settings, *argv)

    assert indexer(tiny_model_dir, "sample", tmp_path / "sample", "--count", 4, "--size", 48).returncode == 0
    added = indexer(tiny_model_dir, "add", tmp_path / "sample" / "manifest.csv", "--no-progress")
    assert added.returncode == 0, added.stderr
    assert not (data_dir / "images").exists()
    catalog = Catalog.open(f"sqlite:///{data_dir / 'vitrine.db'}")
    names = [name for _, name in catalog.stored_images()]
    assert len(names) == 4 and catalog.blob_names(names) == set(names)
    catalog.close()
    verified = indexer(tiny_model_dir, "verify")
    assert verified.returncode == 0, verified.stdout

    other = write_random_model("tiny", tmp_path / "other", seed=1)
    reembedded = indexer(other, "reembed", "--json", "--no-progress")  # reads the blobs back
    assert reembedded.returncode == 0, reembedded.stderr
    assert json.loads(reembedded.stdout)["updated"] == 4
    assert indexer(other, "verify").returncode == 0
