"""Typed filters: ``{"field": value}`` and operator objects, parsed once and turned into indexed SQL.

``{"color": "red"}`` is equality; ``{"color": {"in": [...]}}``, ``{"price": {"gte": 10, "lt": 50}}``,
``{"finish": {"not": "glossy"}}`` and ``{"sku": {"exists": true}}`` are the operators; several keys (and
several operators in one object) are AND. ``category`` is a field like the others (a column of its own),
and so is ``tags.<name>``: the model's tag of taxonomy attribute <name> (product_tags, beside the
merchant's attributes), which takes equality, ``in``, ``not`` and ``exists``.
Equality, ``in`` and ``not`` compare the canonical text of the value (so a CSV's "60" equals a JSON 60);
ranges compare numbers. A field no product has is simply an empty result; a malformed filter is a
BadInput naming its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, false, not_, select, true

from search.catalog.schema import Product, ProductAttribute, ProductTag, attribute_text
from search.errors import BadInput

RANGE_OPERATORS = {"gte": "__ge__", "gt": "__gt__", "lte": "__le__", "lt": "__lt__"}
OPERATORS = ("in", "not", "exists", *RANGE_OPERATORS)
EXAMPLE = '{"category": "tile", "color": {"in": ["red", "blue"]}, "price": {"gte": 10, "lt": 50}}'
CATEGORY = "category"
TAGS_PREFIX = "tags."


def tag_field(name: str) -> str | None:
    """The taxonomy attribute a ``tags.<name>`` field names; None for any other field."""
    return name[len(TAGS_PREFIX) :] or None if name.startswith(TAGS_PREFIX) else None


@dataclass(frozen=True)
class Condition:
    """One field's test. ``equals``/``one_of``/``none_of`` hold canonical texts."""

    field: str
    one_of: tuple[str, ...] | None = None  # equality is a one-element list
    none_of: tuple[str, ...] = ()
    ranges: tuple[tuple[str, float], ...] = ()
    exists: bool | None = None


@dataclass(frozen=True)
class Filters:
    conditions: tuple[Condition, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.conditions)

    @classmethod
    def parse(cls, value: object, max_keys: int) -> Filters:
        """Filters from a request's ``filters`` object (None: no filter). ``max_keys``:
        VITRINE_MAX_ATTRIBUTES (each key is one more condition in one SQL statement)."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise BadInput(f"filters must be an object like {EXAMPLE}")
        if len(value) > max_keys:
            raise BadInput(f"filters has {len(value)} keys; the limit is {max_keys} (VITRINE_MAX_ATTRIBUTES)")
        return cls(tuple(_condition(str(key), item) for key, item in value.items()))

    def and_(self, other: Filters) -> Filters:
        """Both filters' conditions (every one must hold)."""
        return Filters((*self.conditions, *other.conditions))

    def clause(self, *, per_row: bool = False) -> ColumnElement[bool]:
        """A WHERE clause over ``products`` (indexed lookups in product_attributes).

        ``per_row=True`` states the same test per product row (correlated EXISTS on the attribute's
        primary key) for checking a few given products: SQLite would otherwise list every product an
        attribute test matches (300,000 rows for a 30% filter at 1M) to check ten of them.
        """
        return and_(true(), *(_sql(condition, per_row) for condition in self.conditions))


def _scalar_text(where: str, value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{where} must be a finite number")
    text = attribute_text(value)
    if text is None:
        raise BadInput(f"{where} must be a string, number or boolean")
    return text


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{where} must be a finite number")
    return float(value)


def _texts(where: str, value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if len(items) > 1000:
        raise BadInput(f"{where} may list at most 1000 values")
    return tuple(
        _scalar_text(f"{where}[{i}]" if isinstance(value, list) else where, item)
        for i, item in enumerate(items)
    )


def _condition(key: str, value: object) -> Condition:
    where = f"filters.{key}"
    if not key or len(key) > 256:
        raise BadInput(f"filter keys must be 1 to 256 characters: {key[:80]!r}")
    if not isinstance(value, dict):
        if isinstance(value, list):
            # A list means "any of these", as shoppers and older clients write it.
            return Condition(key, one_of=_texts(where, value))
        return Condition(key, one_of=(_scalar_text(where, value),))
    if not value:
        raise BadInput(f"{where} is an empty object; use one of {', '.join(OPERATORS)}")
    unknown = [op for op in value if op not in OPERATORS]
    if unknown:
        raise BadInput(f"{where}: unknown operator {unknown[0]!r}; use one of {', '.join(OPERATORS)}")
    one_of = _texts(f"{where}.in", value["in"]) if "in" in value else None
    if "in" in value and not isinstance(value["in"], list):
        raise BadInput(f"{where}.in must be a list of values")
    none_of = _texts(f"{where}.not", value["not"]) if "not" in value else ()
    ranges = tuple((op, _number(f"{where}.{op}", value[op])) for op in RANGE_OPERATORS if op in value)
    if ranges and key == CATEGORY:
        raise BadInput(f"{where}: category is text; ranges apply to numeric attributes")
    if ranges and tag_field(key) is not None:
        raise BadInput(f"{where}: tags are text; ranges apply to numeric attributes")
    exists = value.get("exists")
    if "exists" in value and not isinstance(exists, bool):
        raise BadInput(f"{where}.exists must be true or false")
    return Condition(key, one_of, none_of, ranges, exists)


def _has(
    key: str, *tests: ColumnElement[bool], per_row: bool = False, table: type = ProductAttribute
) -> ColumnElement[bool]:
    """Products with an attribute ``key`` passing ``tests``: an indexed (key, ...) lookup, or per row
    a (product_id, key) primary-key lookup. ``table``: the merchant's attributes, or the tags."""
    if per_row:
        return (
            select(table.product_id).where(table.product_id == Product.id, table.key == key, *tests).exists()
        )
    return Product.id.in_(select(table.product_id).where(table.key == key, *tests))


def _sql(condition: Condition, per_row: bool = False) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if condition.field == CATEGORY:
        column = Product.category
        if condition.one_of is not None:
            parts.append(column.in_(condition.one_of) if condition.one_of else false())
        if condition.none_of:
            parts.append(column.is_(None) | column.not_in(condition.none_of))
        if condition.exists is not None:
            parts.append(column.is_not(None) if condition.exists else column.is_(None))
        return and_(true(), *parts)
    key, table = condition.field, ProductAttribute
    if (tag := tag_field(key)) is not None:  # the same tests on the tags table (no ranges: parse refuses)
        key, table = tag, ProductTag
    if condition.one_of is not None:
        parts.append(
            _has(key, table.value.in_(condition.one_of), per_row=per_row, table=table)
            if condition.one_of
            else false()
        )
    if condition.none_of:
        parts.append(not_(_has(key, table.value.in_(condition.none_of), per_row=per_row, table=table)))
    if condition.ranges:
        tests = [
            getattr(ProductAttribute.number, RANGE_OPERATORS[op])(bound) for op, bound in condition.ranges
        ]
        parts.append(_has(key, ProductAttribute.number.is_not(None), *tests, per_row=per_row))
    if condition.exists is not None:
        has = _has(key, per_row=per_row, table=table)
        parts.append(has if condition.exists else not_(has))
    return and_(true(), *parts)
