"""The composition of a query vector from weighted examples (search/catalog/compose.py), by its formula."""

from __future__ import annotations

import numpy as np
import pytest

from search.catalog.compose import CANCELLED, compose, normalise, product_vector
from search.errors import BadInput

A = np.array([1.0, 0.0, 0.0], np.float32)
B = np.array([0.0, 1.0, 0.0], np.float32)
C = np.array([0.0, 0.0, 1.0], np.float32)


def test_one_positive_is_itself_normalised_as_unit_float32():
    q = compose([(4 * A, 3.0)])
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q, A)


def test_positives_add_and_negatives_subtract_by_weight():
    q = compose([(A, 2.0), (5 * B, 1.0)], [(C, 1.0)])
    np.testing.assert_allclose(q, np.array([2.0, 1.0, -1.0]) / np.sqrt(6), atol=1e-7)


def test_two_negatives_both_subtract():
    q = compose([(A, 1.0)], [(B, 1.0), (C, 3.0)])
    np.testing.assert_allclose(q, np.array([1.0, -1.0, -3.0]) / np.sqrt(11), atol=1e-7)


def test_only_the_ratios_of_weights_matter_even_at_the_ends_of_float_range():
    expected = compose([(A, 2.0), (B, 1.0)])
    np.testing.assert_allclose(compose([(A, 2e38), (B, 1e38)]), expected, atol=1e-7)
    np.testing.assert_allclose(compose([(A, 2e-300), (B, 1e-300)]), expected, atol=1e-7)
    # A negative weight far above every positive still only scales relative to the largest weight.
    np.testing.assert_allclose(
        compose([(A, 1.0)], [(B, 1e300)]), compose([(A, 1e-300)], [(B, 1.0)]), atol=1e-7
    )


def test_no_positive_is_bad_input():
    with pytest.raises(BadInput) as refused:
        compose([], [(A, 1.0)])
    assert refused.value.message == "a composed query needs at least one positive example"


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_a_weight_not_finite_and_above_zero_is_bad_input(weight):
    for positives, negatives in (([(A, weight)], []), ([(A, 1.0)], [(B, weight)])):
        with pytest.raises(BadInput) as refused:
            compose(positives, negatives)
        assert refused.value.message == "every example's weight must be a finite number above 0"


def test_examples_that_cancel_out_are_bad_input():
    with pytest.raises(BadInput) as refused:
        compose([(A, 1.0)], [(2 * A, 1.0)])
    assert refused.value.message == CANCELLED


def test_normalise_refuses_vectors_without_a_direction():
    for vector in (np.zeros(3), np.full(3, 1e-13), np.array([np.inf, 0, 0]), np.array([np.nan, 1, 0])):
        with pytest.raises(BadInput):
            normalise(vector)
    np.testing.assert_allclose(normalise(np.full(3, 1e-11)), np.full(3, 1 / np.sqrt(3)))
    assert normalise(np.array([3.0, 4.0], np.float32)).dtype == np.float64


def test_a_products_vector_is_the_normalised_mean_of_its_normalised_images():
    v = product_vector([A, 9 * B])
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, np.array([1.0, 1.0, 0.0]) / np.sqrt(2), atol=1e-7)
    np.testing.assert_array_equal(product_vector([2 * C]), C)


def test_a_norm_of_exactly_the_threshold_still_has_a_direction():
    np.testing.assert_array_equal(normalise(np.array([1e-12, 0.0, 0.0])), [1.0, 0.0, 0.0])
