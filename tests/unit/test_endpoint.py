"""The Hugging Face wire format (search/endpoint.py) called directly: every refusal's exact message (what
clients show their users), the limits at their edges, the dict forms of inputs, and tie order. The
scores themselves are pinned against transformers in tests/unit/model/test_numerics.py."""

from __future__ import annotations

import numpy as np
import pytest

from search.endpoint import fill_template
from search.errors import BadInput, TooLarge
from tests.support.images import b64, encode_png, patterned_image

IMAGE = b64(encode_png(patterned_image(3)))


@pytest.fixture
def endpoint(encoder, make_settings):
    from search.wiring import Components

    components = Components.start(make_settings(max_texts_per_request=3, max_images_per_request=2), encoder)
    yield components.endpoint
    components.close()


def refusal(endpoint, body: object, kind: type[Exception] = BadInput) -> str:
    with pytest.raises(kind) as refused:
        endpoint(body)
    return refused.value.message


@pytest.mark.parametrize(
    "body, message",
    [
        (["x"], 'request body must be a JSON object: {"inputs": ..., "parameters": {...}}'),
        ({"parameters": {}}, '"inputs" is required'),
        ({"inputs": "x", "parameters": []}, '"parameters" must be a JSON object'),
        (
            {"inputs": IMAGE, "parameters": {"candidate_labels": ["a"], "hypothesis_template": "no slot"}},
            'hypothesis_template must be a string containing "{}" where the label goes',
        ),
        (
            {"inputs": IMAGE, "parameters": {"candidate_labels": ["a"], "multi_label": "yes"}},
            "multi_label must be true or false",
        ),
        (
            {"inputs": IMAGE, "parameters": {"mode": "zero_shot", "candidate_labels": ""}},
            "candidate_labels is required for zero-shot classification",
        ),
        (
            {"inputs": {"image": IMAGE}, "parameters": {"mode": "similarity"}},
            "similarity needs inputs.image or inputs.images, and inputs.text or inputs.texts",
        ),
        (
            {"inputs": {"texts": ["a"]}, "parameters": {"mode": "similarity"}},
            "similarity needs inputs.image or inputs.images, and inputs.text or inputs.texts",
        ),
        (
            {"inputs": {"image": IMAGE, "texts": [1]}, "parameters": {"mode": "similarity"}},
            "inputs.texts[0] must be a string, not int",
        ),
        (
            {"inputs": {"image": IMAGE, "texts": {}}, "parameters": {"mode": "similarity"}},
            "inputs.texts must be a string or a list of strings",
        ),
        (
            {"inputs": IMAGE, "parameters": {"candidate_labels": {"a": 1}}},
            "parameters.candidate_labels must be a list of strings",
        ),
        (
            {"inputs": ["a", 2], "parameters": {"mode": "text_embedding"}},
            "inputs[1] must be a string, not int",
        ),
    ],
)
def test_each_refusal_says_exactly_what_is_wrong(endpoint, body, message):
    assert refusal(endpoint, body) == message


def test_candidate_labels_must_be_a_list_even_of_one(endpoint):
    message = refusal(endpoint, {"inputs": IMAGE, "parameters": {"candidate_labels": "a"}})
    assert message == "parameters.candidate_labels must be a list of strings"


@pytest.mark.parametrize("top_k, kept", [(1, 1), (2, 2)])
def test_top_k_of_one_and_more_keep_that_many_labels(endpoint, top_k, kept):
    result = endpoint({"inputs": IMAGE, "parameters": {"candidate_labels": ["a", "b", "c"], "top_k": top_k}})
    assert len(result) == kept


def test_top_k_below_one_names_the_parameter(endpoint):
    message = refusal(endpoint, {"inputs": IMAGE, "parameters": {"candidate_labels": ["a"], "top_k": 0}})
    assert message.startswith("top_k ")


def test_text_limits_at_their_edge(endpoint):
    assert len(endpoint({"inputs": ["a", "b", "c"], "parameters": {"mode": "text_embedding"}})) == 3
    message = refusal(
        endpoint, {"inputs": ["a", "b", "c", "d"], "parameters": {"mode": "text_embedding"}}, TooLarge
    )
    assert message == "inputs has 4 texts; the limit is 3 per request (VITRINE_MAX_TEXTS_PER_REQUEST)"


