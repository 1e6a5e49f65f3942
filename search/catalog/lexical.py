"""Lexical ranking over products.search_text (id, title, category, attribute values).

SQLite: the FTS5 table ``product_search`` ranked by BM25; PostgreSQL: ``to_tsvector('simple', ...)``
(GIN-indexed) ranked by ``ts_rank``. Query words are OR-ed, so a product matching more (and rarer) words
ranks higher; words keep inner hyphens so that codes like "TX-4471" match whole.
"""

from __future__ import annotations

import re
from functools import reduce

from sqlalchemy import ColumnElement, Engine, bindparam, column, func, literal_column, select, table, text

from search.schema import SEARCH_TABLE, Product

_WORD = re.compile(r"[\w]+(?:-[\w]+)*")
MAX_WORDS = 32


def query_words(query: str) -> list[str]:
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:MAX_WORDS]


def lexical_ranking(
    engine: Engine, query: str, where: ColumnElement[bool] | None, limit: int
) -> list[tuple[int, float]]:
    """(product row id, score) of the products matching ``query`` (and ``where``), best first."""
    words = query_words(query)
    if not words or limit <= 0:
        return []
    if engine.dialect.name == "sqlite":
        statement = _sqlite_statement(words, where, limit)
    else:
        statement = _postgres_statement(words, where, limit)
    with engine.connect() as connection:
        return [(int(pid), float(score)) for pid, score in connection.execute(statement)]


def _sqlite_statement(words: list[str], where: ColumnElement[bool] | None, limit: int):  # type: ignore[no-untyped-def]
    # Each word quoted: FTS5 then treats '-' and keywords (AND, NOT, NEAR) as plain text.
    match = " OR ".join('"' + word.replace('"', "") + '"' for word in words)
    fts = table(SEARCH_TABLE, column("rowid"))
    score = literal_column(f"-bm25({SEARCH_TABLE})").label("score")  # bm25() is lower-is-better
    statement = select(fts.c.rowid, score).where(text(f"{SEARCH_TABLE} MATCH :match").bindparams(match=match))
    if where is not None:
        # "rowid + 0", not "rowid": SQLite would hand a plain rowid IN (...) to FTS5 as a constraint and
        # run the full-text query once per allowed product (300 ms for a 7,000-product filter at 20k
        # products); as an expression it filters the ranked matches instead (26 ms).
        statement = statement.where((fts.c.rowid + 0).in_(select(Product.id).where(where)))
    return statement.order_by(score.desc(), fts.c.rowid).limit(limit)


def _postgres_statement(words: list[str], where: ColumnElement[bool] | None, limit: int):  # type: ignore[no-untyped-def]
    # Spelled exactly as the GIN index's expression (migration 0006), so the planner can use it.
    simple = literal_column("'simple'")
    document = func.to_tsvector(simple, func.coalesce(Product.search_text, literal_column("''")))
    query = reduce(
        lambda a, b: a.op("||")(b),
        [func.plainto_tsquery(simple, bindparam(f"w{i}", word)) for i, word in enumerate(words)],
    )
    score = func.ts_rank(document, query).label("score")
    return (
        select(Product.id, score)
        .where(document.op("@@")(query), *([where] if where is not None else []))
        .order_by(score.desc(), Product.id)
        .limit(limit)
    )
