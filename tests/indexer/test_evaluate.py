"""python -m indexer evaluate on a generated catalog whose titles carry the truth (SKU codes): its figures
equal what this test computes from /search's own answers; --save and --gate block a change that lowers
quality; --suggest-weight and --calibrate."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.sample_hybrid import HybridCatalog
from search.catalog.query import Example, SearchQuery
from search.model.encoder import Encoder
from search.settings import Settings
from search.wiring import open_products
from tests.support.images import encode_png, patterned_image
from tests.support.indexer import run_indexer_in_process
from tests.support.relevance import judgements_csv, write_hybrid_catalog
from tests.support.servers import TestServer
from tests.support.settings import indexer_settings


@pytest.fixture
def lab(tmp_path: Path, encoder: Encoder, tiny_model_dir: Path) -> tuple[Settings, HybridCatalog, Path]:
    settings = indexer_settings(tiny_model_dir, tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    sample = write_hybrid_catalog(settings.resolved_database_url, encoder)
    image = tmp_path / "query.png"
    image.write_bytes(encode_png(patterned_image(5)))
    return settings, sample, judgements_csv(sample, tmp_path / "judgements.csv", image)


def evaluate(settings: Settings, encoder: Encoder, *args: object) -> tuple[int, dict]:
    done = run_indexer_in_process(settings, "evaluate", *args, "--json", encoder=encoder)
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip().startswith("{") else done.stderr)


def ndcg(results: list[str], grades: dict[str, int], k: int) -> float:
    """Written apart from search/relevance/metrics.py: linear gains, log2 discount."""
    gain = sum(grades.get(pid, 0) / math.log2(rank + 1) for rank, pid in enumerate(results[:k], start=1))
    ideal = sum(g / math.log2(rank + 1) for rank, g in enumerate(sorted(grades.values())[::-1][:k], start=1))
    return gain / ideal


def test_evaluate_equals_what_the_search_answers_give(
    lab, encoder: Encoder, start_server: Callable[..., TestServer]
) -> None:
    settings, _, path = lab
    code, report = evaluate(settings, encoder, path, "--k", 5, "--weights", "0.3,0.7", "--per-query")
    assert code == 0, report
    assert [row["name"] for row in report["results"]] == ["vector", "lexical", "hybrid w=0.3", "hybrid w=0.7"]
    server = start_server()  # the same data folder (tmp_path / "data")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    queries: dict[tuple[str, str, str], dict[str, int]] = {}
    for row in rows:
        queries.setdefault((row["query"], row["filters"], row["query_image"]), {})[row["product_id"]] = int(
            row["grade"]
        )
    for result in report["results"]:
        ndcgs, rrs, recalls = [], [], []
        for (text, filters, image), grades in queries.items():
            if (image and result["mode"] != "vector") or (not text and not image):
                continue
            body: dict = {"mode": result["mode"], "k": 5}
            if image:
                import base64

                body["image"] = base64.b64encode((path.parent / image).read_bytes()).decode()
            else:
                body["text"] = text
            if result["lexical_weight"] is not None:
                body["lexical_weight"] = result["lexical_weight"]
            if filters:
                body["filters"] = json.loads(filters)
            answer = server.client.post("/search", json=body)
            assert answer.status_code == 200, answer.text
            ids = [hit["id"] for hit in answer.json()["results"]]
            relevant = {pid for pid, grade in grades.items() if grade > 0}
            ndcgs.append(ndcg(ids, grades, 5))
            recalls.append(len(relevant & set(ids)) / len(relevant))
            rrs.append(next((1 / r for r, pid in enumerate(ids, start=1) if pid in relevant), 0.0))
        assert result["queries"] == len(ndcgs)
        assert result["ndcg"] == pytest.approx(sum(ndcgs) / len(ndcgs), abs=1e-12), result["name"]
        assert result["recall"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-12)
        assert result["mrr"] == pytest.approx(sum(rrs) / len(rrs), abs=1e-12)
        assert [q["ndcg"] for q in result["per_query"]] == pytest.approx(ndcgs, abs=1e-12)
    by_name = {row["name"]: row for row in report["results"]}
    assert by_name["lexical"]["mrr"] > by_name["vector"]["mrr"]  # SKU codes need the lexical side


def test_the_gate_fails_after_a_change_that_lowers_quality(lab, encoder: Encoder) -> None:
    settings, sample, path = lab
    code, first = evaluate(settings, encoder, path, "--modes", "lexical,hybrid", "--save")
    assert code == 0 and first["saved_run"] == 1
    code, same = evaluate(settings, encoder, path, "--modes", "lexical,hybrid", "--gate", 0.01)
    assert code == 0 and same["gate"] == {"passed": True, "against": 1, "failures": []}
    relevant = [pid for pid, _ in list(sample.sku.items())[::9]]  # the SKU queries' products
    removed = run_indexer_in_process(settings, "remove", *relevant, encoder=encoder)
    assert removed.returncode == 0, removed.stderr
    code, worse = evaluate(settings, encoder, path, "--modes", "lexical,hybrid", "--gate", 0.01)
    assert code == 1 and not worse["gate"]["passed"]
    assert [f.split(":")[0] for f in worse["gate"]["failures"]] == ["lexical", "hybrid w=0.5"]
    code, _ = evaluate(settings, encoder, path, "--modes", "lexical,hybrid", "--gate", 1.0)
    assert code == 0  # within a tolerance of 1


def test_suggest_weight_prints_the_best_weight_with_its_curve(lab, encoder: Encoder) -> None:
    settings, _, path = lab
    code, report = evaluate(settings, encoder, path, "--modes", "hybrid", "--suggest-weight")
    assert code == 0
    suggested = report["suggested"]
    curve = {point["lexical_weight"]: point["ndcg"] for point in suggested["curve"]}
    assert len(curve) == 21 and suggested["ndcg"] == max(curve.values()) == curve[suggested["lexical_weight"]]
    assert suggested["default_ndcg"] == curve[0.5]
    text = run_indexer_in_process(
        settings, "evaluate", path, "--modes", "hybrid", "--suggest-weight", encoder=encoder
    )
    assert "suggested lexical weight:" in text.stdout and "w=0.05" in text.stdout


def test_calibration_gives_each_hit_a_relevance_and_min_relevance_cuts_on_it(lab, encoder: Encoder) -> None:
    settings, _, path = lab
    service = open_products(settings, encoder, model=None)
    try:
        with pytest.raises(Exception, match="min_relevance needs a relevance calibration"):
            service.search(SearchQuery([Example(text="acme red striped")], min_relevance=0.5))
    finally:
        service.catalog.close()
    code, report = evaluate(settings, encoder, path, "--modes", "hybrid", "--calibrate")
    assert code == 0 and set(report["calibration"]) == {"vector", "lexical", "hybrid"}
    hybrid = report["calibration"]["hybrid"]
    assert hybrid["features"] == ["cosine", "log1p_lexical", "lexical_match"] and hybrid["relevant"] > 0
    from search.catalog import Catalog
    from search.catalog.spaces import recorded_space

    catalog = Catalog.open(settings.resolved_database_url)
    key = recorded_space(catalog).key
    catalog.close()
    service = open_products(settings, encoder, model=key)
    try:
        query = SearchQuery([Example(text="acme red striped")], mode="hybrid", k=30)
        hits = service.search(query).hits
        assert all(0 < hit.relevance < 1 for hit in hits)
        cut = sorted(hit.relevance for hit in hits)[15]
        query.min_relevance = cut
        kept = service.search(query).hits
        assert kept and all(hit.relevance >= cut for hit in kept)
        assert {h.record.external_id for h in kept} == {
            h.record.external_id for h in hits if h.relevance >= cut
        }
    finally:
        service.catalog.close()


def test_bad_options_are_one_line_errors(lab, encoder: Encoder) -> None:
    settings, _, path = lab
    for args, message in [
        (("--modes", "fuzzy"), "--modes takes vector, lexical, hybrid"),
        (("--weights", "0.5,2"), "--weights must be numbers from 0 to 1"),
        (("--k", "0"), "--k must be from 1"),
        (("--calibrate", "--url", "http://127.0.0.1:9"), "--calibrate reads the catalog"),
    ]:
        done = run_indexer_in_process(settings, "evaluate", path, *args, encoder=encoder)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    missing = run_indexer_in_process(settings, "evaluate", path.parent / "nope.csv", encoder=encoder)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
