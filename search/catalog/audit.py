"""The catalog audit: products whose merchant value for an attribute contradicts a confident tag of the
same name, most confident first.

A product is listed when it has a merchant value (the ``category`` column, or the attribute of that name)
and a tag of the attribute scoring at least ``min_score`` whose value differs from it; the merchant value
agrees when it is the tag's value or one of that value's synonyms, and, for a multi-label attribute,
when it is any of the product's confident values (the row then shows the best one).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Select, and_, func, not_, or_, select

from search.catalog.filters import CATEGORY
from search.catalog.schema import Product, ProductAttribute, ProductTag
from search.catalog.taxonomy import TagAttribute


@dataclass(frozen=True)
class Contradiction:
    id: str
    attribute: str
    given: str
    predicted: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "attribute": self.attribute,
            "given": self.given,
            "predicted": self.predicted,
            "score": self.score,
        }


def contradictions_query(attribute: TagAttribute, min_score: float) -> Select:
    """(external id, given, predicted, score) of every contradiction, in no particular order."""
    name = attribute.name
    other = ProductTag.__table__.alias("other")
    query = (
        select(Product.external_id, ProductTag.value, ProductTag.score)
        .select_from(ProductTag)
        .join(Product, Product.id == ProductTag.product_id)
    )
    if name == CATEGORY:
        given = Product.category  # NULL never differs: a product without a category is not listed
    else:
        given = ProductAttribute.value
        query = query.join(
            ProductAttribute, and_(ProductAttribute.product_id == Product.id, ProductAttribute.key == name)
        )
    confident = and_(
        other.c.product_id == ProductTag.product_id, other.c.key == name, other.c.score >= min_score
    )
    tests = [ProductTag.key == name, ProductTag.score >= min_score, ProductTag.value != given]
    tests += [
        not_(and_(ProductTag.value == value.value, given.in_(value.synonyms)))
        for value in attribute.values
        if value.synonyms
    ]
    # Multi-label: agreeing with any confident value is agreeing; one row per product, its best value.
    tests.append(not_(select(other.c.product_id).where(confident, other.c.value == given).exists()))
    better = or_(
        other.c.score > ProductTag.score,
        and_(other.c.score == ProductTag.score, other.c.value < ProductTag.value),
    )
    tests.append(not_(select(other.c.product_id).where(confident, better).exists()))
    return query.add_columns(given).where(*tests)


def audit_page(
    connection: Connection, attribute: TagAttribute, min_score: float, limit: int, offset: int
) -> tuple[list[Contradiction], int]:
    """One page of contradictions, most confident first (then by id), and how many there are in all."""
    query = contradictions_query(attribute, min_score)
    total = int(connection.scalar(select(func.count()).select_from(query.subquery())) or 0)
    page = query.order_by(ProductTag.score.desc(), Product.external_id).limit(limit).offset(offset)
    found = [
        Contradiction(external_id, attribute.name, given, value, float(score))
        for external_id, value, score, given in connection.execute(page)
    ]
    return found, total
