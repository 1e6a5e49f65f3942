"""Reciprocal rank fusion (search/catalog/fusion.py): exact scores, weights and ties."""

from __future__ import annotations

import pytest

from search.catalog.fusion import RRF_K, reciprocal_rank_fusion


def test_scores_follow_the_formula_with_k_60():
    assert RRF_K == 60
    fused = dict(reciprocal_rank_fusion([1, 2], [2, 3], lexical_weight=0.25))
    assert fused[1] == pytest.approx(0.25 / 61)
    assert fused[2] == pytest.approx(0.25 / 62 + 0.75 / 61)
    assert fused[3] == pytest.approx(0.75 / 62)


def test_best_first():
    assert [item for item, _ in reciprocal_rank_fusion([1, 2], [2, 3], 0.25)] == [2, 3, 1]
    assert [item for item, _ in reciprocal_rank_fusion([1, 2], [2, 3], 0.9)] == [2, 1, 3]


def test_weight_one_is_the_lexical_ranking_and_zero_the_vector_ranking():
    assert [item for item, score in reciprocal_rank_fusion([5, 6], [7, 6], 1.0) if score > 0] == [5, 6]
    assert [item for item, score in reciprocal_rank_fusion([5, 6], [7, 6], 0.0) if score > 0] == [7, 6]


def test_ties_keep_the_order_of_first_appearance_lexical_then_vector():
    # Rank 1 in one list each, equal weights: equal scores, lexical's item first.
    assert reciprocal_rank_fusion([8], [9], 0.5) == [
        (8, pytest.approx(0.5 / 61)),
        (9, pytest.approx(0.5 / 61)),
    ]
    assert [item for item, _ in reciprocal_rank_fusion([3, 4], [4, 3], 0.5)] == [3, 4]


def test_another_k():
    fused = dict(reciprocal_rank_fusion([1], [1], 0.5, k=1))
    assert fused[1] == pytest.approx(0.5 / 2 + 0.5 / 2)


def test_empty_lists():
    assert reciprocal_rank_fusion([], [], 0.5) == []
    assert reciprocal_rank_fusion([], [4], 0.5) == [(4, pytest.approx(0.5 / 61))]
