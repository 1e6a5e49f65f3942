"""python -m indexer evaluate --url: the same judgements through a running server's POST /search give
the same figures as in-process (only the latency differs); a server that is not there is one line."""

from __future__ import annotations

import json
from pathlib import Path

from search.model.encoder import Encoder
from tests.support.indexer import run_indexer_in_process
from tests.support.relevance import judgements_csv, write_hybrid_catalog
from tests.support.settings import indexer_settings


def test_evaluate_against_a_server_equals_in_process(
    tmp_path: Path, encoder: Encoder, tiny_model_dir: Path, start_server
) -> None:
    settings = indexer_settings(tiny_model_dir, tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    sample = write_hybrid_catalog(settings.resolved_database_url, encoder)
    path = judgements_csv(sample, tmp_path / "judgements.csv")
    args = ("evaluate", path, "--k", 5, "--weights", "0.3", "--json")
    local = run_indexer_in_process(settings, *args, encoder=encoder)
    assert local.returncode == 0, local.stderr
    server = start_server()  # the same data folder
    remote = run_indexer_in_process(settings, *args, "--url", server.base_url, encoder=encoder)
    assert remote.returncode == 0, remote.stderr
    figures = ("name", "ndcg", "recall", "mrr", "queries")
    local_rows = [{key: row[key] for key in figures} for row in json.loads(local.stdout)["results"]]
    remote_rows = [{key: row[key] for key in figures} for row in json.loads(remote.stdout)["results"]]
    assert remote_rows == local_rows and local_rows[0]["ndcg"] > 0
    gone = run_indexer_in_process(settings, *args, "--url", "http://127.0.0.1:9", encoder=encoder)
    assert gone.returncode == 1 and "cannot reach http://127.0.0.1:9/search" in gone.stderr
