"""Fixtures of the indexer's tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.catalogs import IndexedCatalog
from tests.support.http import ImageServer
from tests.support.ray_jobs import slow_url_manifest as write_slow_url_manifest


@pytest.fixture
def slow_url_manifest(indexed_catalog: IndexedCatalog, image_server: ImageServer, tmp_path: Path) -> Path:
    """The sample catalog behind URLs that answer after 0.1 s (the Ray tests kill a job mid-run)."""
    return write_slow_url_manifest(indexed_catalog, image_server, tmp_path / "manifest.csv")
