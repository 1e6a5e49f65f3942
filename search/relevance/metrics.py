"""Ranking quality of one query's results against graded judgements (0 = not relevant .. 3 = perfect).

    DCG@k  = sum_{i=1..k} grade(result_i) / log2(i + 1)        (linear gains, the standard log2 discount)
    NDCG@k = DCG@k / IDCG@k, IDCG@k the DCG of the judged grades in the best order
    recall@k = relevant results in the top k / relevant judged        (relevant: grade >= 1)
    RR@k   = 1 / rank of the first relevant result in the top k, else 0 (MRR is its mean)

An unjudged result counts as grade 0. A query with no relevant judgement has no NDCG, recall or RR (it
is left out of the means, and counted). Linear gains are sklearn's ``ndcg_score`` and trec_eval's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def dcg(grades: Sequence[float], k: int) -> float:
    return sum(grade / math.log2(i + 2) for i, grade in enumerate(grades[:k]))


@dataclass(frozen=True)
class QueryFigures:
    ndcg: float
    recall: float
    rr: float


def query_figures(results: Sequence[str], judged: Mapping[str, int], k: int) -> QueryFigures | None:
    """NDCG@k, recall@k and RR@k of ``results`` (product ids, best first); None without a relevant one."""
    relevant = {pid for pid, grade in judged.items() if grade >= 1}
    if not relevant:
        return None
    top = list(results[:k])
    ideal = dcg(sorted(judged.values(), reverse=True), k)
    ndcg = dcg([judged.get(pid, 0) for pid in top], k) / ideal
    recall = len(relevant & set(top)) / len(relevant)
    rr = next((1 / (i + 1) for i, pid in enumerate(top) if pid in relevant), 0.0)
    return QueryFigures(ndcg, recall, rr)


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile by linear interpolation (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(figures: Sequence[QueryFigures | None], latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """Means over the queries with a relevant judgement, and the latency's median."""
    scored = [f for f in figures if f is not None]
    n = len(scored)
    return {
        "ndcg": sum(f.ndcg for f in scored) / n if n else 0.0,
        "recall": sum(f.recall for f in scored) / n if n else 0.0,
        "mrr": sum(f.rr for f in scored) / n if n else 0.0,
        "latency_p50_ms": percentile(latencies_ms, 0.5),
        "queries": len(figures),
        "queries_without_relevant": len(figures) - n,
    }
