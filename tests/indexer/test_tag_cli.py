"""``python -m indexer tag`` and ``audit`` on the indexed sample catalog: a taxonomy from a file and from the
catalog's own values, calibration to a target precision that the test recomputes itself, tags written
by ``indexer add`` with the product, and the audit's contradictions."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from search.catalog import Catalog
from search.catalog.schema import Product
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog
from tests.support.indexer import summary_of
from tests.support.settings import indexer_settings

Cli = Callable[..., subprocess.CompletedProcess[str]]
COLORS = ["red", "blue", "green", "yellow", "black", "white"]


@pytest.fixture
def data_dir(catalog_copy: IndexedCatalog) -> Path:
    return catalog_copy.data_dir


def run_json(indexer_cli: Cli, data_dir: Path, *args: object) -> dict[str, Any]:
    extra = ("--no-progress",) if args[0] == "tag" else ()
    result = indexer_cli(data_dir, *args, "--json", *extra)
    assert result.returncode == 0, summary_of(result)
    return json.loads(result.stdout)


def stored_products(tiny_model_dir: Path, data_dir: Path) -> dict[str, Any]:
    catalog = Catalog.open(indexer_settings(tiny_model_dir, data_dir).resolved_database_url)
    try:
        records = catalog.get_by_ids(catalog.product_ids(Product.id > 0))
    finally:
        catalog.close()
    return {record.external_id: record for record in records.values()}


def write_taxonomy(path: Path, **attributes: Any) -> Path:
    path.write_text(json.dumps({"attributes": attributes}))
    return path


def test_tag_stores_a_taxonomy_file_and_tags_every_product(
    indexer_cli: Cli, data_dir: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    file = write_taxonomy(tmp_path / "t.json", color={"values": COLORS, "min_score": 0.0})
    result = run_json(indexer_cli, data_dir, "tag", "--taxonomy", file)
    assert result["version"] == 1
    assert result["retag"]["state"] == "done" and result["retag"]["done"] == SAMPLE_PRODUCTS
    products = stored_products(tiny_model_dir, data_dir)
    assert all(record.tags["color"]["value"] in COLORS for record in products.values())
    # The merchant's own colour column is untouched.
    assert all(record.attributes["color"] for record in products.values())
    bad = indexer_cli(
        data_dir, "tag", "--taxonomy", write_taxonomy(tmp_path / "bad.json", color={"values": []})
    )
    assert bad.returncode == 1 and "'color'" in bad.stderr and "values" in bad.stderr


def test_from_catalog_builds_an_attribute_of_the_distinct_values(
    indexer_cli: Cli, data_dir: Path, tiny_model_dir: Path, indexed_catalog: IndexedCatalog
) -> None:
    run_json(indexer_cli, data_dir, "tag", "--from-catalog", "category")
    catalog = Catalog.open(indexer_settings(tiny_model_dir, data_dir).resolved_database_url)
    try:
        from search.catalog.tag_service import TaggingService

        taxonomy = TaggingService(catalog, "unused").taxonomy()
    finally:
        catalog.close()
    categories = sorted({row["category"] for row in indexed_catalog.rows})
    assert taxonomy.get("category").value_names == categories
    products = stored_products(tiny_model_dir, data_dir)
    assert {record.tags["category"]["value"] for record in products.values() if record.tags} <= set(
        categories
    )


def test_calibration_reaches_the_target_precision_which_the_test_recomputes(
    indexer_cli: Cli, data_dir: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    file = write_taxonomy(
        tmp_path / "t.json",
        color={"values": COLORS, "min_score": 0.0},
        finish={"values": ["matte", "glossy", "satin"], "min_score": 0.0},
    )
    run_json(indexer_cli, data_dir, "tag", "--taxonomy", file)
    products = stored_products(tiny_model_dir, data_dir)
    ranked = sorted(products.values(), key=lambda r: -r.tags["color"]["score"])
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "attribute", "value"])
        for position, record in enumerate(ranked):
            predicted = record.tags["color"]["value"]
            # The most confident 60% are right; below them every other label disagrees.
            right = position < 0.6 * len(ranked) or position % 2
            wrong = next(c for c in COLORS if c != predicted)
            writer.writerow([record.external_id, "color", predicted if right else wrong])
            finish = record.tags["finish"]["value"]
            writer.writerow(
                [record.external_id, "finish", next(f for f in ["matte", "glossy", "satin"] if f != finish)]
            )
    result = run_json(indexer_cli, data_dir, "tag", "--calibrate", labels, "--precision", "0.9")
    reports = {report["attribute"]: report for report in result["calibration"]}

    color = reports["color"]
    assert color["reached"] and color["labels"] == SAMPLE_PRODUCTS
    truth = {}
    with labels.open() as handle:
        for row in csv.DictReader(handle):
            if row["attribute"] == "color":
                truth[row["id"]] = row["value"]
    after = stored_products(tiny_model_dir, data_dir)
    tagged = [pid for pid, record in after.items() if "color" in record.tags]
    assert all(after[pid].tags["color"]["score"] >= color["threshold"] for pid in tagged)
    precision = sum(after[pid].tags["color"]["value"] == truth[pid] for pid in tagged) / len(tagged)
    assert precision >= 0.9
    assert color["precision"] == pytest.approx(precision)
    assert color["coverage"] == pytest.approx(len(tagged) / SAMPLE_PRODUCTS)
    # The lowest such threshold: one labelled score lower, precision falls under the target.
    lower = [r.tags["color"]["score"] for r in ranked if r.tags["color"]["score"] < color["threshold"]]
    if lower:
        below = [pid for pid in products if products[pid].tags["color"]["score"] >= max(lower)]
        assert sum(products[pid].tags["color"]["value"] == truth[pid] for pid in below) / len(below) < 0.9

    finish = reports["finish"]  # every label disagrees: the target is out of reach
    assert not finish["reached"] and finish["threshold"] == 0.0 and finish["precision"] == 0.0
    assert all("finish" in record.tags for record in after.values())  # its threshold was left alone


def test_indexer_add_tags_new_products_with_their_images(
    indexer_cli: Cli, data_dir: Path, tmp_path: Path, tiny_model_dir: Path, catalog_copy: IndexedCatalog
) -> None:
    run_json(
        indexer_cli,
        data_dir,
        "tag",
        "--taxonomy",
        write_taxonomy(tmp_path / "t.json", color={"values": COLORS}),
    )
    source = catalog_copy.image_path(catalog_copy.ids[0])
    shutil.copy(source, tmp_path / "new.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,image,title\nnew-1,new.png,New one\n")
    added = indexer_cli(data_dir, "add", manifest, "--no-progress")
    assert added.returncode == 0, summary_of(added)
    products = stored_products(tiny_model_dir, data_dir)
    assert products["new-1"].tags == products[catalog_copy.ids[0]].tags  # same picture, same tags, no re-tag


def test_audit_lists_exactly_the_contradictions(
    indexer_cli: Cli, data_dir: Path, tiny_model_dir: Path, tmp_path: Path, catalog_copy: IndexedCatalog
) -> None:
    categories = sorted({row["category"] for row in catalog_copy.rows})
    file = write_taxonomy(tmp_path / "t.json", category={"values": categories, "min_score": 0.0})
    run_json(indexer_cli, data_dir, "tag", "--taxonomy", file)
    products = stored_products(tiny_model_dir, data_dir)
    scores = sorted(
        record.tags["category"]["score"] for record in products.values() if "category" in record.tags
    )
    min_score = scores[len(scores) // 3]
    expected = sorted(
        (
            {
                "id": pid,
                "attribute": "category",
                "given": record.category,
                "predicted": record.tags["category"]["value"],
                "score": record.tags["category"]["score"],
            }
            for pid, record in products.items()
            if "category" in record.tags
            and record.tags["category"]["score"] >= min_score
            and record.tags["category"]["value"] != record.category
        ),
        key=lambda row: (-row["score"], row["id"]),
    )
    assert expected  # the random model disagrees with some merchant categories
    result = run_json(
        indexer_cli,
        data_dir,
        "audit",
        "--attribute",
        "category",
        "--min-score",
        str(min_score),
        "--limit",
        "1000",
    )
    assert result["results"] == expected and result["total"] == len(expected)
    missing = indexer_cli(data_dir, "audit", "--attribute", "nope")
    assert missing.returncode == 1 and "'nope'" in missing.stderr
