"""Fitting the duplicate threshold to a labelled set of product pairs: the lowest threshold whose
precision reaches the target (so recall is as high as that precision allows)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search.errors import BadInput


@dataclass(frozen=True)
class Fit:
    threshold: float
    precision: float
    recall: float
    pairs: int
    positives: int
    target_precision: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "pairs": self.pairs,
            "positives": self.positives,
            "target_precision": self.target_precision,
        }


def fit_threshold(scores: Sequence[float], labels: Sequence[bool], target_precision: float) -> Fit:
    """The lowest cut t (one of the duplicates' scores) with precision(score >= t) >= the target."""
    if not 0 < target_precision <= 1:
        raise BadInput("precision must be a number above 0 and at most 1")
    if len(scores) != len(labels) or not scores:
        raise BadInput("calibration needs labelled pairs")
    positives = sum(bool(label) for label in labels)
    if positives == 0:
        raise BadInput("the labelled pairs hold no duplicate (is_duplicate true): nothing to fit")
    ranked = sorted(zip(scores, labels, strict=True), key=lambda item: -item[0])
    best: Fit | None = None
    true_positives = 0
    for i, (score, label) in enumerate(ranked):
        true_positives += bool(label)
        if i + 1 < len(ranked) and ranked[i + 1][0] == score:
            continue  # a cut takes every pair of the same score
        precision = true_positives / (i + 1)
        if label and precision >= target_precision:
            best = Fit(
                math.floor(float(score) * 1e6) / 1e6,  # rounded down: the pair scoring it stays in
                precision,
                true_positives / positives,
                len(scores),
                positives,
                target_precision,
            )
    if best is None:
        raise BadInput(
            f"no threshold reaches precision {target_precision} on these pairs: the labelled duplicates "
            "score below distinct pairs"
        )
    return best
