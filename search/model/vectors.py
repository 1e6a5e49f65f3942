"""Embeddings that come from outside (imported files, vector queries): checked, then L2-normalised.

One rule for both, so an imported vector and the same vector sent as a query land on the same unit
vector (inner product = cosine).
"""

from __future__ import annotations

import numpy as np

# A float32 vector whose norm is this close to 1 is kept bit for bit: normalising it again could flip
# its last bits, and an exported catalog must import back unchanged.
UNIT_TOLERANCE = 1e-6


def normalise_rows(vectors: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Unit float32 rows and, per row, why it was refused (None: kept).

    Refused: a non-finite value (NaN, infinity) or a zero vector. Refused rows come back as zeros.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0).astype(np.float64), axis=1)
    reasons: list[str | None] = [None] * len(vectors)
    for row in np.flatnonzero(~finite):
        reasons[row] = "embedding has a non-finite value (NaN or infinity)"
    for row in np.flatnonzero(finite & (norms == 0)):
        reasons[row] = "embedding is the zero vector"
    good = finite & (norms > 0)
    out = np.zeros_like(vectors)
    keep = good & (np.abs(norms - 1) <= UNIT_TOLERANCE)
    scale = good & ~keep
    out[keep] = vectors[keep]
    out[scale] = (vectors[scale].astype(np.float64) / norms[scale, None]).astype(np.float32)
    return out, reasons


def normalise_vector(values: object, dim: int) -> np.ndarray:
    """One query vector (a list of numbers) as a unit float32 vector; ValueError says what is wrong."""
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("vector must be a list of numbers") from None
    if vector.ndim != 1 or len(vector) != dim:
        raise ValueError(f"vector must have {dim} numbers (the model's dimension), not {vector.size}")
    # Finite as float64 but past float32's range is infinite once stored: refused too.
    if not np.isfinite(vector).all() or (np.abs(vector) > np.finfo(np.float32).max).any():
        raise ValueError("vector must contain only finite numbers")
    unit, reasons = normalise_rows(vector.astype(np.float32)[None])
    if reasons[0]:
        raise ValueError(f"vector is invalid: {reasons[0]}")
    return unit[0]
