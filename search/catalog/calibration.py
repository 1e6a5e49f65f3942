"""Per-attribute thresholds from a merchandiser's checked answers.

A threshold ``t`` tags a labelled product when its score is at least ``t``; precision at ``t`` is the share
of those tags that match the labels. The fitted threshold is the lowest score at which precision reaches
the target. An attribute that cannot reach it keeps its threshold, and the report says so.

- single-label: one prediction per labelled product, (its best value's score, best value == label);
- multi-label: one prediction per labelled product and value, (that value's score, value is labelled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search.catalog.taxonomy import TagAttribute


@dataclass(frozen=True)
class Label:
    """One checked answer: product ``id`` has ``value`` for ``attribute`` (a row of labels.csv)."""

    id: str
    attribute: str
    value: str


@dataclass(frozen=True)
class Calibration:
    """What calibrating one attribute found. ``threshold``: the fitted one, or the kept one if the
    target was not reached; ``precision`` and ``coverage`` are at ``threshold``."""

    attribute: str
    reached: bool
    threshold: float
    precision: float | None  # None: no labelled product is tagged at the threshold
    coverage: float  # share of all products tagged at the threshold
    labels: int

    def as_dict(self) -> dict[str, object]:
        return {
            "attribute": self.attribute,
            "reached": self.reached,
            "threshold": self.threshold,
            "precision": self.precision,
            "coverage": self.coverage,
            "labels": self.labels,
        }


def predictions(
    attribute: TagAttribute, scores: np.ndarray, truths: Sequence[set[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, correct) of the predictions a threshold keeps or drops: ``scores`` is one row per
    labelled product (its values' scores), ``truths`` its labelled values."""
    names = np.asarray(attribute.value_names, dtype=object)
    if attribute.multi_label:
        correct = np.array([[name in truth for name in names] for truth in truths], dtype=bool)
        return scores.ravel(), correct.ravel()
    best = scores.argmax(axis=1)
    top = scores[np.arange(len(scores)), best]
    return top, np.array([names[b] in truth for b, truth in zip(best, truths, strict=True)], dtype=bool)


def precision_at(scores: np.ndarray, correct: np.ndarray, threshold: float) -> float | None:
    kept = scores >= threshold
    return float(correct[kept].mean()) if kept.any() else None


def fit_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """The lowest score at which precision over the predictions at or above it reaches ``target``."""
    if not len(scores):
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], correct[order].astype(np.float64)
    # Precision at threshold s counts every prediction scoring >= s: take each run of equal scores whole.
    last_of_run = np.r_[ranked[1:] != ranked[:-1], True]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    reaching = np.flatnonzero(last_of_run & (precision >= target))
    return float(ranked[reaching[-1]]) if len(reaching) else None


def coverage_at(best_scores: np.ndarray, threshold: float) -> float:
    """The share of all products with a tag at ``threshold`` (``best_scores``: each product's best)."""
    return float((best_scores >= threshold).mean()) if len(best_scores) else 0.0
