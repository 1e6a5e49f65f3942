"""The SQL of near-duplicate products: decisions, stored groups and their state, exact copies by content
hash. Plain values in and out; the catalog's connections (a search's pinned read connection included).

Decisions and groups are not catalog revisions: they change no product and no vector, so writing them
takes no revision (the index never hears of them). Removing a product removes its rows in the catalog's
one remove transaction (``transactions.remove``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from search.catalog.db import WRITE_OPTION
from search.catalog.schema import (
    DuplicateDecision,
    DuplicateMember,
    DuplicateState,
    Product,
    ProductImage,
    utcnow,
)
from search.catalog.store import Catalog

DECISIONS = ("distinct", "duplicate")
_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Group:
    """Products within the threshold of each other: ``members`` (row ids, the representative first) with
    each one's score to the representative, and the lowest pairwise score."""

    representative: int
    members: tuple[tuple[int, float], ...]
    min_score: float

    @property
    def products(self) -> list[int]:
        return [pid for pid, _ in self.members]


@dataclass
class GroupsState:
    threshold: float | None = None  # calibrated
    threshold_model: str | None = None
    calibration: dict[str, Any] | None = None
    groups_threshold: float | None = None
    groups_model: str | None = None
    groups_revision: int = 0


def ordered(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


class DuplicateStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._writer = catalog.engine.execution_options(**{WRITE_OPTION: True})

    def _read(self) -> Any:
        return self.catalog._connect()

    # State --------------------------------------------------------------------------------------------

    def state(self) -> GroupsState:
        with self._read() as connection:
            row = connection.execute(select(DuplicateState).where(DuplicateState.id == 1)).first()
        if row is None:
            return GroupsState()
        return GroupsState(
            row.threshold,
            row.threshold_model,
            row.calibration,
            row.groups_threshold,
            row.groups_model,
            int(row.groups_revision or 0),
        )

    def save_state(self, connection: Connection, **values: object) -> None:
        table = DuplicateState.__table__
        if connection.execute(select(table.c.id).where(table.c.id == 1)).first() is None:
            connection.execute(insert(table).values(id=1, **values))
        else:
            connection.execute(update(table).where(table.c.id == 1).values(**values))

    def set_state(self, **values: object) -> None:
        with self._writer.begin() as connection:
            self.save_state(connection, **values)

    # Decisions ----------------------------------------------------------------------------------------

    def decide(self, a: int, b: int, decision: str) -> None:
        a, b = ordered(a, b)
        table = DuplicateDecision.__table__
        with self._writer.begin() as connection:
            connection.execute(delete(table).where(table.c.product_a == a, table.c.product_b == b))
            connection.execute(
                insert(table).values(product_a=a, product_b=b, decision=decision, decided_at=utcnow())
            )

    def forget(self, a: int, b: int) -> bool:
        a, b = ordered(a, b)
        table = DuplicateDecision.__table__
        with self._writer.begin() as connection:
            result = connection.execute(delete(table).where(table.c.product_a == a, table.c.product_b == b))
        return bool(result.rowcount)

    def decisions_of(self, product_ids: Iterable[int]) -> dict[tuple[int, int], str]:
        """Every decision naming one of ``product_ids``, by (smaller, larger) row id."""
        ids = [int(i) for i in dict.fromkeys(product_ids)]
        found: dict[tuple[int, int], str] = {}
        with self._read() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                query = select(
                    DuplicateDecision.product_a, DuplicateDecision.product_b, DuplicateDecision.decision
                ).where(or_(DuplicateDecision.product_a.in_(chunk), DuplicateDecision.product_b.in_(chunk)))
                found.update(((int(a), int(b)), d) for a, b, d in connection.execute(query))
        return found

    def all_decisions(self) -> dict[tuple[int, int], str]:
        query = select(DuplicateDecision.product_a, DuplicateDecision.product_b, DuplicateDecision.decision)
        with self._read() as connection:
            return {(int(a), int(b)): d for a, b, d in connection.execute(query)}

    def list_decisions(self, offset: int, limit: int) -> tuple[list[tuple[str, str, str, datetime]], int]:
        """(external id a, external id b, decision, when) in decision order, and how many there are."""
        a, b = Product.__table__.alias("a"), Product.__table__.alias("b")
        query = (
            select(a.c.external_id, b.c.external_id, DuplicateDecision.decision, DuplicateDecision.decided_at)
            .join(a, a.c.id == DuplicateDecision.product_a)
            .join(b, b.c.id == DuplicateDecision.product_b)
            .order_by(DuplicateDecision.decided_at, DuplicateDecision.product_a, DuplicateDecision.product_b)
            .offset(offset)
            .limit(limit)
        )
        with self._read() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
            total = int(connection.scalar(select(func.count()).select_from(DuplicateDecision)) or 0)
        return rows, total  # type: ignore[return-value]

    # Exact copies ----------------------------------------------------------------------------------------

    def same_content(self, hashes: Sequence[str], other_than: int) -> list[tuple[int, int, str]]:
        """(product, image id, hash) of other products' images with one of these content hashes."""
        if not hashes:
            return []
        query = select(ProductImage.product_id, ProductImage.id, ProductImage.image_sha256).where(
            ProductImage.image_sha256.in_(list(dict.fromkeys(hashes))), ProductImage.product_id != other_than
        )
        with self._read() as connection:
            return [(int(p), int(i), h) for p, i, h in connection.execute(query)]

    def shared_content(self) -> Iterator[list[tuple[int, int]]]:
        """For each content hash held by two or more products: (product, image id) of its images."""
        shared = (
            select(ProductImage.image_sha256)
            .where(ProductImage.image_sha256.is_not(None))
            .group_by(ProductImage.image_sha256)
            .having(func.count(func.distinct(ProductImage.product_id)) > 1)
        )
        query = (
            select(ProductImage.image_sha256, ProductImage.product_id, ProductImage.id)
            .where(ProductImage.image_sha256.in_(shared))
            .order_by(ProductImage.image_sha256)
        )
        current: str | None = None
        images: list[tuple[int, int]] = []
        with self._read() as connection:
            for sha, pid, image_id in connection.execute(query):
                if sha != current and images:
                    yield images
                    images = []
                current = sha
                images.append((int(pid), int(image_id)))
        if images:
            yield images

    # Groups ---------------------------------------------------------------------------------------------

    def groups_of(self, product_ids: Iterable[int]) -> dict[int, int]:
        """Product row id -> its group id, for those in a group."""
        ids = [int(i) for i in dict.fromkeys(product_ids)]
        found: dict[int, int] = {}
        with self._read() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = select(DuplicateMember.product_id, DuplicateMember.group_id).where(
                    DuplicateMember.product_id.in_(ids[start : start + _CHUNK])
                )
                found.update((int(p), int(g)) for p, g in connection.execute(query))
        return found

    def groups(self, group_ids: Iterable[int]) -> dict[int, Group]:
        """The stored groups of these ids."""
        ids = [int(i) for i in dict.fromkeys(group_ids)]
        rows: list[Any] = []
        with self._read() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = (
                    select(
                        DuplicateMember.group_id,
                        DuplicateMember.product_id,
                        DuplicateMember.score,
                        DuplicateMember.min_score,
                    )
                    .where(DuplicateMember.group_id.in_(ids[start : start + _CHUNK]))
                    .order_by(
                        DuplicateMember.group_id, DuplicateMember.score.desc(), DuplicateMember.product_id
                    )
                )
                rows += connection.execute(query).all()
        return _groups_of_rows(rows)

    def list_groups(self, offset: int, limit: int) -> tuple[list[Group], int]:
        """A page of stored groups (by representative row id), and how many there are."""
        with self._read() as connection:
            ids = list(
                connection.scalars(
                    select(DuplicateMember.group_id)
                    .distinct()
                    .order_by(DuplicateMember.group_id)
                    .offset(offset)
                    .limit(limit)
                )
            )
            total = int(connection.scalar(select(func.count(func.distinct(DuplicateMember.group_id)))) or 0)
        found = self.groups(ids)
        return [found[i] for i in ids if i in found], total

    def dirty(self) -> list[int]:
        with self._read() as connection:
            return [
                int(p)
                for p in connection.scalars(select(DuplicateMember.product_id).where(DuplicateMember.dirty))
            ]

    def changed_since(self, revision: int) -> list[int]:
        """Products written after ``revision``."""
        with self._read() as connection:
            return [int(p) for p in connection.scalars(select(Product.id).where(Product.revision > revision))]

    def existing(self, product_ids: Iterable[int]) -> set[int]:
        ids = [int(i) for i in dict.fromkeys(product_ids)]
        found: set[int] = set()
        with self._read() as connection:
            for start in range(0, len(ids), _CHUNK):
                found.update(
                    int(p)
                    for p in connection.scalars(
                        select(Product.id).where(Product.id.in_(ids[start : start + _CHUNK]))
                    )
                )
        return found

    def write_groups(
        self,
        dissolved: Iterable[int],
        groups: Sequence[Group],
        joined: Sequence[tuple[int, int, float, float]] = (),
        *,
        replace_all: bool = False,
        **state: object,
    ) -> None:
        """In one transaction: drop the memberships of ``dissolved`` products (every one with
        ``replace_all``), store ``groups``, add ``joined`` (product, group, score, the group's new lowest
        score) to standing groups, and save ``state``."""
        table = DuplicateMember.__table__
        dissolved = [int(p) for p in dict.fromkeys(dissolved)]
        with self._writer.begin() as connection:
            if replace_all:
                connection.execute(delete(table))
            for start in range(0, len(dissolved), _CHUNK):
                connection.execute(
                    delete(table).where(table.c.product_id.in_(dissolved[start : start + _CHUNK]))
                )
            rows = [
                {
                    "product_id": pid,
                    "group_id": group.representative,
                    "score": score,
                    "min_score": group.min_score,
                    "dirty": False,
                }
                for group in groups
                for pid, score in group.members
            ]
            for start in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[start : start + 5000])
            for pid, group_id, score, min_score in joined:
                connection.execute(
                    insert(table).values(
                        product_id=pid, group_id=group_id, score=score, min_score=min_score, dirty=False
                    )
                )
                connection.execute(
                    update(table).where(table.c.group_id == group_id).values(min_score=min_score)
                )
            if state:
                self.save_state(connection, **state)


def _groups_of_rows(rows: Sequence[Any]) -> dict[int, Group]:
    members: dict[int, list[tuple[int, float]]] = {}
    lowest: dict[int, float] = {}
    for group_id, pid, score, min_score in rows:
        members.setdefault(int(group_id), []).append((int(pid), float(score)))
        lowest[int(group_id)] = float(min_score)
    out = {}
    for group_id, items in members.items():
        items.sort(key=lambda item: (item[0] != group_id, -item[1], item[0]))  # the representative first
        out[group_id] = Group(group_id, tuple(items), lowest[group_id])
    return out
