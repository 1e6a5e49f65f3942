"""Zero-shot tags from stored image embeddings: the formula, in numpy, with no model call.

- A value's text embedding is the L2-normalised mean of the embeddings of its prompts, over the value
  and its synonyms (every prompt with every name).
- An image's logits are SigLIP's: ``logit_scale * cosine(image, value) + logit_bias``.
- Single-label: a softmax of the logits over the attribute's values. Multi-label: the sigmoid of each.
- A product's score for a value is the mean of its images' scores.
- A value appears as a tag only at or above the attribute's ``min_score``; a single-label attribute
  tags its best value, a multi-label one every value that passes. Below it: no tag ("unknown").

With one prompt per value and no synonyms, a one-image product's scores are exactly what ``POST /``
zero-shot answers for that image with ``hypothesis_template`` = the prompt (and ``multi_label`` for a
multi-label attribute); tests/unit/catalog/test_tagging.py holds it to that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from search.catalog.taxonomy import TagAttribute, Taxonomy

TEXT_BATCH = 256


# One tag of one product as stored (product_tags): (product_id, key, value, score, multi_label). Plain
# tuples: a million products make millions of them, written by the driver's executemany as they are.
TagRow = tuple[int, str, str, float, bool]


def value_texts(attribute: TagAttribute) -> list[list[tuple[str, str]]]:
    """Per value of ``attribute``: the (prompt, name) pairs whose embeddings are averaged."""
    return [attribute.prompt_pairs(value) for value in attribute.values]


def value_embeddings(
    taxonomy: Taxonomy,
    embed: Callable[[list[tuple[str, str]]], np.ndarray],
    known: Callable[[tuple[tuple[str, str], ...]], np.ndarray | None] = lambda pairs: None,
) -> np.ndarray:
    """One L2-normalised row per value of every attribute, in order.

    ``embed`` turns (prompt, name) pairs into text embeddings (the encoder fills the template exactly as
    the zero-shot endpoint does); ``known`` gives the vector of a value whose pairs are unchanged from a
    stored version, which is then not embedded again."""
    groups = [tuple(pairs) for attribute in taxonomy.attributes for pairs in value_texts(attribute)]
    rows: list[np.ndarray | None] = [known(pairs) for pairs in groups]
    missing = [i for i, row in enumerate(rows) if row is None]
    flat = [pair for i in missing for pair in groups[i]]
    embedded = (
        np.concatenate([embed(flat[start : start + TEXT_BATCH]) for start in range(0, len(flat), TEXT_BATCH)])
        if flat
        else np.zeros((0, 0), np.float32)
    )
    offset = 0
    for i in missing:
        count = len(groups[i])
        mean = embedded[offset : offset + count].astype(np.float64).mean(axis=0)
        offset += count
        rows[i] = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack(rows).astype(np.float32)  # type: ignore[arg-type]


@dataclass
class Tagger:
    """A taxonomy compiled with its values' embeddings: scores and tags of image vectors.

    ``model`` is the embedding space the value vectors are in; only images of that space are scored."""

    taxonomy: Taxonomy
    vectors: np.ndarray  # (values of every attribute, dim), float32, L2-normalised
    model: str
    logit_scale: float
    logit_bias: float
    version: int = 0
    _slices: list[slice] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        start = 0
        for attribute in self.taxonomy.attributes:
            self._slices.append(slice(start, start + len(attribute.values)))
            start += len(attribute.values)
        if start != len(self.vectors):
            raise ValueError(f"the taxonomy has {start} values but {len(self.vectors)} value vectors")
        self._matrix = np.ascontiguousarray(self.vectors.T, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.size else 0

    def image_scores(self, images: np.ndarray) -> list[np.ndarray]:
        """Per attribute, an (images, values) matrix of scores."""
        # float32 BLAS for the big product (a million images in seconds); the nonlinearity in float64.
        logits = (np.asarray(images, dtype=np.float32) @ self._matrix).astype(np.float64)
        logits = logits * self.logit_scale + self.logit_bias
        out = []
        for attribute, part in zip(self.taxonomy.attributes, self._slices, strict=True):
            block = logits[:, part]
            out.append(_sigmoid(block) if attribute.multi_label else _softmax(block))
        return out

    def product_scores(self, images: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(product ids, per attribute a (products, values) matrix): each product's score is the mean of
        its images' scores. ``owners``: the product id of each image row, grouped (sorted) by product."""
        if not len(owners):
            return np.zeros(0, np.int64), [np.zeros((0, len(a.values))) for a in self.taxonomy.attributes]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        counts = np.diff(np.r_[starts, len(owners)]).astype(np.float64)[:, None]
        products = owners[starts]
        scores = [np.add.reduceat(block, starts, axis=0) / counts for block in self.image_scores(images)]
        return products, scores

    def tag_rows(self, products: np.ndarray, scores: Sequence[np.ndarray]) -> list[TagRow]:
        """The tags at or above each attribute's threshold: a single-label attribute's best value, a
        multi-label attribute's every passing value."""
        rows: list[TagRow] = []
        for attribute, block in zip(self.taxonomy.attributes, scores, strict=True):
            names = attribute.value_names
            if attribute.multi_label:
                where, which = np.nonzero(block >= attribute.min_score)
                chosen, values = which, block[where, which]
            else:
                best = block.argmax(axis=1)
                top = block[np.arange(len(block)), best]
                where = np.flatnonzero(top >= attribute.min_score)
                chosen, values = best[where], top[where]
            key, multi = attribute.name, attribute.multi_label
            rows += [
                (pid, key, names[j], score, multi)
                for pid, j, score in zip(
                    products[where].tolist(), chosen.tolist(), values.tolist(), strict=True
                )
            ]
        return rows

    def tags(self, images: np.ndarray, owners: np.ndarray) -> list[TagRow]:
        return self.tag_rows(*self.product_scores(images, owners))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))
