"""Cut-offs on a search's candidates: the fused or single-list ``min_score``, the cosine
``min_vector_score`` and the full-text ``min_lexical_score``.

``min_relevance`` is on the calibrated probability that a hit is relevant, where the catalog has been
calibrated. Raw reciprocal-rank scores cannot be thresholded (a hybrid score is about 0.015 whatever the query);
each list's own score can. Every cut-off given must hold (AND): a product missing from a list has no
score there and fails that list's cut-off. An exact id or SKU match is added after the cut (``boost``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.errors import BadInput

if TYPE_CHECKING:
    from search.catalog.query import Candidate


@dataclass(frozen=True)
class Cutoffs:
    min_score: float | None = None
    min_vector_score: float | None = None  # cosine of the product's best image
    min_lexical_score: float | None = None  # BM25 (SQLite) or ts_rank (PostgreSQL)
    min_relevance: float | None = None  # the calibrated probability (search/relevance/calibration.py)

    def __bool__(self) -> bool:
        values = (self.min_score, self.min_vector_score, self.min_lexical_score, self.min_relevance)
        return any(value is not None for value in values)

    def check(self, mode: str | None) -> None:
        """Each cut-off a finite number, and (once the mode is known) one that applies to it."""
        for name in ("min_score", "min_vector_score", "min_lexical_score", "min_relevance"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise BadInput(f"{name} must be a finite number")
        if self.min_vector_score is not None and mode == "lexical":
            raise BadInput("min_vector_score applies to the vector and hybrid modes, not lexical")
        if self.min_lexical_score is not None and mode == "vector":
            raise BadInput("min_lexical_score applies to the lexical and hybrid modes, not vector")

    def vector_floor(self, mode: str) -> float | None:
        """The cosine below which no vector hit can pass: the index stops there."""
        floors = [self.min_vector_score]
        if mode == "vector":
            floors.append(self.min_score)  # the score is the cosine
        given = [f for f in floors if f is not None]
        return max(given) if given else None

    def passes(self, candidate: Candidate) -> bool:
        return (
            _at_least(candidate.score, self.min_score)
            and _at_least(candidate.vector_score, self.min_vector_score)
            and _at_least(candidate.lexical_score, self.min_lexical_score)
            and _at_least(candidate.relevance, self.min_relevance)
        )

    def reason(self, candidate: Candidate) -> dict[str, float] | None:
        """The first cut-off ``candidate`` fails, as {"min_...": threshold}; None when it passes."""
        for name, value in (
            ("min_score", candidate.score),
            ("min_vector_score", candidate.vector_score),
            ("min_lexical_score", candidate.lexical_score),
            ("min_relevance", candidate.relevance),
        ):
            threshold = getattr(self, name)
            if not _at_least(value, threshold):
                return {name: threshold}
        return None

    def apply(self, ranked: list[Candidate]) -> list[Candidate]:
        return [c for c in ranked if self.passes(c)] if self else ranked


def _at_least(value: float | None, threshold: float | None) -> bool:
    return threshold is None or (value is not None and value >= threshold)
