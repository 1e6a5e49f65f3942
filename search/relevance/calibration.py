"""Relevance calibration: the probability that a hit is relevant, from its vector and lexical scores.

A logistic regression per mode, fitted on the user's judgements (relevant: grade >= 1) by
``python -m indexer evaluate --calibrate`` and stored in the catalog:

    vector:  p = sigmoid(b + a1 * cosine)
    lexical: p = sigmoid(b + a2 * log(1 + score) + a3 * matched)
    hybrid:  p = sigmoid(b + a1 * cosine + a2 * log(1 + score) + a3 * matched)

``score`` is BM25 on SQLite and ts_rank on PostgreSQL (a model is fitted on the store it serves).
A cosine and a full-text score can be thresholded; their fused rank cannot: this is what gives hybrid
results a cut-off with a meaning (``min_relevance``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.catalog.store import Catalog
from search.relevance.judgements import Judgements

if TYPE_CHECKING:
    from search.catalog.service import ProductService

FEATURES = {
    "vector": ("cosine",),
    "lexical": ("log1p_lexical", "lexical_match"),
    "hybrid": ("cosine", "log1p_lexical", "lexical_match"),
}


def features(mode: str, cosine: float | None, lexical: float | None) -> list[float]:
    values = {
        "cosine": cosine if cosine is not None else 0.0,
        "log1p_lexical": math.log1p(max(lexical, 0.0)) if lexical is not None else 0.0,
        "lexical_match": 1.0 if lexical is not None else 0.0,
    }
    return [values[name] for name in FEATURES[mode]]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and intercept of an L2-regularised logistic regression, by Newton's method on
    standardised features (folded back into the returned weights)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    theta = np.zeros(z.shape[1])
    penalty = np.diag([0.0] + [l2] * (z.shape[1] - 1)) * len(x)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(z @ theta, -30, 30)))
        gradient = z.T @ (p - y) + penalty @ theta
        hessian = (z.T * (p * (1 - p))) @ z + penalty + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    weights = theta[1:] / scale
    return weights, float(theta[0] - np.dot(weights, mean))


@dataclass(frozen=True)
class Calibration:
    models: dict[str, dict[str, Any]]  # mode -> {"features", "weights", "intercept", "pairs", "relevant"}

    @classmethod
    def fit(cls, pairs: Sequence[tuple[float | None, float | None, int]]) -> Calibration:
        """Models of (cosine, lexical score, grade) pairs; a mode without both classes gets none."""
        labels = np.array([1.0 if grade >= 1 else 0.0 for _, _, grade in pairs])
        models = {}
        for mode in FEATURES:
            if labels.min(initial=1) == labels.max(initial=0):
                continue  # one class only: nothing to separate
            x = np.array([features(mode, cosine, lexical) for cosine, lexical, _ in pairs])
            weights, intercept = fit_logistic(x, labels)
            models[mode] = {
                "features": list(FEATURES[mode]),
                "weights": [float(w) for w in weights],
                "intercept": intercept,
                "pairs": len(pairs),
                "relevant": int(labels.sum()),
            }
        return cls(models)

    def probability(self, mode: str, cosine: float | None, lexical: float | None) -> float | None:
        model = self.models.get(mode)
        if model is None:
            return None
        logit = model["intercept"] + float(np.dot(model["weights"], features(mode, cosine, lexical)))
        return 1 / (1 + math.exp(-max(-30.0, min(30.0, logit))))


class CalibrationCache:
    """The catalog's stored calibration, read again at most every ``ttl`` seconds (a search must not pay
    a statement for it; ``evaluate --calibrate`` in another process is seen within ``ttl``)."""

    def __init__(self, catalog: Catalog, ttl: float = 10.0) -> None:
        self.catalog, self.ttl = catalog, ttl
        self._value: Calibration | None = None
        self._read_at = -math.inf

    def get(self) -> Calibration | None:
        now = time.monotonic()
        if now - self._read_at >= self.ttl:
            from search.relevance.saved import load_calibration

            models = load_calibration(self.catalog)
            self._value = Calibration(models) if models else None
            self._read_at = now
        return self._value

    def clear(self) -> None:
        self._read_at = -math.inf


def judged_pairs(
    service: ProductService, judgements: Judgements, base: Path
) -> list[tuple[float | None, float | None, int]]:
    """(best image cosine, lexical score or None, grade) of every judged product that exists, whatever
    its rank: its stored vectors against the query vector, and the query's full lexical ranking."""
    from search.catalog.query import SearchQuery
    from search.catalog.why_not import UNLIMITED
    from search.relevance.evaluation import examples_of

    catalog = service.catalog
    pairs: list[tuple[float | None, float | None, int]] = []
    for query in judgements.queries:
        mode = "hybrid" if query.text else "vector"
        prepared = service.finder.prepare(SearchQuery(examples_of(query, base), mode=mode))  # type: ignore[arg-type]
        vectors = catalog.embeddings_of(list(query.grades))
        records = catalog.get_many(list(query.grades))
        lexical = dict(catalog.lexical(query.text, None, UNLIMITED).ranking) if query.text else {}
        for product, grade in query.grades.items():
            record = records.get(product)
            if record is None:
                continue  # judged, but not in the catalog (any more)
            cosine = None
            if prepared.vector is not None and vectors.get(product):
                cosine = max(float(np.dot(vector, prepared.vector)) for _, vector in vectors[product])
            pairs.append((cosine, lexical.get(record.id), grade))
    return pairs
