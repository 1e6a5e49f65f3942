"""Request bodies of the catalog routes as pydantic models, and their translation into core values.

Validation errors keep one message shape: ``invalid search request: <field>: <problem>``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.errors import BadInput

SINGLE_FORMS = ("text", "image", "product_id", "vector")


class ExampleBody(BaseModel):
    """One example of a composed query: exactly one of text / image / product_id / vector."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    image: str | None = Field(None, description="URL, base64 or data URI")
    product_id: str | None = None
    vector: list[float] | None = None
    weight: float | int = Field(1.0, description="how much this example counts (above 0)")


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

    def to_query(self) -> SearchQuery:
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
            filters=Filters.parse(self.filters),
            facets=list(self.facets or []),
            k=k,
            offset=self.offset,
            min_score=self.min_score,
            lexical_weight=self.lexical_weight,
        )


def _single(name: str, value: Any) -> Any:
    return tuple(value) if name == "vector" else value


def _example(item: ExampleBody, where: str) -> Example:
    given = [name for name in SINGLE_FORMS if getattr(item, name) is not None]
    if len(given) != 1:
        raise BadInput(f"{where} must have exactly one of text, image, product_id or vector")
    return Example(**{given[0]: _single(given[0], getattr(item, given[0]))}, weight=float(item.weight))


def parse_search(payload: object) -> SearchQuery:
    try:
        body = SearchBody.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadInput(f"invalid search request: {where}: {first['msg']}") from None
    return body.to_query()


class ProductBody(BaseModel):
    """PUT / PATCH body: the named fields, and any other key as an attribute."""

    model_config = ConfigDict(extra="allow")

    image: str | list[str] | None = Field(None, description="URL, base64 or data URI (one, or a list)")
    images: list[str] | None = Field(None, description="several images, in order")
    title: str | None = None
    category: str | None = None


_EXPECTED = {
    "image": "a string or a list of strings",
    "images": "a list of strings",
    "title": "a string",
    "category": "a string",
}


def product_fields(payload: object, *, patch: bool = False) -> dict[str, Any]:
    """A PUT or PATCH body as the dict the core reads; every other key is an attribute."""
    if not isinstance(payload, dict):
        raise BadInput('body must be a JSON object like {"image": ..., "title": ..., "category": ...}')
    if patch and not payload:
        raise BadInput("PATCH body names no field to change")
    try:
        ProductBody.model_validate(payload, strict=True)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        raise BadInput(f"{field} must be {_EXPECTED.get(field, 'valid')}") from None
    return payload


def parse_filters_param(value: str | None) -> Filters:
    """``GET /products?filters=<JSON>``."""
    if value is None or not value.strip():
        return Filters()
    try:
        parsed = json.loads(value)
    except ValueError:
        raise BadInput('filters must be JSON like {"color": {"in": ["red", "blue"]}}') from None
    return Filters.parse(parsed)
