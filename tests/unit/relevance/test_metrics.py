"""NDCG, recall and MRR pinned on a hand-computed example, and the judgements file's checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from search.errors import BadInput
from search.relevance.judgements import read_judgements
from search.relevance.metrics import percentile, query_figures, summary


def test_ndcg_recall_and_rr_of_a_hand_computed_example() -> None:
    # results a b c d e; judged a=3 c=2 x=3 d=0; k=3
    #   DCG@3  = 3/log2(2) + 0/log2(3) + 2/log2(4) = 3 + 0 + 1 = 4
    #   IDCG@3 = 3/log2(2) + 3/log2(3) + 2/log2(4) = 4 + 1.892789...  -> NDCG = 4 / 5.892789 = 0.678795
    #   recall@3: relevant {a, c, x}, found {a, c} -> 2/3; RR: a first -> 1
    figures = query_figures(["a", "b", "c", "d", "e"], {"a": 3, "c": 2, "x": 3, "d": 0}, 3)
    assert figures.ndcg == pytest.approx(4 / (4 + 3 / math.log2(3)), abs=1e-12)
    assert figures.ndcg == pytest.approx(0.678795, abs=1e-6)
    assert figures.recall == pytest.approx(2 / 3) and figures.rr == 1.0
    # results b c; judged c=1: DCG = 1/log2(3) = IDCG * 0.63093; recall 1; RR 1/2
    second = query_figures(["b", "c"], {"c": 1}, 3)
    assert second.ndcg == pytest.approx(1 / math.log2(3)) and second.recall == 1.0 and second.rr == 0.5
    # The same results cut at k=1: the relevant c is out.
    assert query_figures(["b", "c"], {"c": 1}, 1).__dict__ == {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
    # A judged but not relevant product first: RR counts from the first *relevant* one.
    assert query_figures(["d", "a"], {"a": 3, "d": 0}, 3).rr == 0.5
    none = query_figures(["a"], {"a": 0}, 3)  # no relevant judgement: no figures
    assert none is None
    means = summary([figures, second, none], [10.0, 30.0, 20.0])
    assert means == pytest.approx(
        {
            "ndcg": (0.6787950 + 0.6309298) / 2,
            "recall": (2 / 3 + 1) / 2,
            "mrr": 0.75,
            "latency_p50_ms": 20.0,
            "queries": 3,
            "queries_without_relevant": 1,
        },
        abs=1e-6,
    )
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([], 0.5) == 0.0


def test_a_perfect_ranking_scores_one_and_order_matters() -> None:
    judged = {"a": 3, "b": 2, "c": 1}
    assert query_figures(["a", "b", "c"], judged, 10).ndcg == pytest.approx(1.0)
    assert query_figures(["c", "b", "a"], judged, 10).ndcg < 1.0


def test_judgements_group_rows_into_queries_and_refuse_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "j.csv"
    path.write_text(
        "query,product_id,grade,filters\n"
        'red tile,p1,3,\nred tile,p2,0,\nred tile,p3,2,"{""category"": ""floor""}"\nblue,p1,1,\n'
    )
    judgements = read_judgements(path)
    assert [(q.text, q.filters, q.grades) for q in judgements.queries] == [
        ("red tile", None, {"p1": 3, "p2": 0}),
        ("red tile", {"category": "floor"}, {"p3": 2}),
        ("blue", None, {"p1": 1}),
    ]
    assert len(judgements.sha256) == 64
    for body, message in [
        ("query,product_id\nx,p1\n", "missing grade"),
        ("query,product_id,grade\nx,p1,4\n", "line 2: grade must be an integer from 0 to 3"),
        ("query,product_id,grade\nx,p1,high\n", "line 2: grade must be"),
        ("query,product_id,grade\n,p1,1\n", "line 2: a row needs a query or a query_image"),
        ("query,product_id,grade,filters\nx,p1,1,[1]\n", "line 2: filters must be a JSON object"),
        ("query,product_id,grade\n", "has no judgements"),
    ]:
        path.write_text(body)
        with pytest.raises(BadInput, match=message):
            read_judgements(path)
