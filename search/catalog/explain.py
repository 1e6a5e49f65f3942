"""Score explanations: how a hit's score was made, in numbers that add up to it.

    vector:  score = cosine of the product's best image
    lexical: score = BM25 (SQLite; ts_rank on PostgreSQL)
    hybrid:  score = w / (60 + lexical rank) + (1 - w) / (60 + vector rank)

plus, for an exact id or SKU match, the boost that lifted it above the best (``exact_match_boost``).
Each list's ``contribution`` is its term of that sum; contributions and the boost add up to the score.
A composed query's parts are shown with their signed share of the query vector and their cosine to the
matched image: q = sum_i c_i n(e_i), so the parts' contributions c_i cos(e_i, image) add up to the
matched image's cosine (within float32 rounding of q).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from search.catalog.compose import normalise
from search.catalog.fusion import RRF_K
from search.catalog.query import Candidate, Example


@dataclass(frozen=True)
class QueryPart:
    """One example of a composed query and its signed coefficient in the unit query vector."""

    side: str  # positive | negative
    kind: str  # text | image | product | vector
    value: str | None  # the text or the product id (an image or a vector is not repeated back)
    weight: float
    coefficient: float
    unit: np.ndarray  # the example's normalised vector (float64)


def query_parts(examples: list[Example], vectors: list[np.ndarray], positives: int) -> list[QueryPart]:
    """The parts of compose(): q = normalise(sum_i s_i (w_i / max w) n(e_i)), s_i = +1 or -1."""
    scale = max(example.weight for example in examples)
    units = [normalise(vector) for vector in vectors]
    signs = [1.0 if i < positives else -1.0 for i in range(len(examples))]
    total = sum(s * (e.weight / scale) * u for s, e, u in zip(signs, examples, units, strict=True))
    norm = float(np.linalg.norm(total))
    return [
        QueryPart(
            "positive" if sign > 0 else "negative",
            _kind(example),
            example.text if example.text is not None else example.product_id,
            example.weight,
            sign * (example.weight / scale) / norm,
            unit,
        )
        for sign, example, unit in zip(signs, examples, units, strict=True)
    ]


def _kind(example: Example) -> str:
    if example.text is not None:
        return "text"
    if example.image is not None:
        return "image"
    return "product" if example.product_id is not None else "vector"


def fusion_terms(candidate: Candidate, mode: str, lexical_weight: float) -> tuple[float | None, float | None]:
    """(vector term, lexical term) of the score: each list's contribution, None where it gave none."""
    if mode == "vector":
        return candidate.vector_score, None
    if mode == "lexical":
        return None, candidate.lexical_score
    vector = None if candidate.vector_rank is None else (1 - lexical_weight) / (RRF_K + candidate.vector_rank)
    lexical = None if candidate.lexical_rank is None else lexical_weight / (RRF_K + candidate.lexical_rank)
    return vector, lexical


def explain(
    candidate: Candidate,
    mode: str,
    lexical_weight: float,
    scorer: str,
    matched_position: int | None = None,
    parts: list[QueryPart] | None = None,
    image_vector: np.ndarray | None = None,
) -> dict[str, Any]:
    """A hit's explanation: each list's rank, score and contribution, the boost, the matched image."""
    vector_term, lexical_term = fusion_terms(candidate, mode, lexical_weight)
    out: dict[str, Any] = {
        "mode": mode,
        "score": candidate.score,
        "vector": None,
        "lexical": None,
        "exact_match_boost": candidate.boost,
        "relevance": candidate.relevance,
    }
    if candidate.vector_score is not None or candidate.vector_rank is not None:
        out["vector"] = {
            "rank": candidate.vector_rank,
            "cosine": candidate.vector_score,
            "contribution": vector_term or 0.0,
        }
    if candidate.lexical_score is not None or candidate.lexical_rank is not None:
        out["lexical"] = {
            "rank": candidate.lexical_rank,
            "score": candidate.lexical_score,
            "scorer": scorer,
            "contribution": lexical_term or 0.0,
        }
    if mode == "hybrid":
        out["fusion"] = {"k": RRF_K, "lexical_weight": lexical_weight, "vector_weight": 1 - lexical_weight}
    out["matched_image"] = (
        None if matched_position is None else {"position": matched_position, "cosine": candidate.vector_score}
    )
    if parts and len(parts) > 1:
        out["composed"] = [_part(part, image_vector) for part in parts]
    return out


def _part(part: QueryPart, image_vector: np.ndarray | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "side": part.side,
        "kind": part.kind,
        "value": part.value,
        "weight": part.weight,
        "coefficient": part.coefficient,
    }
    if image_vector is not None:
        cosine = float(np.dot(part.unit, normalise(image_vector)))
        view["cosine"] = cosine
        view["contribution"] = part.coefficient * cosine
    return view


def adds_up(explanation: dict[str, Any]) -> float:
    """The sum an explanation states: each list's contribution and the boost (what must equal the score)."""
    terms = [explanation[side]["contribution"] for side in ("lexical", "vector") if explanation[side]]
    return sum(terms) + explanation["exact_match_boost"]
