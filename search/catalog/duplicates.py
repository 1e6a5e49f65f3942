"""Near-duplicate products: found through the vector index, grouped without chaining.

- ``of_images``: the products with an image within ``threshold`` cosine of any of the given images
  (one widened k-NN search per image), plus every product holding an image with the same content hash
  (``exact``, score 1). The merchandiser's decisions apply: a "distinct" pair is dropped, a "duplicate"
  pair is kept whatever its score.
- ``all_pairs``: the whole catalog's duplicate pairs in one streamed pass: the stored vectors in
  batches, a batched k-NN per batch (IVF by its codes, with few probes: a near-copy lies in its
  original's list), the pairs near the threshold re-scored exactly. Memory: one batch and the pairs.
- ``group_pairs``: groups where every member is within the threshold of every other member (complete
  linkage), formed greedily from the best-connected product; A~B and B~C with A far from C is never one
  group, so a chain of look-alikes (burst shots, a colour range) does not collapse into one result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from search.catalog.duplicate_store import DuplicateStore, Group, ordered
from search.catalog.records import bytes_to_vector
from search.catalog.store import Catalog
from search.catalog.sync import IndexSync

# A per-product search asks the index for this many hits per image first, four times more while they
# all pass the threshold, up to the cap (a picture with more copies than that lists the best of them).
FIRST_K = 64
MAX_K = 4096
# The whole-catalog pass: neighbours per vector, IVF lists probed, stored vectors per batch, and how far
# below the threshold an approximate (8-bit code) score may be and still be re-scored exactly.
PASS_K = 8
PASS_NPROBE = 8
PASS_BATCH = 20_000
PASS_MARGIN = 0.02


@dataclass(frozen=True)
class Match:
    """Another product that duplicates this one: its best image pair and how it was found."""

    product: int  # the other product's row id
    score: float  # the best image-pair cosine (1 for the same content)
    image: int | None  # this product's image id of that pair
    other_image: int | None  # the other product's image id
    exact: bool = False  # the same content hash
    decided: bool = False  # a "duplicate" decision holds it here


@dataclass
class Pairs:
    """The catalog's duplicate pairs: (smaller, larger) product row id -> best score; which are exact."""

    scores: dict[tuple[int, int], float]
    exact: set[tuple[int, int]]

    def neighbours(self) -> dict[int, dict[int, float]]:
        out: dict[int, dict[int, float]] = defaultdict(dict)
        for (a, b), score in self.scores.items():
            out[a][b] = out[b][a] = score
        return out


