"""The values of a catalog search: the query (single or composed), its limits and their one check, the
candidates its steps pass along, and the answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from search.catalog.cutoffs import Cutoffs
from search.catalog.filters import Filters
from search.catalog.records import ImageRecord, ProductRecord
from search.catalog.sorting import SortKey
from search.errors import BadInput, TooLarge

Mode = Literal["vector", "lexical", "hybrid"]
MODES = ("vector", "lexical", "hybrid")


@dataclass(frozen=True)
class Example:
    """One positive or negative example of a composed query: exactly one of text / image / product."""

    text: str | None = None
    image: str | None = None
    product_id: str | None = None
    vector: tuple[float, ...] | None = None
    weight: float = 1.0


@dataclass
class SearchQuery:
    positive: list[Example]
    negative: list[Example] = field(default_factory=list)
    mode: Mode | None = None  # None: the configured default when there is a text, else vector
    filters: Filters = field(default_factory=Filters)
    facets: list[str] = field(default_factory=list)
    k: int = 10
    offset: int = 0
    min_score: float | None = None
    lexical_weight: float | None = None
    collapse: str | None = None  # "duplicates": one product per duplicate group
    min_vector_score: float | None = None
    min_lexical_score: float | None = None
    sort: list[SortKey] = field(default_factory=list)  # orders the set that passed the cut-offs
    explain: bool = False  # each hit says how its score was made (explain.py)
    min_relevance: float | None = None

    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs(self.min_score, self.min_vector_score, self.min_lexical_score, self.min_relevance)

    @property
    def examples(self) -> list[Example]:
        return [*self.positive, *self.negative]

    @property
    def texts(self) -> list[str]:
        """The texts of the positive examples: what the lexical ranking searches for."""
        return [e.text for e in self.positive if e.text is not None]


@dataclass(frozen=True)
class SearchLimits:
    """What one search or listing may ask for (VITRINE_SEARCH_MAX_K, VITRINE_MAX_*): checked here, once."""

    max_k: int = 1000
    max_texts: int = 256  # VITRINE_MAX_TEXTS_PER_REQUEST
    max_images: int = 32  # VITRINE_MAX_IMAGES_PER_REQUEST
    max_product_examples: int = 32  # VITRINE_MAX_PRODUCT_EXAMPLES: product and vector examples
    max_filter_keys: int = 100  # VITRINE_MAX_ATTRIBUTES
    max_facets: int = 20
    max_list_limit: int = 1000
    # A listing's deepest offset: a bound that every database's OFFSET takes (64-bit at most).
    max_list_offset: int = 1_000_000_000
    # The most products a sort orders when cut-offs choose the set (VITRINE_SEARCH_MAX_SORTED).
    max_sorted: int = 10_000

    def check(self, query: SearchQuery) -> None:
        """Every range of a search, checked before any work starts."""
        if not _is_int(query.k) or not 1 <= query.k <= self.max_k:
            raise BadInput(f"k must be an integer from 1 to {self.max_k}")
        if not _is_int(query.offset) or query.offset < 0:
            raise BadInput("offset must be an integer of 0 or more")
        if query.offset + query.k > 10 * self.max_k:
            raise BadInput(f"offset + k may be at most {10 * self.max_k}; narrow the query with filters")
        if query.mode is not None and query.mode not in MODES:
            raise BadInput(f"mode must be one of {', '.join(MODES)}")
        query.cutoffs.check(query.mode)
        weight = query.lexical_weight
        if weight is not None and not (isinstance(weight, int | float) and 0 <= weight <= 1):
            raise BadInput("lexical_weight must be a number from 0 to 1")
        self.check_facets(query.facets)
        if query.collapse not in (None, "duplicates"):
            raise BadInput('collapse must be "duplicates"')
        if not query.positive:
            raise BadInput("a composed query needs at least one positive example")
        examples = query.examples
        for example in examples:
            if not (math.isfinite(example.weight) and example.weight > 0):
                raise BadInput("every example's weight must be a finite number above 0")
            if example.text is not None and not example.text.strip():
                raise BadInput("text is empty; give words to search for")
        self._check_count(
            "texts",
            sum(e.text is not None for e in examples),
            self.max_texts,
            "VITRINE_MAX_TEXTS_PER_REQUEST",
        )
        self._check_count(
            "images",
            sum(e.image is not None for e in examples),
            self.max_images,
            "VITRINE_MAX_IMAGES_PER_REQUEST",
        )
        self._check_count(
            "product and vector examples",
            sum(e.product_id is not None or e.vector is not None for e in examples),
            self.max_product_examples,
            "VITRINE_MAX_PRODUCT_EXAMPLES",
        )

    def check_facets(self, facets: Sequence[str]) -> None:
        if len(facets) > self.max_facets:
            raise BadInput(f"at most {self.max_facets} facets per request, not {len(facets)}")
        for name in facets:
            if not name or len(name) > 256:
                raise BadInput(f"facet names must be 1 to 256 characters: {name[:80]!r}")

    def check_page(self, offset: int, limit: int) -> None:
        """A listing's page."""
        if not _is_int(limit) or not 1 <= limit <= self.max_list_limit:
            raise BadInput(f"limit must be an integer from 1 to {self.max_list_limit}")
        if not _is_int(offset) or not 0 <= offset <= self.max_list_offset:
            raise BadInput(f"offset must be an integer from 0 to {self.max_list_offset}")

    @staticmethod
    def _check_count(what: str, count: int, limit: int, setting: str) -> None:
        if count > limit:
            raise TooLarge(f"the query has {count} {what}; the limit is {limit} ({setting})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Candidate:
    """A product on its way through a search: its ranking score and what each list said of it."""

    product: int  # product row id
    score: float
    image: int | None = None  # its best image among the vector hits (a vector id)
    vector_score: float | None = None  # that image's cosine to the query
    lexical_score: float | None = None  # BM25 (SQLite) or ts_rank (PostgreSQL)
    vector_rank: int | None = None  # 1-based place in each list, as fusion counts it
    lexical_rank: int | None = None
    boost: float = 0.0  # what the exact-match boost added to the score
    relevance: float | None = None  # the calibrated probability of relevance, where calibrated


def best_per_product(hits: Iterable[tuple[int, int, float]]) -> list[Candidate]:
    """Image hits (image id, product id, cosine), best first, as product candidates: each product
    scored by its best image, and named by it (FAISS's and pgvector's retrieval alike)."""
    best: dict[int, Candidate] = {}
    for image, product, score in hits:
        if product not in best:
            best[product] = Candidate(product, score, image, score, vector_rank=len(best) + 1)
    return list(best.values())


@dataclass
class ProductHit:
    record: ProductRecord
    score: float
    matched_image: ImageRecord | None = None
    vector_score: float | None = None
    lexical_score: float | None = None
    duplicates: list[str] | None = None  # collapsed: the other products of its duplicate group
    explain: dict[str, Any] | None = None
    relevance: float | None = None


@dataclass
class SearchAnswer:
    hits: list[ProductHit]
    mode: str
    facets: dict[str, dict[str, int]] | None
    took_ms: float
    encode_ms: float
    total: int | None = None  # with a sort: how many products passed the cut-offs (the sorted set)


@dataclass
class ListAnswer:
    records: list[ProductRecord]
    total: int
    facets: dict[str, dict[str, int]] | None
