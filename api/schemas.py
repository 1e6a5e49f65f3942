"""Request bodies of the catalog routes as pydantic models, and their translation into core values.

Validation errors keep one message shape: ``invalid search request: <field>: <problem>``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search.catalog.filters import Filters
from search.catalog.plan import ProductDraft, ProductLimits, ProductPatch
from search.catalog.query import Example, SearchLimits, SearchQuery
from search.catalog.sorting import SortKey
from search.errors import BadInput
from search.strict_json import JsonLimits, parse_json

SINGLE_FORMS = ("text", "image", "product_id", "vector")


class ExampleBody(BaseModel):
    """One example of a composed query: exactly one of text / image / product_id / vector."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    image: str | None = Field(None, description="URL, base64 or data URI")
    product_id: str | None = None
    vector: list[float] | None = None
    weight: float | int = Field(1.0, description="how much this example counts (above 0)")


class SortBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    field: str
    order: Literal["asc", "desc"] = "asc"


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    image: str | None = Field(None, description="URL, base64 or data URI")
    product_id: str | None = None
    vector: list[float] | None = Field(None, description="a query embedding (L2-normalised here)")
    positive: list[ExampleBody] | None = Field(None, description="composed query: examples to move towards")
    negative: list[ExampleBody] | None = Field(None, description="composed query: examples to move away from")
    mode: Literal["vector", "lexical", "hybrid"] | None = Field(
        None, description="ranking of text queries; default VITRINE_SEARCH_MODE"
    )
    lexical_weight: float | int | None = Field(None, description="hybrid: share of the lexical ranking, 0..1")
    filters: dict[str, Any] | None = None
    facets: list[str] | None = None
    k: int | None = Field(None, description="results per page (default 10); alias limit")
    limit: int | None = None
    offset: int = 0
    min_score: float | int | None = None
    min_vector_score: float | int | None = Field(None, description="cut-off on the cosine (vector, hybrid)")
    min_lexical_score: float | int | None = Field(
        None, description="cut-off on the full-text score: BM25 on SQLite, ts_rank on PostgreSQL"
    )
    min_relevance: float | int | None = Field(
        None, description="cut-off on the calibrated probability of relevance (indexer evaluate --calibrate)"
    )
    explain: bool = Field(False, description="each hit says how its score was made (hit.explain)")
    sort: list[SortBody] | None = Field(
        None,
        description="order the hits that pass the cut-offs by fields (attributes, category, created_at, "
        "updated_at); without a cut-off, the top k by relevance",
    )
    collapse: Literal["duplicates"] | None = Field(
        None, description="duplicates: one product per duplicate group, the best-scoring (docs/duplicates.md)"
    )

    def to_query(self, limits: SearchLimits) -> SearchQuery:
        given = [name for name in SINGLE_FORMS if getattr(self, name) is not None]
        if self.positive is not None:
            if given:
                raise BadInput(f"give either positive/negative examples or {given[0]}, not both")
            if not self.positive:
                raise BadInput("positive must list at least one example")
            positive = [_example(item, f"positive[{i}]") for i, item in enumerate(self.positive)]
        else:
            if len(given) != 1:
                raise BadInput("give exactly one of text, image, product_id or vector (or positive: [...])")
            positive = [Example(**{given[0]: _single(given[0], getattr(self, given[0]))})]
        negative = [_example(item, f"negative[{i}]") for i, item in enumerate(self.negative or [])]
        if self.k is not None and self.limit is not None and self.k != self.limit:
            raise BadInput("give k or limit (the same thing), not two different values")
        k = self.k if self.k is not None else self.limit if self.limit is not None else 10
        return SearchQuery(
            positive=positive,
            negative=negative,
            mode=self.mode,
            filters=Filters.parse(self.filters, limits.max_filter_keys),
            facets=list(self.facets or []),
            k=k,
            offset=self.offset,
            min_score=self.min_score,
            lexical_weight=self.lexical_weight,
            explain=self.explain,
            min_relevance=self.min_relevance,
            min_vector_score=self.min_vector_score,
            min_lexical_score=self.min_lexical_score,
            sort=SortKey.parse_list(
                [item.model_dump() for item in self.sort] if self.sort is not None else None
            ),
            collapse=self.collapse,
        )


def _single(name: str, value: Any) -> Any:
    return tuple(value) if name == "vector" else value


def _example(item: ExampleBody, where: str) -> Example:
    given = [name for name in SINGLE_FORMS if getattr(item, name) is not None]
    if len(given) != 1:
        raise BadInput(f"{where} must have exactly one of text, image, product_id or vector")
    return Example(**{given[0]: _single(given[0], getattr(item, given[0]))}, weight=float(item.weight))


def parse_search(payload: object, limits: SearchLimits) -> SearchQuery:
    """A /search body as the core's query (its ranges are checked by the search itself, once)."""
    try:
        body = SearchBody.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadInput(f"invalid search request: {where}: {first['msg']}") from None
    return body.to_query(limits)


class ProductBody(BaseModel):
    """PUT / PATCH body: the named fields, and any other key as an attribute."""

    model_config = ConfigDict(extra="allow")

    image: str | list[str] | None = Field(None, description="URL, base64 or data URI (one, or a list)")
    images: list[str] | None = Field(None, description="several images, in order")
    title: str | None = None
    category: str | None = None


def _object(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadInput('body must be a JSON object like {"image": ..., "title": ..., "category": ...}')
    return payload


def product_draft(product_id: str, payload: object, limits: ProductLimits) -> ProductDraft:
    """A PUT body as the whole product: checked once, by the core's own value (``ProductDraft``)."""
    return ProductDraft.from_fields(product_id, _object(payload), limits)


def product_patch(product_id: str, payload: object, limits: ProductLimits) -> ProductPatch:
    """A PATCH body as the fields to change, checked once (``ProductPatch``)."""
    return ProductPatch.from_fields(product_id, _object(payload), limits)


def parse_filters_param(value: str | None, limits: SearchLimits, json_limits: JsonLimits) -> Filters:
    """``?filters=<JSON>`` (GET /products, /similar): the same reader and checks as a body's filters."""
    if value is None or not value.strip():
        return Filters()
    return Filters.parse(parse_json(value, "filters", json_limits), limits.max_filter_keys)


def facet_list(value: str | None) -> list[str]:
    """``?facets=color,category``."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]