class DuplicateFinder:
    def __init__(self, catalog: Catalog, store: DuplicateStore, sync: IndexSync) -> None:
        self.catalog = catalog
        self.store = store
        self.sync = sync

    # One product ------------------------------------------------------------------------------------

    def of_product(self, product: int, threshold: float, limit: int | None = None) -> list[Match]:
        """Every product duplicating ``product`` (row id), best first: exact copies, then by score."""
        images = self.images_of(product)
        return self.of_images(product, images, threshold, limit)

    def images_of(self, product: int) -> list[tuple[int, np.ndarray, str | None]]:
        """(image id, vector, content hash) of a product's images."""
        records = self.catalog.get_by_ids([product])
        record = records.get(product)
        if record is None:
            return []
        blobs = self.catalog.vector_bytes([product])
        return [
            (image.id, bytes_to_vector(blobs[image.id]), image.image_sha256)
            for image in record.images
            if image.id in blobs and image.embedding_model == self.sync.model
        ]

    def of_images(
        self,
        product: int,
        images: list[tuple[int, np.ndarray, str | None]],
        threshold: float,
        limit: int | None = None,
    ) -> list[Match]:
        """Products (other than ``product``) with an image within ``threshold`` of one of ``images``."""
        index = self.sync.index
        own = [image_id for image_id, _, _ in images]
        best: dict[int, Match] = {}
        hits_of: list[tuple[int, list[tuple[int, float]]]] = []
        for image_id, vector, _ in images:
            if vector.shape[-1] != index.dim:
                continue
            k = FIRST_K if limit is None else max(FIRST_K, 2 * limit)
            while True:
                hits = index.search(vector, k, excluded_ids=own, min_score=threshold)
                if len(hits) < k or k >= len(index) or k >= MAX_K:
                    break
                k *= 4
            hits_of.append((image_id, [(hit.id, hit.score) for hit in hits]))
        owners = self.catalog.owners([hit for _, hits in hits_of for hit, _ in hits])
        for image_id, hits in hits_of:
            for hit, score in hits:
                other = owners.get(hit)
                if other is None or other == product:
                    continue
                if other not in best or score > best[other].score:
                    best[other] = Match(other, float(score), image_id, hit)
        by_hash = {sha: image_id for image_id, _, sha in images if sha}
        for other, other_image, sha in self.store.same_content(list(by_hash), product):
            best[other] = Match(other, 1.0, by_hash[sha], other_image, exact=True)
        for (a, b), decision in self.store.decisions_of([product]).items():
            other = b if a == product else a
            if decision == "distinct":
                best.pop(other, None)
            elif other not in best:
                best[other] = self.best_pair(product, other, images)
        found = sorted(best.values(), key=lambda m: (not m.exact, -m.score, m.product))
        return found if limit is None else found[:limit]

    def best_pair(self, product: int, other: int, images: list[tuple[int, np.ndarray, str | None]]) -> Match:
        """A pair held by a "duplicate" decision: its best image pair, scored from the stored vectors."""
        theirs = [(i, bytes_to_vector(blob)) for i, blob in self.catalog.vector_bytes([other]).items()]
        pairs = [
            (float(mine @ vector), image_id, their_id)
            for image_id, mine, _ in images
            for their_id, vector in theirs
            if mine.shape == vector.shape
        ]
        score, image_id, their_id = max(pairs) if pairs else (0.0, None, None)
        return Match(other, score, image_id, their_id, decided=True)

    # The whole catalog ------------------------------------------------------------------------------

    def all_pairs(
        self,
        threshold: float,
        *,
        k: int = PASS_K,
        nprobe: int = PASS_NPROBE,
        batch: int = PASS_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> Pairs:
        """Every pair of products with an image pair within ``threshold``, decisions applied."""
        index = self.sync.index
        found: dict[tuple[int, int], float] = {}  # image id pairs (smaller, larger) -> exact score
        joined = index.near_pairs(threshold)
        if joined is not None:  # IVF: a self-join of its lists
            for left, right, scores in joined:
                for x, y, score in zip(left.tolist(), right.tolist(), scores.tolist(), strict=True):
                    key = ordered(x, y)
                    found[key] = max(score, found.get(key, -1.0))
                if progress is not None:
                    progress(len(left))
        else:
            self._neighbour_pairs(found, threshold, k, nprobe, batch, progress)
        kept = {pair: score for pair, score in found.items() if score >= threshold}
        owners = self.catalog.owners(list({i for pair in kept for i in pair}))
        pairs = Pairs({}, set())
        for (x, y), score in kept.items():
            a, b = owners.get(x), owners.get(y)
            if a is None or b is None or a == b:
                continue
            key = ordered(a, b)
            if score > pairs.scores.get(key, -1.0):
                pairs.scores[key] = score
        for images in self.store.shared_content():
            products = sorted({pid for pid, _ in images})
            for i, a in enumerate(products):
                for b in products[i + 1 :]:
                    pairs.scores[(a, b)] = 1.0
                    pairs.exact.add((a, b))
        self.apply_decisions(pairs, self.store.all_decisions())
        return pairs

    def _neighbour_pairs(
        self,
        found: dict[tuple[int, int], float],
        threshold: float,
        k: int,
        nprobe: int,
        batch: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        """The stored vectors in batches, a batched k-NN each; pairs near the threshold re-scored."""
        index = self.sync.index
        cut = threshold - PASS_MARGIN
        for ids, vectors in self.catalog.iter_embeddings(self.sync.model, batch):
            if len(ids) == 0 or vectors.shape[1] != index.dim:
                continue
            scores, neighbours = index.neighbours(vectors, k + 1, nprobe)
            near = (scores >= cut) & (neighbours >= 0) & (neighbours != ids[:, None])
            rows, cols = np.nonzero(near)
            for row, other in zip(rows.tolist(), neighbours[rows, cols].tolist(), strict=True):
                key = ordered(int(ids[row]), int(other))
                if key not in found:
                    vector = index.reconstruct(other)
                    if vector is not None:
                        found[key] = float(vectors[row] @ vector)
            # A vector whose every neighbour passed may have more: ask again, widening, exactly.
            crowded = np.flatnonzero(scores[:, -1] >= cut) if scores.shape[1] else []
            for row in crowded:
                for hit in index.search(
                    vectors[row], MAX_K, excluded_ids=[int(ids[row])], min_score=threshold
                ):
                    found.setdefault(ordered(int(ids[row]), hit.id), hit.score)
            if progress is not None:
                progress(len(ids))

    def apply_decisions(self, pairs: Pairs, decisions: dict[tuple[int, int], str]) -> None:
        for key, decision in decisions.items():
            if decision == "distinct":
                pairs.scores.pop(key, None)
                pairs.exact.discard(key)
            elif key not in pairs.scores:
                a, b = key
                pairs.scores[key] = self.best_pair(a, b, self.images_of(a)).score


def group_pairs(
    products: Iterable[int],
    linked: Callable[[int], dict[int, float]],
    taken: Callable[[int], bool] = lambda product: False,
) -> list[Group]:
    """Complete-linkage groups over ``products``, greedily: the product with most links first becomes a
    representative and takes its links, best first, each only if it links to every member taken so far.
    ``linked(p)``: p's links (product -> score); ``taken(p)``: p is in a group formed elsewhere."""
    order = sorted(products, key=lambda p: (-len(linked(p)), p))
    assigned: set[int] = set()
    groups = []
    for representative in order:
        if representative in assigned or taken(representative):
            continue
        members = [representative]
        scores = {representative: 1.0}
        for candidate, score in sorted(linked(representative).items(), key=lambda item: (-item[1], item[0])):
            if candidate in assigned or taken(candidate):
                continue
            if all(link_score(linked, candidate, member) is not None for member in members[1:]):
                members.append(candidate)
                scores[candidate] = score
        if len(members) < 2:
            continue
        assigned.update(members)
        lowest = min(link_score(linked, x, y) for i, x in enumerate(members) for y in members[i + 1 :])
        groups.append(Group(representative, tuple((p, scores[p]) for p in members), lowest))
    return groups


def link_score(linked: Callable[[int], dict[int, float]], a: int, b: int) -> float | None:
    """The score linking ``a`` and ``b`` as either side saw it (an approximate index need not agree)."""
    score = linked(a).get(b)
    return score if score is not None else linked(b).get(a)
