"""Golden numerics: every mode equals a plain transformers computation on the tiny model, to 1e-5
(tests/support/reference.py, written out independently of search/model/encoder.py)."""

from __future__ import annotations

import numpy as np
import pytest

from search.model.encoder import BatchSettings, Encoder
from tests.support.images import b64, encode_png, patterned_image
from tests.support.reference import (
    load_reference,
    ref_image_embeddings,
    ref_logits,
    ref_sigmoid,
    ref_softmax,
    ref_text_embeddings,
)

TOL = 1e-5
LABELS = ["ceramic tile", "Porcelain Tile", "natural stone", "wood flooring"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return load_reference(tiny_model_dir)


def image_input(seed: int) -> str:
    return b64(encode_png(patterned_image(seed)))


def embeddings(response) -> np.ndarray:
    return np.array([item["embedding"] for item in response])


def scores_by_label(ranking) -> dict[str, float]:
    return {item["label"]: item["score"] for item in ranking}


# Embeddings ---------------------------------------------------------------------------------------------


def test_image_embeddings_equal_transformers(inference, reference):
    seeds = [1, 2, 3]
    result = inference({"inputs": [image_input(s) for s in seeds], "parameters": {"mode": "image_embedding"}})
    expected = ref_image_embeddings(reference, [patterned_image(s) for s in seeds])
    np.testing.assert_allclose(embeddings(result), expected, atol=TOL)


def test_text_embeddings_equal_transformers(inference, reference):
    texts = ["glossy porcelain tile", "Natural Wood Flooring", "x"]
    result = inference({"inputs": texts, "parameters": {"mode": "text_embedding"}})
    np.testing.assert_allclose(embeddings(result), ref_text_embeddings(reference, texts), atol=TOL)


def test_image_and_text_embeddings_have_unit_norm(inference):
    images = inference(
        {"inputs": [image_input(4), image_input(5)], "parameters": {"mode": "image_embedding"}}
    )
    texts = inference({"inputs": ["a", "a much longer text " * 5], "parameters": {"mode": "text_embedding"}})
    for vectors in (embeddings(images), embeddings(texts)):
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=TOL)


def test_text_embedding_alone_equals_it_inside_a_batch_of_different_lengths(encoder, tiny_model_dir):
    # A second encoder, so neither result comes from the other's text cache.
    other = Encoder.load(
        str(tiny_model_dir),
        device="cpu",
        dtype="float32",
        batching=BatchSettings(image_batch=4, text_batch=4),
    )
    text = "matte ceramic tile"
    alone = encoder.embed_texts([text])[0]
    # Six texts cross the batch size (4): the text shares its forward pass with shorter and longer mates.
    batch = ["a", "a very long description of a rustic oak wood plank floor " * 3, text, "b", "c", "d"]
    in_batch = other.embed_texts(batch)[2]
    np.testing.assert_allclose(in_batch, alone, atol=TOL)


def test_image_embedding_alone_equals_it_inside_a_batch_of_different_images(inference):
    alone = inference({"inputs": image_input(7), "parameters": {"mode": "image_embedding"}})
    other_sizes = [b64(encode_png(patterned_image(s, size=(40 + 9 * s, 30 + 5 * s)))) for s in range(5)]
    batch = inference({"inputs": [*other_sizes, image_input(7)], "parameters": {"mode": "image_embedding"}})
    np.testing.assert_allclose(embeddings(batch)[-1], embeddings(alone)[0], atol=TOL)


def test_text_tower_gets_input_ids_only_no_attention_mask(inference, reference):
    texts = ["short", "a somewhat longer text"]
    result = embeddings(inference({"inputs": texts, "parameters": {"mode": "text_embedding"}}))
    unmasked = ref_text_embeddings(reference, texts)
    masked = ref_text_embeddings(reference, texts, with_attention_mask=True)
    np.testing.assert_allclose(result, unmasked, atol=TOL)
    # The mask changes the result on this model, so the equality above really pins the choice.
    assert np.abs(result - masked).max() > 1e-3


def test_text_is_lower_cased_before_tokenising(inference, reference):
    upper = embeddings(inference({"inputs": ["GLOSSY Tile"], "parameters": {"mode": "text_embedding"}}))
    lower = embeddings(inference({"inputs": ["glossy tile"], "parameters": {"mode": "text_embedding"}}))
    np.testing.assert_allclose(upper, lower, atol=TOL)
    # Upper-case letters tokenise differently, so without lower-casing the result would differ.
    not_lowered = ref_text_embeddings(reference, ["GLOSSY Tile"], lower=False)
    assert np.abs(upper - not_lowered).max() > 1e-3


# Zero-shot ----------------------------------------------------------------------------------------------


def test_zero_shot_scores_are_softmax_of_siglip_logits_with_default_template(inference, reference):
    result = inference({"inputs": image_input(1), "parameters": {"candidate_labels": LABELS}})
    image = ref_image_embeddings(reference, [patterned_image(1)])
    texts = ref_text_embeddings(reference, [f"This is a photo of {label}." for label in LABELS])
    expected = ref_softmax(ref_logits(reference, image, texts))[0]
    got = scores_by_label(result)
    assert set(got) == set(LABELS)
    np.testing.assert_allclose([got[label] for label in LABELS], expected, atol=TOL)


def test_zero_shot_scores_sum_to_one(inference):
    result = inference({"inputs": image_input(2), "parameters": {"candidate_labels": LABELS}})
    assert sum(item["score"] for item in result) == pytest.approx(1.0, abs=TOL)


