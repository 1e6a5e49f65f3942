"""The stages a distributed job's workers run (indexer/engines/work.py), without Ray: the read stage
preprocesses as the local encoder does without the checkpoint at hand; the embed stage loads the model
when the first pixels arrive, its vectors are the local encoder's, and weights of another embedding
space are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devtools.random_model import write_random_model
from indexer.engines.work import AddItem, Embedder, Reader, image_preprocessor, model_space
from search.catalog.plan import ProductDraft
from search.errors import VitrineError
from search.model.encoder import Encoder
from tests.support.images import encode_png, patterned_image
from tests.support.settings import indexer_settings


def test_items_without_pixels_load_no_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = indexer_settings(tiny_model_dir, tmp_path / "data")
    embedder = Embedder(settings, model_space(settings).key)
    assert embedder.embed([None, np.empty((0, 3, 8, 8), np.float32)]) == [None, None]
    assert not embedder.loaded  # a rerun whose rows are all stored never loads the model


def test_the_first_pixels_load_the_model_and_get_the_local_encoders_vectors(
    tiny_model_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    settings = indexer_settings(tiny_model_dir, tmp_path / "data")
    embedder = Embedder(settings, model_space(settings).key)
    pixels = encoder.preprocess([patterned_image(1), patterned_image(2), patterned_image(3)])
    vectors = embedder.embed([pixels[:2], None, pixels[2:]])
    assert embedder.loaded
    expected = encoder.embed_pixels(pixels)
    assert vectors[1] is None
    np.testing.assert_allclose(np.concatenate([vectors[0], vectors[2]]), expected, atol=1e-5)


def test_a_worker_with_other_weights_is_refused_by_name(
    tiny_model_dir: Path, tmp_path: Path, encoder
) -> None:
    other = write_random_model("tiny", tmp_path / "tiny-seed-1", seed=1)
    job = model_space(indexer_settings(tiny_model_dir, tmp_path / "data")).key
    embedder = Embedder(indexer_settings(other, tmp_path / "data"), job)
    with pytest.raises(VitrineError) as refused:
        embedder.embed([encoder.preprocess([patterned_image(1)])])
    assert refused.value.message.startswith(f"this worker's {other} is embedding space ")
    assert refused.value.message.endswith(f"not the job's {job}: every node needs the same weights")


def test_the_read_stage_preprocesses_as_the_encoder_without_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    # The driver resolves the preprocessing; a read worker gets it and never opens the checkpoint (a
    # model path that does not exist there), so it needs neither the weights nor transformers.
    settings = indexer_settings(tiny_model_dir, tmp_path / "data")
    preprocess = image_preprocessor(settings)
    worker_settings = indexer_settings(tmp_path / "no-checkpoint-here", tmp_path / "data")
    reader = Reader(worker_settings, model_space(settings).key, preprocess)
    picture = patterned_image(4, size=(50, 30))
    (tmp_path / "a.png").write_bytes(encode_png(picture))
    result, pixels = reader.read_add(AddItem(0, ProductDraft("p1", images=["a.png"]), None), tmp_path, False)
    assert result.issue is None and result.embed == [0]
    np.testing.assert_array_equal(pixels, encoder.preprocess([picture]))
