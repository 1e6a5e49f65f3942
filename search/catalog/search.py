"""Catalog search as named steps: check -> query vector -> candidates (vector, lexical; the filter inside
each) -> fuse -> cut -> boost -> collapse (asked for) -> (sort) -> page -> hydrate -> facets.

The cut keeps the candidates passing every cut-off (cutoffs.py). A collapse keeps one product per
duplicate group, its best-ranked. A sort (sorting.py) orders the set that passed -- every product
above the cut-offs, or without one the top k by relevance -- and the page and the facets are taken
from that set.

Each step takes and returns plain values (``Candidate`` lists), and every SQL statement goes through the
store. A hybrid search with a filter and facets costs five statements: the index's revision, the
lexical ranking with the exact-id matches, the vector hits' owners checked against the filter, the
page's products with their images, and the facet counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import ColumnElement

from search.catalog.compose import compose, product_vector
from search.catalog.explain import QueryPart, explain, query_parts
from search.catalog.fusion import reciprocal_rank_fusion
from search.catalog.lexical import LexicalResult
from search.catalog.query import Candidate, Example, Mode, ProductHit, SearchAnswer, SearchLimits, SearchQuery
from search.catalog.records import ImageRecord, bytes_to_vector
from search.catalog.retrieval import VectorRetrieval
from search.catalog.schema import Product
from search.catalog.sorting import SortKey, sort_ids
from search.catalog.store import Catalog
from search.errors import BadInput, NotFound
from search.images.loader import ImageLoader
from search.index.query_log import QueryLog
from search.model.vectors import normalise_vector
from search.relevance.calibration import Calibration, CalibrationCache

if TYPE_CHECKING:
    from search.catalog.duplicate_groups import DuplicateService
    from search.model.encoder import Encoder

# How many candidates each side hands to fusion (at least offset + k).
FUSION_WINDOW = 100
# A vector cut-off's first request (then x 8 while every product asked for passed it).
FIRST_STEP = 256


@dataclass
class Prepared:
    """A checked query ready to rank: its mode, query vector, excluded image ids and composed parts."""

    mode: Mode
    vector: np.ndarray | None
    excluded: list[int]
    parts: list[QueryPart]
    calibration: Calibration | None = None


@dataclass
class Ranking:
    """Every list a search ranked: for its page, and for explaining where a product went (why_not.py)."""

    vector: list[Candidate]
    lexical: LexicalResult
    fused: list[Candidate]  # before the cut-offs
    ranked: list[Candidate]  # cut, boosted and sorted: the page is taken from it
    window: int  # how many candidates each list could hand over
    where: ColumnElement[bool] | None
    groups: dict[int, int] = field(default_factory=dict)  # collapsed: kept product -> its group


# A collapsing search widens its window (x4) while groups leave the page short, up to this many.
COLLAPSE_MAX_WINDOW = 10_000


class CatalogSearch:
    def __init__(
        self,
        catalog: Catalog,
        vectors: VectorRetrieval,
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
        self.calibration = CalibrationCache(catalog)

    def search(self, query: SearchQuery) -> SearchAnswer:
        started = time.perf_counter()
        prepared = self.prepare(query)
        encoded = time.perf_counter()
        with self.catalog.reading():  # the steps' statements share one connection and transaction
            hits, facets, total = self.ranked_page(query, prepared)
        return SearchAnswer(
            hits,
            prepared.mode,
            facets,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
            encode_ms=round((encoded - started) * 1000, 3),
            total=total,
        )

    def prepare(self, query: SearchQuery) -> Prepared:
        """check -> mode -> query vector, and the index caught up (before any read connection)."""
        self.limits.check(query)
        mode = self.mode_of(query)
        query.cutoffs.check(mode)
        calibration = self.calibration.get()
        if query.min_relevance is not None and (calibration is None or mode not in calibration.models):
            raise BadInput(
                f"min_relevance needs a relevance calibration for the {mode} mode: "
                "run python -m indexer evaluate JUDGEMENTS.csv --calibrate"
            )
        parts: list[QueryPart] = []
        vector, excluded = (
            (None, []) if mode == "lexical" else self.query_vector(query.positive, query.negative, parts)
        )
        if vector is not None:
            self.vectors.catch_up()
        if query.collapse:
            self._duplicates().catch_up()  # groups at the catalog's revision, before the reads pin one
        return Prepared(mode, vector, excluded, parts, calibration)

    def rank(self, query: SearchQuery, prepared: Prepared) -> Ranking:
        """candidates -> fuse -> cut -> boost -> (sort): every list, for the page and for explaining it."""
        mode, cutoffs = prepared.mode, query.cutoffs
        want = self.relevant_window(query)
        where = query.filters.clause() if query.filters else None
        window = want if mode == "vector" else max(FUSION_WINDOW, want)
        # The index stops at the vector cut-off (min_vector_score, or min_score when it is the ranking).
        groups: dict[int, int] = {}
        while True:
            vector_list = self.vector_candidates(query, prepared, window)
            lexical = self.lexical_candidates(query, mode, where, window)
            fused = self.fuse(mode, vector_list, lexical, query.lexical_weight)
            if prepared.calibration is not None:
                self.score_relevance(fused, prepared)
            ranked = self.boost(cutoffs.apply(fused), lexical.exact)
            if not query.collapse:
                break
            ranked, groups = self.collapse(ranked)
            more = len(vector_list) >= window or len(lexical.ranking) >= window
            if len(ranked) >= want or not more or window >= COLLAPSE_MAX_WINDOW:
                break
            window *= 4  # groups took places in the window: widen it until the page is full
        if query.sort:
            ranked = self.sort(ranked[:want], query.sort)
        return Ranking(vector_list, lexical, fused, ranked, window, where, groups)

    def vector_candidates(self, query: SearchQuery, prepared: Prepared, window: int) -> list[Candidate]:
        """The vector list: at most ``window`` products, stopping at the vector cut-off. A wide window
        above a cut-off (a sort's set) is asked for in growing steps: the products above the cut-off
        are usually far fewer than the window, and one request for all of it reads window x 2 image hits."""
        if prepared.vector is None:
            return []
        floor = query.cutoffs.vector_floor(prepared.mode)
        want = window if floor is None else min(window, FIRST_STEP)
        while True:
            found = self.vectors.nearest(prepared.vector, want, query.filters, prepared.excluded, floor)
            if len(found) < want or want >= window:  # every product above the cut-off, or the window
                return found
            want = min(window, want * 8)

    def ranked_page(
        self, query: SearchQuery, prepared: Prepared
    ) -> tuple[list[ProductHit], dict[str, dict[str, int]] | None, int | None]:
        """The ranking's page, hydrated, and the facets; with a sort, also the size of the sorted set."""
        ranking = self.rank(query, prepared)
        page = ranking.ranked[query.offset : query.offset + query.k]
        explain = self.explainer(query, prepared, page) if query.explain else None
        hits = self.hydrate(page, explain)
        if query.collapse:
            self.name_duplicates(hits, ranking.groups)
        if not query.sort:
            return hits, self.facets(ranking.where, query.facets, collapse=bool(query.collapse)), None
        # Facets count the sorted set (already collapsed: one product per group).
        in_set = Product.id.in_([c.product for c in ranking.ranked])
        return hits, self.facets(in_set, query.facets), len(ranking.ranked)

    def relevant_window(self, query: SearchQuery) -> int:
        """How many of the ranking's best the page is taken from: offset + k; with a sort, every product
        that passes the cut-offs (at most ``max_sorted``), or without a cut-off the top k by relevance."""
        if not query.sort:
            return query.offset + query.k
        return self.limits.max_sorted if query.cutoffs else query.k

    def score_relevance(self, candidates: list[Candidate], prepared: Prepared) -> None:
        """Each candidate's calibrated relevance. A hybrid candidate found by the lexical list alone has
        its cosine computed from its stored vectors (one statement per 500): the model needs both."""
        calibration = prepared.calibration
        assert calibration is not None
        cosines: dict[int, float] = {}
        unseen = [c.product for c in candidates if c.vector_score is None]
        if prepared.mode == "hybrid" and unseen and prepared.vector is not None:
            stored = self.catalog.vector_bytes(unseen)
            owners = self.catalog.owners(list(stored))
            query_vector = np.asarray(prepared.vector, dtype=np.float32)
            for image_id, blob in stored.items():
                cosine = float(np.dot(bytes_to_vector(blob), query_vector))
                product = owners[image_id]
                cosines[product] = max(cosine, cosines.get(product, -1.0))
        for candidate in candidates:
            cosine = (
                candidate.vector_score
                if candidate.vector_score is not None
                else cosines.get(candidate.product)
            )
            candidate.relevance = calibration.probability(prepared.mode, cosine, candidate.lexical_score)

    def weight_of(self, query: SearchQuery) -> float:
        return self.lexical_weight if query.lexical_weight is None else query.lexical_weight

    def explainer(
        self, query: SearchQuery, prepared: Prepared, page: list[Candidate]
    ) -> Callable[[Candidate, ImageRecord | None], dict[str, Any]]:
        """How each hit of ``page`` is explained (explain.py); a composed query's parts are compared
        with the matched images' stored vectors (one statement)."""
        composed = len(prepared.parts) > 1
        vectors = self.catalog.vector_bytes([c.product for c in page]) if composed else {}
        scorer = "bm25" if self.catalog.dialect == "sqlite" else "ts_rank"
        weight = self.weight_of(query)

        def explain_one(candidate: Candidate, image: ImageRecord | None) -> dict[str, Any]:
            blob = vectors.get(candidate.image) if candidate.image is not None else None
            return explain(
                candidate,
                prepared.mode,
                weight,
                scorer,
                image.position if image else None,
                prepared.parts,
                bytes_to_vector(blob) if blob is not None else None,
            )

        return explain_one

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
            return [
                Candidate(pid, score, lexical_score=score, lexical_rank=rank)
                for rank, (pid, score) in enumerate(lexical.ranking, start=1)
            ]
        weight = self.lexical_weight if lexical_weight is None else lexical_weight
        fused = reciprocal_rank_fusion(
            [pid for pid, _ in lexical.ranking], [c.product for c in vector], weight
        )
        by_vector = {c.product: c for c in vector}
        by_text = {pid: (rank, score) for rank, (pid, score) in enumerate(lexical.ranking, start=1)}
        out = []
        for pid, score in fused:
            seen = by_vector.get(pid)
            text_rank, text_score = by_text.get(pid, (None, None))
            out.append(
                Candidate(
                    pid,
                    score,
                    seen.image if seen else None,
                    seen.vector_score if seen else None,
                    text_score,
                    seen.vector_rank if seen else None,
                    text_rank,
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
        first = [by_product.get(pid) or Candidate(pid, 0.0) for pid in exact]
        for i, candidate in enumerate(first):
            lifted = top + 1e-6 * (len(first) - i)
            candidate.boost, candidate.score = lifted - candidate.score, lifted
        exact_set = set(exact)
        return first + [c for c in ranked if c.product not in exact_set]

    def sort(self, ranked: list[Candidate], keys: list[SortKey]) -> list[Candidate]:
        """The relevant set ordered by the sort keys (one statement per field and 500 products)."""
        ids = [c.product for c in ranked]
        values = {key.field: self.catalog.sort_values(ids, key.field) for key in keys}
        by_id = {c.product: c for c in ranked}
        return [by_id[pid] for pid in sort_ids(ids, keys, values)]

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

    def hydrate(
        self,
        page: list[Candidate],
        explain: Callable[[Candidate, ImageRecord | None], dict[str, Any]] | None = None,
    ) -> list[ProductHit]:
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
                    record,
                    float(candidate.score),
                    matched,
                    candidate.vector_score,
                    candidate.lexical_score,
                    explain=explain(candidate, matched) if explain else None,
                    relevance=candidate.relevance,
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

    def query_vector(
        self, positive: list[Example], negative: list[Example], parts: list[QueryPart] | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """The composed query vector, and the image ids of example products (never their own results);
        ``parts``, when given, receives the composition's parts (for explanations)."""
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
        if parts is not None and len(examples) > 1:
            parts += query_parts(examples, vectors, len(positive))  # type: ignore[arg-type]
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

    def duplicate_group_of(self, product: int) -> int | None:
        """The duplicate group a product (row id) belongs to, None when it is in none."""
        return self._duplicates().groups_of([product]).get(product)

    def _duplicates(self) -> DuplicateService:
        if self.duplicates is None:
            raise BadInput("collapsing duplicates needs the catalog's duplicate groups, not wired here")
        return self.duplicates


def _side(index: int, positive: list[Example]) -> str:
    return f"positive[{index}]" if index < len(positive) else f"negative[{index - len(positive)}]"
