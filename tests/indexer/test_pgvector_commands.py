"""The indexer with VITRINE_VECTOR_BACKEND=pgvector on a real PostgreSQL + pgvector: `add` writes the
vector rows with the image rows, `verify` checks that every image has its row, `rebuild` restores a
missing one, `stats` and `tune` say which backend serves and how, `duplicates` and `reembed` (a model switch)
work on the database's vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from devtools.random_model import write_random_model
from tests.support.indexer import run_indexer_in_process
from tests.support.settings import indexer_settings


def test_add_verify_rebuild_stats_duplicates_and_reembed(
    tiny_model_dir: Path, tmp_path: Path, pgvector_url: str
) -> None:
    data_dir = tmp_path / "data"

    def indexer(model: Path, *argv: object):  # type: ignore[no-untyped-def]
        settings = indexer_settings(model, data_dir, database_url=pgvector_url, vector_backend="pgvector")
        return run_indexer_in_process(settings, *argv)

    assert indexer(tiny_model_dir, "sample", tmp_path / "sample", "--count", 4, "--size", 48).returncode == 0
    added = indexer(tiny_model_dir, "add", tmp_path / "sample" / "manifest.csv", "--no-progress")
    assert added.returncode == 0, added.stderr
    assert not (data_dir / "index").exists()  # no index file: the vectors are the database's
    assert indexer(tiny_model_dir, "verify").returncode == 0

    engine = create_engine(pgvector_url)
    with engine.begin() as connection:
        assert connection.scalar(text("SELECT count(*) FROM image_vectors")) == 4
        connection.execute(
            text("DELETE FROM image_vectors WHERE image_id = (SELECT min(image_id) FROM image_vectors)")
        )
    engine.dispose()
    broken = indexer(tiny_model_dir, "verify")
    assert broken.returncode != 0 and "have no vector row in image_vectors" in broken.stdout + broken.stderr
    assert indexer(tiny_model_dir, "rebuild").returncode == 0
    assert indexer(tiny_model_dir, "verify").returncode == 0

    stats = json.loads(indexer(tiny_model_dir, "stats").stdout)
    assert stats["vector_backend"] == "pgvector" and stats["index_vectors"] == 4
    tuned = indexer(tiny_model_dir, "tune")  # 4 vectors: no vector index yet, every search exact
    assert tuned.returncode == 0 and json.loads(tuned.stdout)["exact_search"] is True
    assert indexer(tiny_model_dir, "duplicates").returncode == 0

    other = write_random_model("tiny", tmp_path / "other", seed=1)
    reembedded = indexer(other, "reembed", "--json", "--no-progress")
    assert reembedded.returncode == 0, reembedded.stderr
    assert json.loads(reembedded.stdout)["updated"] == 4
    assert indexer(other, "verify").returncode == 0


def test_pgvector_on_sqlite_is_one_line_from_the_indexer_and_the_server(
    tmp_path: Path, monkeypatch, capsys
) -> None:

    from api.__main__ import main as api_main
    from indexer.__main__ import run

    monkeypatch.setenv("VITRINE_VECTOR_BACKEND", "pgvector")
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VITRINE_DATABASE_URL", raising=False)
    assert run(["stats"]) == 1
    line = capsys.readouterr().err.strip()
    assert line == (
        "error: invalid settings: VITRINE_VECTOR_BACKEND=pgvector needs the catalog in PostgreSQL with the "
        "vector extension (CREATE EXTENSION vector); VITRINE_DATABASE_URL is sqlite"
    )
    with pytest.raises(SystemExit) as exited:
        api_main([])
    assert str(exited.value).splitlines() == [
        "vitrine could not start: invalid settings",
        "  " + line.split(": ", 2)[2],
    ]
