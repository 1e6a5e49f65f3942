"""``indexer add`` with image URLs: fetched through the guard, skipped unchanged without a download,
compared by content with --refetch."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.http import ImageServer
from tests.support.images import encode_png, patterned_image
from tests.support.indexer import summary_of


@pytest.fixture
def run(
    indexer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The indexer CLI on a data folder, with ``allow`` as VITRINE_URL_ALLOW_HOSTS."""

    def run(data_dir: Path, *args: object, allow: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
        return indexer_cli(data_dir, *args, url_allow_hosts=[allow])

    return run


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def embedding_of(data_dir: Path, product_id: str) -> bytes:
    with sqlite3.connect(data_dir / "vitrine.db") as conn:
        return conn.execute(
            "SELECT i.embedding FROM product_images i JOIN products p ON p.id = i.product_id "
            "WHERE p.external_id = ? AND i.position = 0",
            (product_id,),
        ).fetchone()[0]


def test_url_manifest_is_incremental_and_refetch_compares_content(
    run: Callable[..., subprocess.CompletedProcess[str]], image_server: ImageServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    urls = {
        f"url-{i}": image_server.add(f"/cli/url-{i}.png", encode_png(patterned_image(600 + i)))
        for i in range(3)
    }
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": pid, "image": url, "shade": i} for i, (pid, url) in enumerate(urls.items())],
    )

    first = run(data_dir, "add", manifest, "--no-progress")
    assert first.returncode == 0, summary_of(first)
    assert "3 rows: 3 added" in first.stdout
    hits_after_first = {
        path: image_server.hits.get(path, 0) for path in (f"/cli/url-{i}.png" for i in range(3))
    }
    assert all(count == 1 for count in hits_after_first.values())

    # Same URLs, same model: nothing downloaded again.
    second = run(data_dir, "add", manifest, "--no-progress")
    assert "0 added, 0 re-embedded, 0 metadata updated, 3 unchanged" in second.stdout, summary_of(second)
    assert {path: image_server.hits.get(path, 0) for path in hits_after_first} == hits_after_first

    # The picture behind one URL changes: --refetch downloads all, re-embeds only the changed one.
    before = embedding_of(data_dir, "url-1")
    image_server.add("/cli/url-1.png", encode_png(patterned_image(699)))
    third = run(data_dir, "add", manifest, "--no-progress", "--refetch")
    assert "0 added, 1 re-embedded, 0 metadata updated, 2 unchanged" in third.stdout, summary_of(third)
    assert embedding_of(data_dir, "url-1") != before

    verify = run(data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)


def test_url_to_a_private_address_is_a_failed_row_not_a_fetch(
    run: Callable[..., subprocess.CompletedProcess[str]], image_server: ImageServer, tmp_path: Path
) -> None:
    good = image_server.add("/cli/good.png", encode_png(patterned_image(610)))
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "ok", "image": good.replace("127.0.0.1", "localhost")}, {"id": "blocked", "image": good}],
    )
    hits = image_server.hits.get("/cli/good.png", 0)
    result = run(tmp_path / "data", "add", manifest, "--no-progress", allow="localhost")
    assert result.returncode == 2, summary_of(result)
    assert "1 added" in result.stdout and "1 failed" in result.stdout
    assert "line 2 (id blocked)" in result.stdout and "URL refused" in result.stdout
    assert image_server.hits.get("/cli/good.png", 0) == hits + 1  # only the allowed row reached the server
