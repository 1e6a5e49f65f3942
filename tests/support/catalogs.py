"""An indexed sample catalog: its manifest, images and the data folder the indexer filled."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

SAMPLE_PRODUCTS = 40


@dataclass
class IndexedCatalog:
    """A sample catalog (manifest.csv + images/) and the data folder the indexer CLI filled from it."""

    manifest: Path
    data_dir: Path
    rows: list[dict[str, str]]

    @property
    def ids(self) -> list[str]:
        return [row["id"] for row in self.rows]

    def row(self, product_id: str) -> dict[str, str]:
        return next(row for row in self.rows if row["id"] == product_id)

    def image_path(self, product_id: str) -> Path:
        return self.manifest.parent / self.row(product_id)["image"]

    def image_bytes(self, product_id: str) -> bytes:
        return self.image_path(product_id).read_bytes()


def read_manifest_rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def copy_catalog(source: IndexedCatalog, root: Path) -> IndexedCatalog:
    """``source`` copied under ``root``: root/sample (manifest and images) and root/data."""
    shutil.copytree(source.manifest.parent, root / "sample")
    shutil.copytree(source.data_dir, root / "data")
    manifest = root / "sample" / source.manifest.name
    return IndexedCatalog(manifest, root / "data", read_manifest_rows(manifest))
