"""``DuplicateService``: a product's duplicates, the catalog's groups kept at its revision, decisions, and
the threshold (calibrated per catalog and embedding space, else VITRINE_DUPLICATE_THRESHOLD).

Stored groups follow the catalog as the index does: they record the revision they reflect, and
``catch_up`` forms again only the groups of products written since (and of the mates of removed ones),
one search per image of those products, never a whole-catalog pass. Every API write catches up before
it answers, so collapsing is right at once; bulk writes of the indexer are caught up by the next search
that collapses, or by ``python -m indexer duplicates`` (the whole pass). Groups formed at another
threshold or in another embedding space are formed anew: by a live pass when the catalog is small
(VITRINE_DUPLICATE_LIVE_PASS_MAX_IMAGES), else a ``Conflict`` that names the command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from search.catalog.duplicate_calibration import Fit, fit_threshold
from search.catalog.duplicate_store import DECISIONS, DuplicateStore, Group, GroupsState
from search.catalog.duplicates import DuplicateFinder, Match, Pairs, group_pairs
from search.catalog.records import ProductRecord
from search.catalog.store import Catalog
from search.catalog.sync import IndexSync
from search.errors import BadInput, Conflict, NotFound

# Past this many products to form again, a catch-up is a whole pass (one search per image costs more).
CATCH_UP_LIMIT = 5_000


class DuplicateService:
    def __init__(
        self,
        catalog: Catalog,
        sync: IndexSync,
        *,
        default_threshold: float,
        live_pass_max_images: int,
    ) -> None:
        self.catalog = catalog
        self.sync = sync
        self.store = DuplicateStore(catalog)
        self.finder = DuplicateFinder(catalog, self.store, sync)
        self.default_threshold = default_threshold
        self.live_pass_max_images = live_pass_max_images
        self._lock = threading.Lock()  # one catch-up at a time in this process

    # The threshold ---------------------------------------------------------------------------------------

    def threshold(self, state: GroupsState | None = None) -> float:
        """The catalog's calibrated threshold for its embedding space, else the configured default."""
        state = state or self.store.state()
        if state.threshold is not None and state.threshold_model == self.sync.model:
            return float(state.threshold)
        return self.default_threshold

    @staticmethod
    def check_threshold(value: float | None) -> None:
        if value is not None and not (isinstance(value, int | float) and 0 < value <= 1):
            raise BadInput("threshold must be a number above 0 and at most 1")

    # One product ---------------------------------------------------------------------------------------

    def of_product(self, external_id: str, threshold: float | None, limit: int) -> list[Match]:
        self.check_threshold(threshold)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadInput("limit must be an integer from 1 to 1000")
        record = self._record(external_id)
        self.sync.refresh()
        return self.finder.of_product(record.id, threshold or self.threshold(), limit)

    def of_new_images(self, record: ProductRecord, image_ids: set[int]) -> list[Match]:
        """Duplicates of a write's new or changed images (``possible_duplicates`` of a PUT answer)."""
        if not image_ids:
            return []
        images = [image for image in self.finder.images_of(record.id) if image[0] in image_ids]
        return [m for m in self.finder.of_images(record.id, images, self.threshold()) if m.image in image_ids]

    # Groups ---------------------------------------------------------------------------------------------

    def catch_up(self, *, required: bool = True) -> bool:
        """Bring the stored groups to the catalog's revision. Not ``required`` (after a write): only the
        written products are formed again, and groups not formed yet are left to the next reader (False);
        required, they are formed by a whole pass if the catalog is small enough, else ``Conflict``."""
        with self._lock:
            self.sync.refresh()
            state = self.store.state()
            threshold = self.threshold(state)
            revision = self.catalog.revision()
            formed = state.groups_threshold == threshold and state.groups_model == self.sync.model
            if formed and state.groups_revision == revision:
                return True  # dirty marks come with a removal, which moves the revision
            changed = (
                set(self.store.changed_since(state.groups_revision)) | set(self.store.dirty())
                if formed
                else set()
            )
            if formed and len(changed) <= CATCH_UP_LIMIT:
                self._regroup(changed, threshold, groups_revision=revision)
                return True
            if not required:
                return False
            if self.catalog.count_images(self.sync.model) > self.live_pass_max_images:
                raise Conflict(
                    f"duplicate groups at threshold {threshold} are not formed for the catalog as it is now; "
                    "run `python -m indexer duplicates` (the whole-catalog pass)"
                )
            self._store_pass(self.finder.all_pairs(threshold), threshold, revision)
            return True

    def full_pass(
        self, threshold: float | None = None, progress: Callable[[int], None] | None = None
    ) -> tuple[Pairs, list[Group], bool]:
        """The whole-catalog pass at ``threshold`` (default the catalog's): its pairs and groups. Stored
        (the groups collapse follows) when it is the catalog's threshold."""
        self.check_threshold(threshold)
        with self._lock:
            self.sync.refresh()
            catalog_threshold = self.threshold()
            threshold = threshold or catalog_threshold
            revision = self.catalog.revision()
            pairs = self.finder.all_pairs(threshold, progress=progress)
            groups = _groups_of(pairs)
            stored = threshold == catalog_threshold
            if stored:
                self.store.write_groups(
                    [],
                    groups,
                    replace_all=True,
                    groups_threshold=threshold,
                    groups_model=self.sync.model,
                    groups_revision=revision,
                )
            return pairs, groups, stored

    def list_groups(self, threshold: float | None, offset: int, limit: int) -> tuple[list[Group], int, float]:
        """A page of groups (the stored ones; at another threshold, a live pass over a small catalog)."""
        self.check_threshold(threshold)
        catalog_threshold = self.threshold()
        if threshold is None or threshold == catalog_threshold:
            self.catch_up()
            groups, total = self.store.list_groups(offset, limit)
            return groups, total, catalog_threshold
        if self.catalog.count_images(self.sync.model) > self.live_pass_max_images:
            raise Conflict(
                "groups at another threshold than the catalog's need a whole-catalog pass: run "
                f"`python -m indexer duplicates --threshold {threshold}`"
            )
        self.sync.refresh()
        groups = sorted(_groups_of(self.finder.all_pairs(threshold)), key=lambda g: g.representative)
        return groups[offset : offset + limit], len(groups), threshold

    def groups_of(self, product_ids: list[int]) -> dict[int, int]:
        return self.store.groups_of(product_ids)

    def group_members(self, group_ids: list[int]) -> dict[int, list[int]]:
        return {gid: group.products for gid, group in self.store.groups(group_ids).items()}

    def _store_pass(self, pairs: Pairs, threshold: float, revision: int) -> None:
        self.store.write_groups(
            [],
            _groups_of(pairs),
            replace_all=True,
            groups_threshold=threshold,
            groups_model=self.sync.model,
            groups_revision=revision,
        )

    def _regroup(self, products: set[int], threshold: float, **state: object) -> None:
        """Form again the groups of ``products`` (and of their current mates): each joins a standing
        group it links to in full, or forms a new one with its other links; one search per image."""
        current = self.store.groups_of(products)
        standing = self.store.groups(set(current.values()))
        touched = set(products) | {p for gid in current.values() for p in standing[gid].products}
        alive = self.store.existing(touched)
        links: dict[int, dict[int, float]] = {}

        def linked(product: int) -> dict[int, float]:
            if product not in links:
                found = self.finder.of_product(product, threshold)
                links[product] = {m.product: m.score for m in found}
            return links[product]

        outside = {
            gid: g
            for gid, g in self.store.groups(
                {g for p in alive for g in self.store.groups_of(linked(p)).values()}
            ).items()
            if gid not in standing
        }
        group_of = {p: gid for gid, g in outside.items() for p in g.products}
        joined: list[tuple[int, int, float, float]] = []
        placed: set[int] = set()
        for product in sorted(alive, key=lambda p: (-len(linked(p)), p)):
            links_here = linked(product)
            for gid in sorted(
                {group_of[p] for p in links_here if p in group_of}, key=lambda g: (-links_here.get(g, 0.0), g)
            ):
                group = outside[gid]
                if all(member in links_here for member in group.products):
                    lowest = min(group.min_score, *(links_here[m] for m in group.products))
                    joined.append((product, gid, links_here.get(gid, lowest), lowest))
                    outside[gid] = Group(
                        gid, (*group.members, (product, links_here.get(gid, lowest))), lowest
                    )
                    group_of[product] = gid
                    placed.add(product)
                    break
        formed = group_pairs(
            [p for p in alive if p not in placed],
            lambda p: {q: s for q, s in linked(p).items() if q in alive or q not in group_of},
            taken=lambda p: p in placed or (p in group_of and p not in alive),
        )
        self.store.write_groups(touched, formed, joined, **state)

    # Calibration -----------------------------------------------------------------------------------------

    def calibrate(self, labelled: list[tuple[str, str, bool]], precision: float) -> Fit:
        """Fit the threshold on labelled product pairs (each scored by its best image pair, from the stored
        vectors), store it as the catalog's for its embedding space, and form the groups at it."""
        records = self.catalog.get_many([i for a, b, _ in labelled for i in (a, b)])
        missing = sorted({i for a, b, _ in labelled for i in (a, b)} - set(records))
        if missing:
            raise NotFound(f"no product with id {missing[0]!r} (and {len(missing) - 1} more)")
        scores = [self.pair_score(records[a], records[b]) for a, b, _ in labelled]
        fit = fit_threshold(scores, [label for _, _, label in labelled], precision)
        self.store.set_state(
            threshold=fit.threshold, threshold_model=self.sync.model, calibration=fit.as_dict()
        )
        return fit

    def pair_score(self, a: ProductRecord, b: ProductRecord) -> float:
        """The best image-pair cosine of two products (1 when they share a content hash)."""
        if {i.image_sha256 for i in a.images if i.image_sha256} & {i.image_sha256 for i in b.images}:
            return 1.0
        return self.finder.best_pair(a.id, b.id, self.finder.images_of(a.id)).score

    # Decisions -------------------------------------------------------------------------------------------

    def decide(self, external_ids: list[str], decision: str) -> tuple[str, str]:
        a, b = self._pair(external_ids)
        if decision not in DECISIONS:
            raise BadInput(f"decision must be one of {', '.join(DECISIONS)}")
        self.store.decide(a.id, b.id, decision)
        self._regroup_now({a.id, b.id})
        return a.external_id, b.external_id

    def forget(self, external_ids: list[str]) -> None:
        a, b = self._pair(external_ids)
        if not self.store.forget(a.id, b.id):
            raise NotFound(f"no decision on {a.external_id!r} and {b.external_id!r}")
        self._regroup_now({a.id, b.id})

    def decisions(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        rows, total = self.store.list_decisions(offset, limit)
        return [
            {"products": [a, b], "decision": decision, "decided_at": when} for a, b, decision, when in rows
        ], total

    def _regroup_now(self, products: set[int]) -> None:
        with self._lock:
            state = self.store.state()
            if state.groups_threshold == self.threshold(state) and state.groups_model == self.sync.model:
                self.sync.refresh()
                self._regroup(products, self.threshold(state))

    def _pair(self, external_ids: object) -> tuple[ProductRecord, ProductRecord]:
        if (
            not isinstance(external_ids, list)
            or len(external_ids) != 2
            or not all(isinstance(i, str) for i in external_ids)
        ):
            raise BadInput('products must be a list of two product ids, e.g. ["a", "b"]')
        if external_ids[0] == external_ids[1]:
            raise BadInput("a decision names two different products")
        first, second = (self._record(i) for i in external_ids)
        return first, second

    def _record(self, external_id: str) -> ProductRecord:
        record = self.catalog.get(external_id)
        if record is None:
            raise NotFound(f"no product with id {external_id!r}")
        return record


def _groups_of(pairs: Pairs) -> list[Group]:
    neighbours = pairs.neighbours()
    return group_pairs(list(neighbours), lambda p: neighbours.get(p, {}))
