"""Search composition: a query (single or composed) -> query vector and/or lexical ranking -> products.

The vector index holds one vector per image and knows nothing of products. Here image hits become
product hits (a product scores as its best image, and names it), the index is asked again with a larger
k when too few distinct products came back, filters become an allow-list of image ids, and the lexical
and vector rankings are fused. Facets count over the products that pass the filters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from search.catalog.compose import compose, product_vector
from search.catalog.filters import Filters
from search.catalog.fusion import reciprocal_rank_fusion
from search.catalog.lexical import lexical_ranking
from search.catalog.records import ImageRecord, ProductRecord
from search.catalog.store import Catalog
from search.catalog.sync import IndexSync
from search.errors import BadInput, NotFound
from search.images import ImageLoader
from search.index import SearchHit, VectorIndex
from search.vectors import normalise_vector

if TYPE_CHECKING:
    from search.encoder import Encoder

Mode = Literal["vector", "lexical", "hybrid"]
MODES = ("vector", "lexical", "hybrid")
# How many candidates each side hands to fusion (at least offset + k).
FUSION_WINDOW = 100
# A filter is first checked on the nearest 1/share times the hits wanted, for these shares in turn:
# filters allowing at least 1/16 of the catalog (near the query) never list their ids.
BROAD_FILTER_SHARES = (1 / 4, 1 / 16)
BROAD_FILTER_MAX_HITS = 2_000  # each is re-scored and checked: past this, listing the ids is as cheap
MAX_FACETS = 20


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


@dataclass
class ProductHit:
    record: ProductRecord
    score: float
    matched_image: ImageRecord | None = None
    vector_score: float | None = None
    lexical_score: float | None = None


@dataclass
class SearchAnswer:
    hits: list[ProductHit]
    mode: str
    facets: dict[str, dict[str, int]] | None
    took_ms: float
    encode_ms: float


class CatalogSearch:
    def __init__(
        self,
        catalog: Catalog,
        sync: IndexSync,
        *,
        encoder: Encoder | None = None,
        images: ImageLoader | None = None,
        max_k: int = 1000,
        default_mode: Mode = "hybrid",
        lexical_weight: float = 0.5,
    ) -> None:
        self.catalog = catalog
        self.sync = sync
        self.encoder = encoder
        self.images = images
        self.max_k = max_k
        self.default_mode = default_mode
        self.lexical_weight = lexical_weight

    def search(self, query: SearchQuery) -> SearchAnswer:
        started = time.perf_counter()
        self._check(query)
        texts = [e.text for e in query.positive if e.text is not None]
        mode: Mode = query.mode or (self.default_mode if texts else "vector")
        if mode != "vector" and not texts:
            raise BadInput(f"mode {mode!r} needs a text query")
        where = query.filters.clause()
        want = query.offset + query.k
        vector, excluded = (None, [])
        if mode != "lexical":
            vector, excluded = self.query_vector(query.positive, query.negative)
        encoded = time.perf_counter()
        if mode == "vector":
            ranked = self._vector_products(vector, want, query.filters, excluded, query.min_score)
            scored = [(pid, score, image, score, None) for pid, score, image in ranked]
        else:
            window = max(FUSION_WINDOW, want)
            lexical = lexical_ranking(
                self.catalog.engine, " ".join(texts), where if query.filters else None, window
            )
            if mode == "lexical":
                scored = [(pid, score, None, None, score) for pid, score in lexical]
            else:
                ranked = self._vector_products(vector, window, query.filters, excluded, None)
                weight = self.lexical_weight if query.lexical_weight is None else query.lexical_weight
                fused = reciprocal_rank_fusion(
                    [pid for pid, _ in lexical], [pid for pid, *_ in ranked], weight
                )
                by_vector = {pid: (score, image) for pid, score, image in ranked}
                by_text = dict(lexical)
                scored = [
                    (
                        pid,
                        score,
                        by_vector.get(pid, (None, None))[1],
                        by_vector.get(pid, (None,))[0],
                        by_text.get(pid),
                    )
                    for pid, score in fused
                ]
            if query.min_score is not None:
                scored = [item for item in scored if item[1] >= query.min_score]
        if len(texts) == 1 and not query.negative:
            scored = self._exact_first(texts[0], where, scored)
        page = scored[query.offset : want]
        records = self.catalog.get_by_ids([item[0] for item in page])
        hits = []
        for pid, score, image_id, vector_score, lexical_score in page:
            record = records.get(pid)
            if record is None:  # removed between the ranking and this read
                continue
            matched = next((i for i in record.images if i.id == image_id), None) if image_id else None
            hits.append(ProductHit(record, float(score), matched, vector_score, lexical_score))
        facets = (
            self.catalog.facet_counts(where if query.filters else None, query.facets)
            if query.facets
            else None
        )
        return SearchAnswer(
            hits,
            mode,
            facets,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
            encode_ms=round((encoded - started) * 1000, 3),
        )

    def _check(self, query: SearchQuery) -> None:
        if isinstance(query.k, bool) or not isinstance(query.k, int) or not 1 <= query.k <= self.max_k:
            raise BadInput(f"k must be an integer from 1 to {self.max_k}")
        if isinstance(query.offset, bool) or not isinstance(query.offset, int) or query.offset < 0:
            raise BadInput("offset must be an integer of 0 or more")
        if query.offset + query.k > 10 * self.max_k:
            raise BadInput(f"offset + k may be at most {10 * self.max_k}; narrow the query with filters")
        if query.mode is not None and query.mode not in MODES:
            raise BadInput(f"mode must be one of {', '.join(MODES)}")
        if query.min_score is not None and not math.isfinite(query.min_score):
            raise BadInput("min_score must be a finite number")
        if len(query.facets) > MAX_FACETS:
            raise BadInput(f"at most {MAX_FACETS} facets per request")
        weight = query.lexical_weight
        if weight is not None and not (isinstance(weight, int | float) and 0 <= weight <= 1):
            raise BadInput("lexical_weight must be a number from 0 to 1")
        for example in [*query.positive, *query.negative]:
            if not (math.isfinite(example.weight) and example.weight > 0):
                raise BadInput("every example's weight must be a finite number above 0")

    # Query vectors ---------------------------------------------------------------------------------

    def query_vector(self, positive: list[Example], negative: list[Example]) -> tuple[np.ndarray, list[int]]:
        """The composed query vector, and the image ids of example products (never their own results)."""
        examples = [*positive, *negative]
        vectors: list[np.ndarray | None] = [None] * len(examples)
        excluded: list[int] = []
        texts = [(i, e.text) for i, e in enumerate(examples) if e.text is not None]
        pictures = [(i, e.image) for i, e in enumerate(examples) if e.image is not None]
        if texts:
            for (i, _), vector in zip(texts, self._encoder().embed_texts([t for _, t in texts]), strict=True):
                vectors[i] = vector
                self.sync.query_log.add(vector)  # text-like queries tune the approximate index
        if pictures:
            if self.images is None:
                raise BadInput("search by image needs the image loader")
            names = ["image" if len(examples) == 1 else f"{_side(i, positive)}.image" for i, _ in pictures]
            loaded = self.images.load_many([value for _, value in pictures], names)
            for (i, _), vector in zip(pictures, self._encoder().embed_images(loaded), strict=True):
                vectors[i] = vector
        for i, example in enumerate(examples):
            if example.product_id is not None:
                found = self.catalog.embeddings(example.product_id)
                if found is None:
                    raise NotFound(f"no product with id {example.product_id!r}")
                if not found:
                    raise BadInput(f"product {example.product_id!r} has no images")
                excluded += [image_id for image_id, _ in found]
                vectors[i] = product_vector([vector for _, vector in found])
            elif example.vector is not None:
                vectors[i] = self._caller_vector(example.vector)
                self.sync.query_log.add(vectors[i])
        pairs = [(vector, example.weight) for vector, example in zip(vectors, examples, strict=True)]
        if len(examples) == 1:
            return np.asarray(pairs[0][0], dtype=np.float32), excluded  # unchanged single-input form
        return compose(pairs[: len(positive)], pairs[len(positive) :]), excluded

    # Rankings --------------------------------------------------------------------------------------

    def _vector_products(
        self,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[tuple[int, float, int]]:
        """(product row id, best image score, best image id), best first, at most ``want``.

        Several images per product mean k image hits can be fewer than k products: ask again for more
        image hits until ``want`` distinct products are found or the index has no more."""
        index = self.sync.refresh()
        if vector.shape[-1] != index.dim and len(index):
            raise BadInput(f"the query vector has {vector.shape[-1]} dimensions; the index has {index.dim}")
        allowed = None
        if filters:
            broad = self._broad_filter_products(index, vector, want, filters, excluded, min_score)
            if broad is not None:
                return broad
            allowed = self.catalog.image_ids(filters.clause())  # a selective filter: few ids
        fetch = want * 2
        while True:
            hits = index.search(
                vector, fetch, allowed_ids=allowed, excluded_ids=excluded, min_score=min_score
            )
            best = self._best_per_product(hits)
            exhausted = len(hits) < fetch or fetch >= len(index)
            if len(best) >= want or exhausted:
                return best[:want]
            fetch *= 4

    def _broad_filter_products(
        self,
        index: VectorIndex,
        vector: np.ndarray,
        want: int,
        filters: Filters,
        excluded: list[int],
        min_score: float | None,
    ) -> list[tuple[int, float, int]] | None:
        """A broad filter checked on the nearest hits instead of listed in full; None if it is too
        selective for that (the caller lists the few ids it allows).

        Listing the ids a filter allows costs in proportion to them (a second for 30% of a million).
        Here the index is asked for ``1/share`` times the hits, searching as widely as for a filter of
        that share, and the filter is checked in SQL on just those hits: when at least ``share`` of them
        pass, the hits kept are as complete as with the list. Only allowed products are returned.
        """
        fetch = want * 2
        checked = filters.clause(per_row=True)
        for share in BROAD_FILTER_SHARES:
            wide = math.ceil(fetch / share)
            if wide >= len(index) or wide > BROAD_FILTER_MAX_HITS:
                return None  # a small catalog or a deep page: the allow-list it is
            hits = index.search(vector, wide, excluded_ids=excluded, min_score=min_score, share=share)
            passing = self.catalog.images_passing([hit.id for hit in hits], checked)
            kept = [hit for hit in hits if hit.id in passing]
            if len(kept) >= fetch:
                best = self._best_per_product(kept)
                if len(best) >= want:
                    return best[:want]
            if len(kept) < share * wide / 8:
                return None  # far more selective than the next share: listing is cheaper than trying
        return None

    def _best_per_product(self, hits: list[SearchHit]) -> list[tuple[int, float, int]]:
        """(product, score, image) of each product's best image among ``hits``, best first."""
        owners = self.catalog.image_owners([hit.id for hit in hits])
        best: dict[int, tuple[float, int]] = {}
        for hit in hits:
            product = owners.get(hit.id)
            if product is not None and product not in best:
                best[product] = (hit.score, hit.id)
        return [(pid, score, image) for pid, (score, image) in best.items()]

    def _exact_first(self, text: str, where: Any, scored: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """An exact id or SKU match comes first, whatever the rankings said."""
        exact = self.catalog.exact_matches(text, where)
        if not exact:
            return scored
        top = scored[0][1] if scored else 1.0
        first = [item for pid in exact for item in scored if item[0] == pid]
        first += [(pid, top, None, None, None) for pid in exact if pid not in {item[0] for item in first}]
        # The exact match outranks the rest: its score is lifted to just above the best.
        first = [(pid, top + 1e-6 * (len(first) - i), *rest) for i, (pid, _, *rest) in enumerate(first)]
        return first + [item for item in scored if item[0] not in set(exact)]

    def _caller_vector(self, values: tuple[float, ...]) -> np.ndarray:
        """A caller's own embedding (computed elsewhere in this model's space), normalised here."""
        if not self.sync.dim:
            raise BadInput("the catalog is empty: its embedding dimension is not known yet")
        try:
            return normalise_vector(values, self.sync.dim)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise BadInput("this operation needs the model, which is not loaded here")
        return self.encoder


def _side(index: int, positive: list[Example]) -> str:
    return f"positive[{index}]" if index < len(positive) else f"negative[{index - len(positive)}]"
