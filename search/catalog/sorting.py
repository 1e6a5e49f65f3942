"""Sorting a search's relevant set by a field: ``sort: [{"field": "price", "order": "asc"}]``.

The set is what passed the cut-offs (every product above them, up to ``SearchLimits.max_sorted``), or,
without a cut-off, the top ``k`` by relevance. Fields: any attribute (numbers compare as numbers, text
as text; numbers come before text), ``category``, ``created_at`` and ``updated_at``. A product without
the field comes last in either order; equal values keep their relevance order. The values are read
from the store and compared here, so both stores order alike (no collation differences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from search.errors import BadInput

Order = Literal["asc", "desc"]
MAX_SORT_KEYS = 4
TIMESTAMPS = ("created_at", "updated_at")
SortValue = tuple[int, float, str]  # (0, number, "") for numbers and times, (1, 0, text) for text


@dataclass(frozen=True)
class SortKey:
    field: str
    order: Order = "asc"

    @classmethod
    def parse_list(cls, value: object) -> list[SortKey]:
        """A request's ``sort`` (None: no sort)."""
        if value is None:
            return []
        if not isinstance(value, list) or not value:
            raise BadInput('sort must be a list like [{"field": "price", "order": "asc"}]')
        if len(value) > MAX_SORT_KEYS:
            raise BadInput(f"sort may name at most {MAX_SORT_KEYS} fields, not {len(value)}")
        return [cls.parse(item, i) for i, item in enumerate(value)]

    @classmethod
    def parse(cls, item: object, i: int = 0) -> SortKey:
        if not isinstance(item, dict) or set(item) - {"field", "order"}:
            raise BadInput(f'sort[{i}] must be an object like {{"field": "price", "order": "asc"}}')
        field, order = item.get("field"), item.get("order", "asc")
        if not isinstance(field, str) or not 1 <= len(field) <= 256:
            raise BadInput(f"sort[{i}].field must be a field name of 1 to 256 characters")
        if order not in ("asc", "desc"):
            raise BadInput(f"sort[{i}].order must be asc or desc")
        return cls(field, order)


def sort_ids(ids: list[int], keys: list[SortKey], values: dict[str, dict[int, SortValue]]) -> list[int]:
    """``ids`` (in relevance order) ordered by ``keys``; ``values[field]`` holds each product's value."""
    ordered = list(ids)
    for key in reversed(keys):  # stable sorts, least significant key first
        found = values.get(key.field, {})
        present = [pid for pid in ordered if pid in found]
        present.sort(key=found.__getitem__, reverse=key.order == "desc")  # reverse keeps ties' order
        ordered = present + [pid for pid in ordered if pid not in found]
    return ordered
