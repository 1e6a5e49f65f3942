"""``indexer add`` with image URLs: fetched through the guard, skipped unchanged without a download,
compared by content with --refetch."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import (
    REPO_ROOT,
    ImageServer,
    encode_png,
    indexer_command,
    indexer_env,
    patterned_image,
    summary_of,
)


def run(
    model_dir: Path, data_dir: Path, *args: object, allow: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    env = {**indexer_env(model_dir, data_dir), "VITRINE_URL_ALLOW_HOSTS": allow}
    return subprocess.run(
        indexer_command(*args), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )


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
    tiny_model_dir: Path, image_server: ImageServer, tmp_path: Path
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

    first = run(tiny_model_dir, data_dir, "add", manifest, "--no-progress")
    assert first.returncode == 0, summary_of(first)
    assert "3 rows: 3 added" in first.stdout
    hits_after_first = {
        path: image_server.hits.get(path, 0) for path in (f"/cli/url-{i}.png" for i in range(3))
    }
    assert all(count == 1 for count in hits_after_first.values())

    # Same URLs, same model: nothing downloaded again.
    second = run(tiny_model_dir, data_dir, "add", manifest, "--no-progress")
    assert "0 added, 0 re-embedded, 0 metadata updated, 3 unchanged" in second.stdout, summary_of(second)
    assert {path: image_server.hits.get(path, 0) for path in hits_after_first} == hits_after_first

    # The picture behind one URL changes: --refetch downloads all, re-embeds only the changed one.
    before = embedding_of(data_dir, "url-1")
    image_server.add("/cli/url-1.png", encode_png(patterned_image(699)))
    third = run(tiny_model_dir, data_dir, "add", manifest, "--no-progress", "--refetch")
    assert "0 added, 1 re-embedded, 0 metadata updated, 2 unchanged" in third.stdout, summary_of(third)
    assert embedding_of(data_dir, "url-1") != before

    verify = run(tiny_model_dir, data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)


def test_url_to_a_private_address_is_a_failed_row_not_a_fetch(
    tiny_model_dir: Path, image_server: ImageServer, tmp_path: Path
) -> None:
    good = image_server.add("/cli/good.png", encode_png(patterned_image(610)))
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "ok", "image": good.replace("127.0.0.1", "localhost")}, {"id": "blocked", "image": good}],
    )
    hits = image_server.hits.get("/cli/good.png", 0)
    result = run(tiny_model_dir, tmp_path / "data", "add", manifest, "--no-progress", allow="localhost")
    assert result.returncode == 2, summary_of(result)
    assert "1 added" in result.stdout and "1 failed" in result.stdout
    assert "line 2 (id blocked)" in result.stdout and "URL refused" in result.stdout
    assert image_server.hits.get("/cli/good.png", 0) == hits + 1  # only the allowed row reached the server