def test_zero_shot_results_sorted_by_score_descending(inference):
    result = inference({"inputs": image_input(3), "parameters": {"candidate_labels": LABELS}})
    scores = [item["score"] for item in result]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) > 1  # the ordering is not vacuous


def test_default_hypothesis_template_is_this_is_a_photo_of(inference):
    default = inference({"inputs": image_input(4), "parameters": {"candidate_labels": LABELS}})
    explicit = inference(
        {
            "inputs": image_input(4),
            "parameters": {"candidate_labels": LABELS, "hypothesis_template": "This is a photo of {}."},
        }
    )
    bare = inference(
        {"inputs": image_input(4), "parameters": {"candidate_labels": LABELS, "hypothesis_template": "{}"}}
    )
    assert default == explicit
    assert scores_by_label(default) != pytest.approx(scores_by_label(bare), abs=TOL)


def test_bare_template_scores_the_label_itself(inference, reference):
    result = inference(
        {"inputs": image_input(5), "parameters": {"candidate_labels": LABELS, "hypothesis_template": "{}"}}
    )
    image = ref_image_embeddings(reference, [patterned_image(5)])
    expected = ref_softmax(ref_logits(reference, image, ref_text_embeddings(reference, LABELS)))[0]
    got = scores_by_label(result)
    np.testing.assert_allclose([got[label] for label in LABELS], expected, atol=TOL)


def test_multi_label_gives_independent_sigmoids(inference, reference):
    params = {"candidate_labels": LABELS, "multi_label": True}
    result = inference({"inputs": image_input(6), "parameters": params})
    image = ref_image_embeddings(reference, [patterned_image(6)])
    texts = ref_text_embeddings(reference, [f"This is a photo of {label}." for label in LABELS])
    expected = ref_sigmoid(ref_logits(reference, image, texts))[0]
    got = scores_by_label(result)
    np.testing.assert_allclose([got[label] for label in LABELS], expected, atol=TOL)
    # Independent: a label's score does not depend on the other candidates.
    alone = inference(
        {"inputs": image_input(6), "parameters": {"candidate_labels": LABELS[:1], "multi_label": True}}
    )
    assert alone[0]["score"] == pytest.approx(got[LABELS[0]], abs=TOL)


def test_top_k_keeps_the_k_best_labels(inference):
    full = inference({"inputs": image_input(7), "parameters": {"candidate_labels": LABELS}})
    top = inference({"inputs": image_input(7), "parameters": {"candidate_labels": LABELS, "top_k": 2}})
    assert top == full[:2]


def test_zero_shot_batch_gives_one_ranking_per_image(inference, reference):
    result = inference(
        {"inputs": [image_input(1), image_input(2)], "parameters": {"candidate_labels": LABELS}}
    )
    images = ref_image_embeddings(reference, [patterned_image(1), patterned_image(2)])
    texts = ref_text_embeddings(reference, [f"This is a photo of {label}." for label in LABELS])
    expected = ref_softmax(ref_logits(reference, images, texts))
    assert len(result) == 2
    for ranking, row in zip(result, expected, strict=True):
        got = scores_by_label(ranking)
        np.testing.assert_allclose([got[label] for label in LABELS], row, atol=TOL)


# Similarity ---------------------------------------------------------------------------------------------


def test_similarity_is_cosine_of_transformers_embeddings(inference, reference):
    texts = ["Ceramic tile", "wood flooring", "heat pump"]
    result = inference(
        {"inputs": {"images": [image_input(1), image_input(2)], "texts": texts}, "parameters": {}}
    )
    images = ref_image_embeddings(reference, [patterned_image(1), patterned_image(2)])
    expected = images @ ref_text_embeddings(reference, texts).T
    np.testing.assert_allclose(result["similarity_scores"], expected, atol=TOL)


# Over HTTP ----------------------------------------------------------------------------------------------


def test_zero_shot_over_http_equals_transformers(server, image_server, reference):
    url = image_server.add("/numerics/zero-shot.png", encode_png(patterned_image(8)))
    response = server.client.post("/", json={"inputs": url, "parameters": {"candidate_labels": LABELS}})
    assert response.status_code == 200
    image = ref_image_embeddings(reference, [patterned_image(8)])
    texts = ref_text_embeddings(reference, [f"This is a photo of {label}." for label in LABELS])
    expected = ref_softmax(ref_logits(reference, image, texts))[0]
    got = scores_by_label(response.json())
    np.testing.assert_allclose([got[label] for label in LABELS], expected, atol=TOL)


def test_embeddings_and_similarity_over_http_equal_transformers(server, reference):
    texts = ["Glossy white porcelain", "oak"]
    images = [image_input(9), image_input(10)]
    pictures = [patterned_image(9), patterned_image(10)]
    post = server.client.post
    image_vectors = post("/", json={"inputs": images, "parameters": {"mode": "image_embedding"}}).json()
    text_vectors = post("/", json={"inputs": texts, "parameters": {"mode": "text_embedding"}}).json()
    similarity = post("/", json={"inputs": {"images": images, "texts": texts}}).json()
    ref_images = ref_image_embeddings(reference, pictures)
    ref_texts = ref_text_embeddings(reference, texts)
    np.testing.assert_allclose(embeddings(image_vectors), ref_images, atol=TOL)
    np.testing.assert_allclose(embeddings(text_vectors), ref_texts, atol=TOL)
    np.testing.assert_allclose(similarity["similarity_scores"], ref_images @ ref_texts.T, atol=TOL)
