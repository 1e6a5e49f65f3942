"""Composed queries: one query vector from weighted positive and negative examples.

    q = normalise( sum_i w_i * normalise(e_i)  -  sum_j w_j * normalise(e_j) )

over the positive examples i and the negative examples j (texts, images or products; a product's
embedding is the normalised mean of its images' vectors). Every example is normalised first so that a
weight means the same for a text as for an image; the result is normalised so that scores stay cosines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.errors import BadInput


def normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-12:
        raise BadInput("the query's examples cancel out (their weighted sum is zero); change the weights")
    return (vector / norm).astype(np.float32)


def compose(
    positives: Sequence[tuple[np.ndarray, float]], negatives: Sequence[tuple[np.ndarray, float]] = ()
) -> np.ndarray:
    """The query vector of (embedding, weight) pairs, by the formula above."""
    if not positives:
        raise BadInput("a composed query needs at least one positive example")
    total = np.zeros_like(np.asarray(positives[0][0], dtype=np.float32))
    for vector, weight in positives:
        total += weight * normalise(np.asarray(vector, dtype=np.float32))
    for vector, weight in negatives:
        total -= weight * normalise(np.asarray(vector, dtype=np.float32))
    return normalise(total)


def product_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """One vector for a product with several images: the normalised mean of their vectors."""
    return normalise(np.mean(np.stack([normalise(v) for v in vectors]), axis=0))
