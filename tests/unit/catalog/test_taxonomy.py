"""The taxonomy document's checks (each refusal names the attribute) and the calibration's threshold fit."""

from __future__ import annotations

import numpy as np
import pytest

from search.catalog.calibration import fit_threshold, precision_at, predictions
from search.catalog.taxonomy import Taxonomy
from search.errors import BadInput

GOOD = {
    "attributes": {
        "color": {"values": ["red", {"value": "navy", "synonyms": ["dark blue"]}], "prompts": ["a {} tile"]},
        "style": {"values": ["modern"], "multi_label": True, "min_score": 0.2},
    }
}


def test_a_document_round_trips_with_its_defaults() -> None:
    taxonomy = Taxonomy.parse(GOOD)
    assert taxonomy.get("color").prompt_pairs(taxonomy.get("color").values[1]) == [
        ("a {} tile", "navy"),
        ("a {} tile", "dark blue"),
    ]
    assert taxonomy.as_json()["attributes"]["style"] == {
        "values": ["modern"],
        "prompts": ["a photo of a {} product"],
        "multi_label": True,
        "min_score": 0.2,
    }
    assert Taxonomy.parse(taxonomy.as_json()) == taxonomy


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"values": "red"}, "values must be a non-empty list"),
        ({"values": ["red", "red"]}, "listed twice"),
        ({"values": ["red", 3]}, "values[1]"),
        ({"values": ["red", {"value": "navy", "synonyms": "blue"}]}, "synonyms"),
        ({"values": ["red", {"value": "navy", "colour": 1}]}, "unknown key 'colour'"),
        ({"values": ["red", "blue"], "prompts": ["no slot"]}, "prompts[0]"),
        ({"values": ["red", "blue"], "prompts": []}, "prompts must be a list"),
        ({"values": ["red", "blue"], "multi_label": "yes"}, "multi_label"),
        ({"values": ["red", "blue"], "min_score": -0.1}, "min_score"),
        ({"values": ["red", "blue"], "min_score": True}, "min_score"),
        ({"values": ["red"]}, "at least two values"),
        ({"values": ["red", "blue"], "threshold": 0.5}, "unknown key 'threshold'"),
        ("red", "must be an object"),
    ],
)
def test_a_malformed_attribute_is_refused_by_name(spec: object, words: str) -> None:
    with pytest.raises(BadInput) as refused:
        Taxonomy.parse({"attributes": {"ok": {"values": ["a", "b"]}, "finish": spec}})
    assert "'finish'" in refused.value.message and words in refused.value.message


def test_the_document_itself_must_be_an_attributes_object() -> None:
    for document in ([], {"attrs": {}}, {"attributes": [], "x": 1}, {"attributes": {}, "extra": 1}):
        with pytest.raises(BadInput):
            Taxonomy.parse(document)


def test_the_fitted_threshold_is_the_lowest_score_reaching_the_target() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, True, False, True, False])
    # precision from the top: 1, 1, 1, 1, 0.8, 0.83, 0.71
    assert fit_threshold(scores, correct, 0.8) == 0.5
    assert fit_threshold(scores, correct, 0.9) == 0.7
    assert precision_at(scores, correct, 0.7) == 1.0
    assert fit_threshold(scores, ~correct, 0.9) is None  # out of reach
    assert fit_threshold(np.zeros(0), np.zeros(0, bool), 0.9) is None


def test_equal_scores_are_kept_or_dropped_together() -> None:
    scores = np.array([0.9, 0.6, 0.6, 0.6])
    correct = np.array([True, True, False, False])
    # At 0.6 all three 0.6s count: precision 0.5; the first 0.6 alone (0.67) is no threshold.
    assert fit_threshold(scores, correct, 0.6) == 0.9


def test_predictions_of_single_and_multi_label_attributes() -> None:
    taxonomy = Taxonomy.parse(
        {"attributes": {"c": {"values": ["a", "b", "c"]}, "m": {"values": ["x", "y"], "multi_label": True}}}
    )
    block = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])
    values, right = predictions(taxonomy.get("c"), block, [{"b"}, {"c"}])
    assert values.tolist() == [0.7, 0.5] and right.tolist() == [True, False]
    values, right = predictions(taxonomy.get("m"), np.array([[0.9, 0.2]]), [{"x", "y"}])
    assert values.tolist() == [0.9, 0.2] and right.tolist() == [True, True]