def test_image_limits_at_their_edge(endpoint):
    assert len(endpoint({"inputs": [IMAGE, IMAGE], "parameters": {"mode": "image_embedding"}})) == 2
    message = refusal(endpoint, {"inputs": [IMAGE] * 3, "parameters": {"mode": "image_embedding"}}, TooLarge)
    assert message == "inputs has 3 images; the limit is 2 per request (VITRINE_MAX_IMAGES_PER_REQUEST)"


@pytest.mark.parametrize("key", ["text", "texts"])
def test_text_embedding_takes_inputs_as_an_object_with_text_or_texts(endpoint, key):
    plain = endpoint({"inputs": ["glossy tile"], "parameters": {"mode": "text_embedding"}})
    keyed = endpoint({"inputs": {key: ["glossy tile"]}, "parameters": {"mode": "text_embedding"}})
    assert keyed == plain
    assert all(isinstance(x, float) for x in keyed[0]["embedding"])


def test_similarity_scores_are_plain_floats(endpoint):
    result = endpoint({"inputs": {"image": IMAGE, "texts": ["a", "b"]}, "parameters": {"mode": "similarity"}})
    assert all(type(x) is float for row in result["similarity_scores"] for x in row)


def test_equal_scores_keep_the_callers_label_order(endpoint):
    result = endpoint({"inputs": IMAGE, "parameters": {"candidate_labels": ["same", "same", "same"]}})
    assert [item["label"] for item in result] == ["same"] * 3
    from search.endpoint import _rank

    ranked = _rank(["c", "a", "b", "d"], np.array([0.5, 0.9, 0.5, 0.5]), None)
    assert [item["label"] for item in ranked] == ["a", "c", "b", "d"]


@pytest.mark.parametrize(
    "template, label, limit, expected",
    [
        ("a {} b", "X", 100, "a X b"),
        ("{} and {}", "ab", 100, "ab and ab"),
        ("{}{}{}{}", "abc", 7, "abcabca"),
        ("pre {} {} {}", "label", 6, "pre la"),
        ("{}", "", 5, ""),
        ("ab{}", "cd", 4, "abcd"),
        ("ab{}cd{}", "x", 5, "abxcd"),
    ],
)
def test_fill_template_fills_every_slot_and_stops_at_the_limit(template, label, limit, expected):
    assert fill_template(template, label, limit) == expected


def test_fill_template_does_not_build_past_the_limit():
    # A thousand slots of a 1,000-character label: only what the limit keeps is ever built.
    assert fill_template("{}" * 1000, "x" * 1000, 2500) == "x" * 2500


def test_a_stable_order_among_equal_scores_even_for_many_labels():
    from search.endpoint import _rank

    labels = [f"label {i}" for i in range(80)]
    scores = np.array([0.5, 0.1] * 40)  # numpy's default sort reorders equal keys at this size
    ranked = [item["label"] for item in _rank(labels, scores, None)]
    assert ranked == labels[0::2] + labels[1::2]


def test_text_embedding_of_an_object_without_text_keys_is_refused_not_a_crash(endpoint):
    message = refusal(endpoint, {"inputs": {"image": IMAGE}, "parameters": {"mode": "text_embedding"}})
    assert message == "inputs must be a string or a list of strings"


def test_similarity_of_inputs_that_are_not_an_object(endpoint):
    message = refusal(endpoint, {"inputs": "x", "parameters": {"mode": "similarity"}})
    assert message == 'similarity needs "inputs" as an object with "image" or "images" and "text" or "texts"'


def test_a_single_bad_image_is_named_inputs_and_one_in_a_batch_by_its_index(endpoint):
    single = refusal(
        endpoint, {"inputs": "data:image/png;base64,AAAA", "parameters": {"mode": "image_embedding"}}
    )
    assert single.startswith("inputs") and not single.startswith("inputs[")
    batch = refusal(
        endpoint, {"inputs": [IMAGE, "data:image/png;base64,AAAA"], "parameters": {"mode": "image_embedding"}}
    )
    assert batch.startswith("inputs[1]")
