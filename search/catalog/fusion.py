"""Reciprocal rank fusion (Cormack et al., 2009) of a lexical and a vector ranking, with a weight.

    score(p) = w / (K + rank_lexical(p)) + (1 - w) / (K + rank_vector(p))

ranks start at 1; a product missing from one list gets nothing from it. ``K`` = 60 is the constant of
the original paper (and of Elasticsearch, Weaviate, Qdrant and Vespa): it damps the difference between
the first few ranks so that neither list can win on rank 1 alone.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def reciprocal_rank_fusion(
    lexical: Sequence[int], vector: Sequence[int], lexical_weight: float, k: int = RRF_K
) -> list[tuple[int, float]]:
    """(id, fused score) best first; ties keep the order of first appearance (lexical, then vector)."""
    scores: dict[int, float] = {}
    for weight, ranking in ((lexical_weight, lexical), (1.0 - lexical_weight, vector)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys([*lexical, *vector]))}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
