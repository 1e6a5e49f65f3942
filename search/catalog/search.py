"""Catalog search as named steps: check -> query vector -> candidates (vector, lexical; the filter inside
each) -> fuse -> cut -> boost -> collapse (asked for) -> page -> hydrate -> facets.

Each step takes and returns plain values (``Candidate`` lists), and every SQL statement goes through the
store. A hybrid search with a filter and facets costs five statements: the index's revision, the
lexical ranking with the exact-id matches, the vector hits' owners checked against the filter, the
page's products with their images, and the facet counts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import ColumnElement

from search.catalog.compose import compose, product_vector
from search.catalog.fusion import reciprocal_rank_fusion
from search.catalog.lexical import LexicalResult
from search.catalog.query import Candidate, Example, Mode, ProductHit, SearchAnswer, SearchLimits, SearchQuery
from search.catalog.retrieval import IndexRetrieval
from search.catalog.store import Catalog
from search.errors import BadInput, NotFound
from search.images.loader import ImageLoader
from search.index.query_log import QueryLog
from search.model.vectors import normalise_vector

if TYPE_CHECKING:
    from search.catalog.duplicate_groups import DuplicateService
    from search.model.encoder import Encoder

# How many candidates each side hands to fusion (at least offset + k).
FUSION_WINDOW = 100
# A collapsing search widens its window (x4) while groups leave the page short, up to this many.
COLLAPSE_MAX_WINDOW = 10_000


class CatalogSearch:
    def __init__(
        self,
        catalog: Catalog,
        vectors: IndexRetrieval,
        *,
        limits: SearchLimits,
        query_log: QueryLog | None = None,
        encoder: Encoder | None = None,
        images: ImageLoader | None = None,
        default_mode: Mode = "hybrid",
        lexical_weight: float = 0.5,
        duplicates: DuplicateService | None = None,
    ) -> None:
        self.duplicates = duplicates
        self.catalog = catalog
        self.vectors = vectors
        self.limits = limits
        self.query_log = query_log
        self.encoder = encoder
        self.images = images
        self.default_mode = default_mode
        self.lexical_weight = lexical_weight

    def search(self, query: SearchQuery) -> SearchAnswer:
        started = time.perf_counter()
        self.limits.check(query)
        mode = self.mode_of(query)
        vector, excluded = (
            (None, []) if mode == "lexical" else self.query_vector(query.positive, query.negative)
        )
        encoded = time.perf_counter()
        if vector is not None:
            self.vectors.catch_up()
        if query.collapse:
            self._duplicates().catch_up()  # groups at the catalog's revision, before the reads pin one
        with self.catalog.reading():  # the steps' statements share one connection and transaction
            hits, facets = self.ranked_page(query, mode, vector, excluded)
        return SearchAnswer(
            hits,
            mode,
            facets,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
            encode_ms=round((encoded - started) * 1000, 3),
        )

    def ranked_page(
        self, query: SearchQuery, mode: Mode, vector: np.ndarray | None, excluded: list[int]
    ) -> tuple[list[ProductHit], dict[str, dict[str, int]] | None]:
        """candidates -> fuse -> cut -> boost -> collapse (asked for) -> page -> hydrate, and the facets."""
        want = query.offset + query.k
        where = query.filters.clause() if query.filters else None
        window = want if mode == "vector" else max(FUSION_WINDOW, want)
        while True:
            # The vector list is cut by min_score in the index only when it is the ranking itself.
            vector_list = (
                []
                if vector is None
                else self.vectors.nearest(
                    vector, window, query.filters, excluded, query.min_score if mode == "vector" else None
                )
            )
            lexical = self.lexical_candidates(query, mode, where, window)
            ranked = self.fuse(mode, vector_list, lexical, query.lexical_weight)
            if query.min_score is not None and mode != "vector":
                ranked = [c for c in ranked if c.score >= query.min_score]
            ranked = self.boost(ranked, lexical.exact)
            if not query.collapse:
                return self.hydrate(ranked[query.offset : want]), self.facets(where, query.facets)
            collapsed, groups = self.collapse(ranked)
            more = len(vector_list) >= window or len(lexical.ranking) >= window
            if len(collapsed) >= want or not more or window >= COLLAPSE_MAX_WINDOW:
                break
            window *= 4  # groups took places in the window: widen it until the page is full
        page = collapsed[query.offset : want]
        hits = self.hydrate(page)
        self.name_duplicates(hits, groups)
        return hits, self.facets(where, query.facets, collapse=True)

    # Steps -------------------------------------------------------------------------------------------

    def mode_of(self, query: SearchQuery) -> Mode:
        mode: Mode = query.mode or (self.default_mode if query.texts else "vector")
        if mode != "vector" and not query.texts:
            raise BadInput(f"mode {mode!r} needs a text query")
        return mode

    def lexical_candidates(
        self, query: SearchQuery, mode: Mode, where: ColumnElement[bool] | None, window: int
    ) -> LexicalResult:
        """The lexical ranking (lexical and hybrid modes) and, for a single text, its exact-id matches."""
        texts = query.texts
        exact = len(texts) == 1 and not query.negative
        if mode == "vector" and not exact:
            return LexicalResult([], [])
        limit = 0 if mode == "vector" else window
        return self.catalog.lexical(" ".join(texts), where, limit, exact=exact)

    def fuse(
        self, mode: Mode, vector: list[Candidate], lexical: LexicalResult, lexical_weight: float | None
    ) -> list[Candidate]:
        """One ranking: the vector list, the lexical list, or their weighted reciprocal rank fusion."""
        if mode == "vector":
            return vector
        if mode == "lexical":
            return [Candidate(pid, score, lexical_score=score) for pid, score in lexical.ranking]
        weight = self.lexical_weight if lexical_weight is None else lexical_weight
        fused = reciprocal_rank_fusion(
            [pid for pid, _ in lexical.ranking], [c.product for c in vector], weight
        )
        by_vector = {c.product: c for c in vector}
        by_text = dict(lexical.ranking)
        out = []
        for pid, score in fused:
            seen = by_vector.get(pid)
            out.append(
                Candidate(
                    pid,
                    score,
                    seen.image if seen else None,
                    seen.vector_score if seen else None,
                    by_text.get(pid),
                )
            )
        return out

    @staticmethod
    def boost(ranked: list[Candidate], exact: list[int]) -> list[Candidate]:
        """An exact id or SKU match comes first, whatever the rankings said: its score is lifted to just
        above the best."""
        if not exact:
            return ranked
        top = ranked[0].score if ranked else 1.0
        by_product = {c.product: c for c in ranked}
        first = [by_product.get(pid) or Candidate(pid, top) for pid in exact]
        for i, candidate in enumerate(first):
            candidate.score = top + 1e-6 * (len(first) - i)
        exact_set = set(exact)
        return first + [c for c in ranked if c.product not in exact_set]

    def collapse(self, ranked: list[Candidate]) -> tuple[list[Candidate], dict[int, int]]:
        """One product per duplicate group, its best-ranked (the ranking is best first); and the group of
        each kept product that is in one."""
        group_of = self._duplicates().groups_of([c.product for c in ranked])
        seen: set[int] = set()
        kept, groups = [], {}
        for candidate in ranked:
            group = group_of.get(candidate.product)
            if group is not None:
                if group in seen:
                    continue
                seen.add(group)
                groups[candidate.product] = group
            kept.append(candidate)
        return kept, groups

    def name_duplicates(self, hits: list[ProductHit], groups: dict[int, int]) -> None:
        """Each collapsed hit names the other products of its group (external ids, in id order)."""
        members = self._duplicates().group_members(
            list({groups[h.record.id] for h in hits if h.record.id in groups})
        )
        others = [
            p for hit in hits if hit.record.id in groups for p in members.get(groups[hit.record.id], [])
        ]
        names = {pid: record.external_id for pid, record in self.catalog.get_by_ids(others).items()}
        for hit in hits:
            group = groups.get(hit.record.id)
            mates = members.get(group, []) if group is not None else []
            hit.duplicates = sorted(names[p] for p in mates if p != hit.record.id and p in names)

    def hydrate(self, page: list[Candidate]) -> list[ProductHit]:
        """The page's products with their images (one statement); a product removed since it was ranked
        is left out."""
        records = self.catalog.get_by_ids([c.product for c in page])
        hits = []
        for candidate in page:
            record = records.get(candidate.product)
            if record is None:
                continue
            matched = (
                next((i for i in record.images if i.id == candidate.image), None) if candidate.image else None
            )
            hits.append(
                ProductHit(
                    record, float(candidate.score), matched, candidate.vector_score, candidate.lexical_score
                )
            )
        return hits

    def facets(
        self, where: ColumnElement[bool] | None, names: list[str], *, collapse: bool = False
    ) -> dict[str, dict[str, int]] | None:
        """Counts of products matching the filter; collapsed, a duplicate group counts once."""
        if not names:
            return None
        return (
            self.catalog.facet_counts(where, names, collapse=collapse)
            if collapse
            else self.catalog.facet_counts(where, names)
        )

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
                self._log_query(vector)  # text-like queries tune the approximate index
        if pictures:
            if self.images is None:
                raise BadInput("search by image needs the image loader")
            names = ["image" if len(examples) == 1 else f"{_side(i, positive)}.image" for i, _ in pictures]
            loaded = self.images.load_many([value for _, value in pictures], names)
            for (i, _), vector in zip(pictures, self._encoder().embed_images(loaded), strict=True):
                vectors[i] = vector
        products = [e.product_id for e in examples if e.product_id is not None]
        found = self.catalog.embeddings_of(products) if products else {}
        for i, example in enumerate(examples):
            if example.product_id is not None:
                images = found.get(example.product_id)
                if images is None:
                    raise NotFound(f"no product with id {example.product_id!r}")
                if not images:
                    raise BadInput(f"product {example.product_id!r} has no images")
                excluded += [image_id for image_id, _ in images]
                vectors[i] = product_vector([vector for _, vector in images])
            elif example.vector is not None:
                vectors[i] = self._caller_vector(example.vector)
                self._log_query(vectors[i])
        pairs = [(vector, example.weight) for vector, example in zip(vectors, examples, strict=True)]
        if len(examples) == 1:
            return np.asarray(pairs[0][0], dtype=np.float32), excluded  # unchanged single-input form
        return compose(pairs[: len(positive)], pairs[len(positive) :]), excluded

    def _caller_vector(self, values: tuple[float, ...]) -> np.ndarray:
        """A caller's own embedding (computed elsewhere in this model's space), normalised here."""
        if not self.vectors.dim:
            raise BadInput("the catalog is empty: its embedding dimension is not known yet")
        try:
            return normalise_vector(values, self.vectors.dim)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _log_query(self, vector: np.ndarray) -> None:
        if self.query_log is not None:
            self.query_log.add(vector)

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise BadInput("this operation needs the model, which is not loaded here")
        return self.encoder

    def _duplicates(self) -> DuplicateService:
        if self.duplicates is None:
            raise BadInput("collapsing duplicates needs the catalog's duplicate groups, not wired here")
        return self.duplicates


def _side(index: int, positive: list[Example]) -> str:
    return f"positive[{index}]" if index < len(positive) else f"negative[{index - len(positive)}]"
