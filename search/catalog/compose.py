"""Composed queries: one query vector from weighted positive and negative examples.

    q = normalise( sum_i w_i * normalise(e_i)  -  sum_j w_j * normalise(e_j) )

over the positive examples i and the negative examples j (texts, images or products; a product's
embedding is the normalised mean of its images' vectors). Every example is normalised first so that a
weight means the same for a text as for an image; the result is normalised so that scores stay cosines.

The sum runs in float64 with the weights divided by the largest one first: only their ratios matter
(the result is normalised), and weights of 1e39 or 1e-300, finite as JSON numbers, would overflow or
vanish in float32 and read as "the examples cancel out".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.errors import BadInput

CANCELLED = "the query's examples cancel out (their weighted sum is zero); change the weights"


def normalise(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to unit length, as float64; BadInput when it has no direction."""
    vector = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-12:
        raise BadInput(CANCELLED)
    return vector / norm


def compose(
    positives: Sequence[tuple[np.ndarray, float]], negatives: Sequence[tuple[np.ndarray, float]] = ()
) -> np.ndarray:
    """The query vector of (embedding, weight) pairs, by the formula above, as unit float32."""
    if not positives:
        raise BadInput("a composed query needs at least one positive example")
    weights = [float(weight) for _, weight in [*positives, *negatives]]
    if not all(np.isfinite(w) and w > 0 for w in weights):
        raise BadInput("every example's weight must be a finite number above 0")
    scale = max(weights)
    total = np.zeros(np.asarray(positives[0][0]).shape[-1], dtype=np.float64)
    for vector, weight in positives:
        total += (float(weight) / scale) * normalise(vector)
    for vector, weight in negatives:
        total -= (float(weight) / scale) * normalise(vector)
    return normalise(total).astype(np.float32)


def product_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """One vector for a product with several images: the normalised mean of their vectors."""
    return normalise(np.mean(np.stack([normalise(v) for v in vectors]), axis=0)).astype(np.float32)
