"""Lexical ranking over products.search_text (id, title, category, attribute values): the statements,
which the store (``Catalog.lexical``) runs.

SQLite: the FTS5 table ``product_search`` ranked by BM25; PostgreSQL: ``to_tsvector('simple', ...)``
(GIN-indexed) ranked by ``ts_rank``. Query words are OR-ed, so a product matching more (and rarer) words
ranks higher; words keep inner hyphens so that codes like "TX-4471" match whole. An exact id or ``sku``
match is found beside the ranking, so that it can come first whatever the rankings say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce

from sqlalchemy import ColumnElement, Select, bindparam, column, func, literal_column, select, table, text

from search.catalog.schema import SEARCH_TABLE, Product, ProductAttribute

_WORD = re.compile(r"[\w]+(?:-[\w]+)*")
MAX_WORDS = 32
EXACT_MAX_CHARS = 256
EXACT_MAX_MATCHES = 10


@dataclass
class LexicalResult:
    ranking: list[tuple[int, float]]  # (product row id, score), best first
    exact: list[int]  # products whose id or sku is exactly the query, in id order


def query_words(query: str) -> list[str]:
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:MAX_WORDS]


def ranking_statement(
    dialect: str, words: list[str], where: ColumnElement[bool] | None, limit: int
) -> Select:
    """(id, score) of the products matching ``words`` (and ``where``), best first, at most ``limit``."""
    if dialect == "sqlite":
        return _sqlite_statement(words, where, limit)
    return _postgres_statement(words, where, limit)


def exact_match_statement(query: str, where: ColumnElement[bool] | None) -> Select | None:
    """(id, external_id) of the products whose id or ``sku`` attribute is exactly ``query`` (as typed,
    upper- or lower-case); None when the query cannot be an id."""
    value = query.strip()
    if not value or len(value) > EXACT_MAX_CHARS:
        return None
    variants = list(dict.fromkeys([value, value.upper(), value.lower()]))
    by_sku = select(ProductAttribute.product_id).where(
        ProductAttribute.key == "sku", ProductAttribute.value.in_(variants)
    )
    return (
        select(Product.id.label("id"), Product.external_id.label("external_id"))
        .where(
            (Product.external_id.in_(variants)) | Product.id.in_(by_sku),
            *([where] if where is not None else []),
        )
        .order_by(Product.external_id)
        .limit(EXACT_MAX_MATCHES)
    )


def _sqlite_statement(words: list[str], where: ColumnElement[bool] | None, limit: int) -> Select:
    # Each word quoted: FTS5 then treats '-' and keywords (AND, NOT, NEAR) as plain text.
    match = " OR ".join('"' + word.replace('"', "") + '"' for word in words)
    fts = table(SEARCH_TABLE, column("rowid"))
    score = literal_column(f"-bm25({SEARCH_TABLE})").label("score")  # bm25() is lower-is-better
    statement = select(fts.c.rowid.label("id"), score).where(
        text(f"{SEARCH_TABLE} MATCH :match").bindparams(match=match)
    )
    if where is not None:
        # "rowid + 0", not "rowid": SQLite would hand a plain rowid IN (...) to FTS5 as a constraint and
        # run the full-text query once per allowed product (300 ms for a 7,000-product filter at 20k
        # products); as an expression it filters the ranked matches instead (26 ms).
        statement = statement.where((fts.c.rowid + 0).in_(select(Product.id).where(where)))
    return statement.order_by(score.desc(), fts.c.rowid).limit(limit)


def _postgres_statement(words: list[str], where: ColumnElement[bool] | None, limit: int) -> Select:
    # Spelled exactly as the GIN index's expression (migration 0006), so the planner can use it.
    simple = literal_column("'simple'")
    document = func.to_tsvector(simple, func.coalesce(Product.search_text, literal_column("''")))
    query = reduce(
        lambda a, b: a.op("||")(b),
        [func.plainto_tsquery(simple, bindparam(f"w{i}", word)) for i, word in enumerate(words)],
    )
    score = func.ts_rank(document, query).label("score")
    return (
        select(Product.id.label("id"), score)
        .where(document.op("@@")(query), *([where] if where is not None else []))
        .order_by(score.desc(), Product.id)
        .limit(limit)
    )
