"""``python -m indexer add``: incremental re-runs, and bad manifest rows reported without stopping the run."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.model.encoder import Encoder
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog, copy_catalog
from tests.support.images import encode_png, patterned_image
from tests.support.indexer import summary_of


def products(data_dir: Path) -> dict[str, dict]:
    """external id -> the stored row (title, attributes, embedding bytes)."""
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        rows = conn.execute(
            "SELECT p.external_id, p.title, p.category, p.attributes, i.embedding FROM products p "
            "JOIN product_images i ON i.product_id = p.id AND i.position = 0"
        )
        return {
            ext: {"title": title, "category": category, "attributes": json.loads(attrs), "embedding": blob}
            for ext, title, category, attrs, blob in rows
        }


def catalog_revision(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        return int(conn.execute("SELECT revision FROM catalog_state").fetchone()[0])


def write_rows(manifest: Path, rows: list[dict[str, str]]) -> None:
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# The module's three indexer runs -----------------------------------------------------------------------------

# JSON Lines, one per line (line numbers matter). Good rows: good-1, good-2, good-3.
BAD_MANIFEST = [
    {"id": "good-1", "image": "pics/good-1.png", "title": "Good one", "category": "tile", "color": "red"},
    {"image": "pics/good-2.png", "title": "no id"},
    {"id": "good-2", "image": "pics/good-2.png", "finish": "matte"},
    {"id": "good-1", "image": "pics/good-3.png", "title": "duplicate"},
    {"id": "corrupt", "image": "pics/corrupt.png"},
    {"id": "missing-file", "image": "pics/nope.png"},
    {"id": "escape", "image": "../outside.png"},
    '{"id": "broken", "image": "pics/good-1.png"',
    {"id": "good-3", "image": "pics/good-3.png", "color": "blue", "size_cm": 30},
    "",
    {"id": "truncated", "image": "pics/truncated.png"},
    "[1, 2]",
    {"id": "absolute", "image": "/etc/hostname"},
    {"id": "a/b", "image": "pics/good-1.png"},
    {"id": "no-image"},
]
# line -> words its failure line must contain
EXPECTED_FAILURES = {
    2: "missing id",
    4: "duplicate id",
    5: "corrupt",
    6: "does not exist",
    7: "leaves the manifest's folder",
    8: "not valid JSON",
    11: "truncated or corrupt",
    12: "JSON object",
    13: "leaves the manifest's folder",
    14: "invalid",
    15: "missing image",
}


@dataclass
class Run:
    """One ``indexer add`` run: its data folder, the products and catalog revision before it started,
    and how it ended."""

    data_dir: Path
    before: dict[str, dict]
    result: subprocess.CompletedProcess[str]
    revision: int = 0

    @property
    def after(self) -> dict[str, dict]:
        assert self.result.returncode in (0, 2), summary_of(self.result)
        return products(self.data_dir)


NEW_IMAGE = encode_png(patterned_image(301), "JPEG")


def edit_catalog(catalog: IndexedCatalog) -> None:
    """sku-00001's image file gets new content, sku-00002 a new title."""
    assert catalog.image_path("sku-00001").suffix == ".jpg"
    catalog.image_path("sku-00001").write_bytes(NEW_IMAGE)
    rows = [dict(row) for row in catalog.rows]
    next(row for row in rows if row["id"] == "sku-00002")["title"] = "Renamed tile"
    write_rows(catalog.manifest, rows)


