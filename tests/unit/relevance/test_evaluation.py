"""The evaluation's pure parts: the gate's tolerance at its edge, the weight curve's choice, the variants
and the /search body of a judged query."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import BadInput
from search.relevance.evaluation import Variant, gate, search_body, variants, weight_curve
from search.relevance.judgements import JudgedQuery


def test_the_gate_fails_only_on_a_drop_larger_than_the_tolerance() -> None:
    before = [{"name": "hybrid w=0.5", "ndcg": 0.60}, {"name": "vector", "ndcg": 0.40}]
    now = [
        {"name": "hybrid w=0.5", "ndcg": 0.55},
        {"name": "vector", "ndcg": 0.45},
        {"name": "lexical", "ndcg": 0.1},
    ]
    assert gate(now, before, 0.049) == ["hybrid w=0.5: NDCG 0.5500 < 0.6000 - 0.049"]
    assert gate(now, before, 0.051) == []  # a drop of 0.05 within 0.051
    assert gate(now, [], 0.0) == []  # nothing to compare (lexical was not in the last run either)


def test_the_weight_curve_picks_the_best_ndcg_and_the_lower_weight_on_a_tie() -> None:
    rows = [
        {"mode": "vector", "lexical_weight": None, "ndcg": 0.9},
        {"mode": "hybrid", "lexical_weight": 0.7, "ndcg": 0.8},
        {"mode": "hybrid", "lexical_weight": 0.3, "ndcg": 0.8},
        {"mode": "hybrid", "lexical_weight": 0.5, "ndcg": 0.7},
    ]
    best, curve = weight_curve(rows)
    assert best == 0.3 and curve == [(0.3, 0.8), (0.5, 0.7), (0.7, 0.8)]
    with pytest.raises(BadInput, match="needs the hybrid mode"):
        weight_curve(rows[:1])


def test_variants_and_the_search_body_of_a_judged_query(tmp_path: Path) -> None:
    assert variants(["vector", "hybrid"], [0.2, 0.8]) == [
        Variant("vector"),
        Variant("hybrid", 0.2),
        Variant("hybrid", 0.8),
    ]
    assert Variant("hybrid", 0.2).name == "hybrid w=0.2"
    query = JudgedQuery("red tile", None, {"category": "floor"})
    assert search_body(query, "hybrid", 0.3, 5, tmp_path) == {
        "mode": "hybrid",
        "k": 5,
        "text": "red tile",
        "lexical_weight": 0.3,
        "filters": {"category": "floor"},
    }
    (tmp_path / "q.png").write_bytes(b"\x89PNG")
    image = search_body(JudgedQuery(None, "q.png", None), "vector", None, 5, tmp_path)
    assert image == {"mode": "vector", "k": 5, "image": "iVBORw=="}
    both = search_body(JudgedQuery("red", "https://x.example/a.jpg", None), "vector", None, 5, tmp_path)
    assert both["positive"] == [{"text": "red"}, {"image": "https://x.example/a.jpg"}]
    with pytest.raises(BadInput, match=r"cannot read query_image missing\.png"):
        search_body(JudgedQuery(None, "missing.png", None), "vector", None, 5, tmp_path)
