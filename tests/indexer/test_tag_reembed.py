"""``indexer reembed`` re-tags: the taxonomy's prompts are embedded by the new model and every product's
tags come from its new vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devtools.random_model import write_random_model
from search.catalog import Catalog
from search.catalog.schema import Product
from search.catalog.tag_service import TaggingService
from search.model.encoder import Encoder
from tests.support.catalogs import IndexedCatalog
from tests.support.indexer import run_indexer_in_process, summary_of
from tests.support.settings import indexer_settings

COLORS = ["red", "blue", "green", "yellow"]
PROMPT = "a photo of a {} tile"


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model("tiny", tmp_path_factory.mktemp("other") / "tiny-seed-2", seed=2)


def test_reembed_retags_with_the_new_models_prompts(
    catalog_copy: IndexedCatalog,
    tiny_model_dir: Path,
    other_model_dir: Path,
    tmp_path: Path,
    encoder: Encoder,
) -> None:
    taxonomy = tmp_path / "t.json"
    taxonomy.write_text(
        json.dumps({"attributes": {"color": {"values": COLORS, "prompts": [PROMPT], "min_score": 0}}})
    )
    data = catalog_copy.data_dir
    tagged = run_indexer_in_process(
        indexer_settings(tiny_model_dir, data),
        "tag",
        "--taxonomy",
        str(taxonomy),
        "--no-progress",
        encoder=encoder,
    )
    assert tagged.returncode == 0, summary_of(tagged)
    moved = run_indexer_in_process(
        indexer_settings(other_model_dir, data), "reembed", "--json", "--no-progress"
    )
    assert moved.returncode == 0 and json.loads(moved.stdout)["switched"], summary_of(moved)

    other = Encoder.load(str(other_model_dir), device="cpu", dtype="float32")
    try:
        values = other.embed_texts([PROMPT.replace("{}", color) for color in COLORS])
        catalog = Catalog.open(indexer_settings(other_model_dir, data).resolved_database_url)
        try:
            stored = TaggingService(catalog, "unused").stored()
            records = catalog.get_by_ids(catalog.product_ids(Product.id > 0))
            for record in records.values():
                vectors = np.stack([v for _, v in catalog.embeddings(record.external_id)])
                logits = (
                    other.logit_scale * (vectors.astype(np.float64) @ values.T.astype(np.float64))
                    + other.logit_bias
                )
                scores = np.exp(logits - logits.max(axis=1, keepdims=True))
                scores = (scores / scores.sum(axis=1, keepdims=True)).mean(axis=0)
                assert record.tags["color"]["value"] == COLORS[int(scores.argmax())]
                assert record.tags["color"]["score"] == pytest.approx(scores.max(), rel=1e-4)
        finally:
            catalog.close()
    finally:
        other.close()
    assert stored is not None and stored.version == 2 and stored.model.startswith("sha256:")