def write_bad_manifest(root: Path) -> Path:
    folder = root / "catalog"
    (folder / "pics").mkdir(parents=True)
    for seed, name in enumerate(["good-1", "good-2", "good-3"], start=401):
        (folder / "pics" / f"{name}.png").write_bytes(encode_png(patterned_image(seed)))
    (folder / "pics" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    whole = encode_png(patterned_image(404))
    (folder / "pics" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "outside.png").write_bytes(encode_png(patterned_image(405)))  # exists, but outside
    lines = [item if isinstance(item, str) else json.dumps(item) for item in BAD_MANIFEST]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def runs(
    indexed_catalog: IndexedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> dict[str, Run]:
    """The runs: "same" re-runs the indexed manifest, "edited" re-runs it after ``edit_catalog``, "bad"
    indexes ``BAD_MANIFEST`` into an empty data folder."""
    done: dict[str, Run] = {}
    for name in ("same", "edited"):
        catalog = copy_catalog(indexed_catalog, tmp_path_factory.mktemp(name))
        before, revision = products(catalog.data_dir), catalog_revision(catalog.data_dir)
        if name == "edited":
            edit_catalog(catalog)
        result = indexer_cli(catalog.data_dir, "add", catalog.manifest, "--no-progress")
        done[name] = Run(catalog.data_dir, before, result, revision)
    root = tmp_path_factory.mktemp("bad")
    manifest = write_bad_manifest(root)
    done["bad"] = Run(root / "data", {}, indexer_cli(root / "data", "add", manifest, "--no-progress"))
    return done


# Incremental -----------------------------------------------------------------------------------------------


def test_rerun_of_the_same_manifest_adds_nothing(runs: dict[str, Run]) -> None:
    run = runs["same"]
    result = run.result
    assert result.returncode == 0, summary_of(result)
    assert (
        f"{SAMPLE_PRODUCTS} rows: 0 added, 0 re-embedded, 0 metadata updated, "
        f"{SAMPLE_PRODUCTS} unchanged, 0 failed"
    ) in result.stdout
    assert "0 images embedded" in result.stdout
    assert run.after == run.before
    assert catalog_revision(run.data_dir) == run.revision  # not even an empty write transaction


def test_rerun_after_edits_reports_one_re_embedded_and_one_metadata_update(runs: dict[str, Run]) -> None:
    result = runs["edited"].result
    assert result.returncode == 0, summary_of(result)
    assert (
        f"{SAMPLE_PRODUCTS} rows: 0 added, 1 re-embedded, 1 metadata updated, "
        f"{SAMPLE_PRODUCTS - 2} unchanged, 0 failed"
    ) in result.stdout, summary_of(result)
    assert "1 images embedded" in result.stdout


def test_changed_image_file_is_re_embedded_alone(runs: dict[str, Run], encoder: Encoder) -> None:
    before, after = runs["edited"].before, runs["edited"].after
    assert after["sku-00001"]["embedding"] != before["sku-00001"]["embedding"]
    unchanged = [pid for pid in before if pid != "sku-00001"]
    assert all(after[pid]["embedding"] == before[pid]["embedding"] for pid in unchanged)
    stored = np.frombuffer(after["sku-00001"]["embedding"], dtype="<f4")
    expected = encoder.embed_images([Image.open(io.BytesIO(NEW_IMAGE)).convert("RGB")])[0]
    assert float(stored @ expected) >= 0.9999


def test_changed_title_updates_metadata_without_re_embedding(runs: dict[str, Run]) -> None:
    before, after = runs["edited"].before, runs["edited"].after
    assert after["sku-00002"]["title"] == "Renamed tile"
    assert after["sku-00002"]["embedding"] == before["sku-00002"]["embedding"]
    assert after["sku-00002"]["attributes"] == before["sku-00002"]["attributes"]
    assert {pid: row["title"] for pid, row in after.items() if pid != "sku-00002"} == {
        pid: row["title"] for pid, row in before.items() if pid != "sku-00002"
    }


# Bad manifests ---------------------------------------------------------------------------------------------


def test_bad_rows_make_the_run_exit_2(runs: dict[str, Run]) -> None:
    assert runs["bad"].result.returncode == 2, summary_of(runs["bad"].result)


def test_good_rows_of_a_bad_manifest_are_indexed(runs: dict[str, Run]) -> None:
    stored = runs["bad"].after
    assert sorted(stored) == ["good-1", "good-2", "good-3"]
    assert stored["good-1"]["title"] == "Good one"
    assert stored["good-1"]["category"] == "tile"
    assert stored["good-1"]["attributes"] == {"color": "red"}
    assert stored["good-3"]["attributes"] == {"color": "blue", "size_cm": 30}
    lines = runs["bad"].result.stdout.splitlines()
    assert lines[0] == (
        f"{3 + len(EXPECTED_FAILURES)} rows: 3 added, 0 re-embedded, 0 metadata updated, 0 unchanged, "
        f"{len(EXPECTED_FAILURES)} failed"
    ), summary_of(runs["bad"].result)


def test_summary_names_each_failed_line(runs: dict[str, Run]) -> None:
    failures = [
        line.strip() for line in runs["bad"].result.stdout.splitlines() if line.strip().startswith("failed")
    ]
    assert len(failures) == len(EXPECTED_FAILURES), summary_of(runs["bad"].result)
    for line, words in EXPECTED_FAILURES.items():
        named = [
            text
            for text in failures
            if text.startswith(f"failed line {line}:") or text.startswith(f"failed line {line} (")
        ]
        assert len(named) == 1, (line, failures)
        assert words in named[0], (line, named[0])


def test_unknown_columns_are_kept_as_attributes_and_listed(runs: dict[str, Run]) -> None:
    assert "columns kept as attributes: color, finish, size_cm" in runs["bad"].result.stdout.splitlines()


# In-process ------------------------------------------------------------------------------------------------


def test_a_given_encoder_does_the_embedding_and_stays_open(
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
    count_image_embeddings: list[int],
    encoder: Encoder,
    tmp_path: Path,
) -> None:
    sample = indexer_cli(tmp_path / "data", "sample", tmp_path / "catalog", "--count", 3, "--size", 32)
    assert sample.returncode == 0, summary_of(sample)
    result = indexer_cli(tmp_path / "data", "add", tmp_path / "catalog" / "manifest.csv", "--no-progress")
    assert result.returncode == 0, summary_of(result)
    assert "3 rows: 3 added" in result.stdout
    assert count_image_embeddings[0] == 3  # the caller's encoder embedded them: no model loaded again
    assert encoder.embed_texts(["still open"]).shape[0] == 1  # its owner closes it, not the command


def test_in_process_errors_and_usage_keep_the_cli_contract(
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    missing = indexer_cli(tmp_path / "data", "add", tmp_path / "no-such.csv", "--no-progress")
    assert missing.returncode == 1 and missing.stderr.startswith("error: "), summary_of(missing)
    usage = indexer_cli(tmp_path / "data", "no-such-command")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr, summary_of(usage)
