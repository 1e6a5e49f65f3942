"""IVF over 8-bit scalar-quantised vectors, with exact re-scoring from float32 rows on disk.

Memory: one byte per dimension (768 MB for a million 768-d vectors) instead of four; the float32 rows
stay in a file written once, read by positional reads for just the few hundred candidates of a query
(and for small filtered sets, scanned exactly). Scores returned are exact cosines.

The IVF part (the "base") is immutable once built; vectors are addressed by slot. Changes since the
build are visible at once: a replaced or removed vector's slot is marked dead (masked out of every
search), and new versions go to a small exact side index searched alongside. A rebuild folds them in.

On a GPU (``to_gpu``) the immutable base is copied once and never goes stale: the dead marks stay on
the host and are applied to its candidates. It serves the candidate step of unfiltered searches (with
or without exclusions) and of tuning; filtered searches, the side index and re-scoring stay on the CPU.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from search.index import tuning
from search.index.errors import IndexFileError
from search.index.exact import ExactStore
from search.index.file_format import check_part, write_part
from search.index.gpu import DeviceCopy, GpuIvf, copy_to_gpu, drop_gpu_copy
from search.index.row_file import RowFile, read_chunks, rows_at
from search.index.selectors import bitmap_selector, packed_selector
from search.index.spec import IndexSpec

# Filtered search by how many vectors the filter allows:
# - up to EXACT_FILTER_LIMIT: score exactly those float32 rows (scattered reads from the file);
# - up to SELECTIVE_SHARE of the base: every list is scanned, only the allowed codes are scored, and the
#   best candidates re-scored exactly (scattered row reads get slow past a few thousand rows);
# - broader: IVF with the filter as a selector and proportionally more probes.
EXACT_FILTER_LIMIT = 2_000
SELECTIVE_SHARE = 0.05
# k-means on a bounded sample: training costs sample * nlist * dim per iteration (FAISS's default, up
# to 256 points per list, made it the largest phase of a build at 1M). 32 points per list: with 20,
# text queries on hard data needed 320 probes instead of 256 (bench/RESULTS.md).
TRAIN_POINTS_PER_LIST = 32
TRAIN_ITERATIONS = 10
# near_pairs: the lists a vector visits besides its own (its next-nearest centroids); a side-index
# vector's pairs are among its nearest MAX_NEAR. Looking for the next-nearest only among the centroids
# nearest a vector's own missed 6 of 1,000 planted pairs at 768-d: it can rank 100th there.
NEAR_VISITS = 1
MAX_NEAR = 1000
# Tuning: image-like recall is measured on `queries` stored vectors (200 by default), text-like recall on
# up to this many of the text-side queries given (the server gives at most 300 catalog texts or served
# queries).
TEXT_QUERIES = 500


@dataclass
class BaseFiles:
    """The immutable files of one built base, named by a generation token."""

    generation: str
    count: int
    raw_sha256: str = ""
    ivf_sha256: str = ""

    @staticmethod
    def raw_path(state_path: Path, generation: str) -> Path:
        return state_path.with_name(f"{state_path.name}.{generation}.f32")

    @staticmethod
    def ivf_path(state_path: Path, generation: str) -> Path:
        return state_path.with_name(f"{state_path.name}.{generation}.ivf")


@dataclass
class Tuning:
    nprobe: int
    recall: dict[str, float] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    table: dict[str, dict[str, float]] = field(default_factory=dict)


class IvfStore:
    kind = "ivf"

    def __init__(
        self,
        dim: int,
        spec: IndexSpec,
        ivf: faiss.Index,
        raw: np.ndarray,
        slot_ids: np.ndarray,
        files: BaseFiles,
        tuned: Tuning,
        dead: np.ndarray | None = None,
        delta: ExactStore | None = None,
    ) -> None:
        self.dim = dim
        self.spec = spec
        self.ivf = ivf
        self.raw = raw  # float32 rows by slot, on disk
        self.slot_ids = slot_ids
        order = np.argsort(slot_ids, kind="stable")
        self._sorted_ids, self._sorted_slots = slot_ids[order], order.astype(np.int64)
        self.files = files
        self.tuned = tuned
        self.dead = dead if dead is not None else np.zeros(len(slot_ids), dtype=bool)
        self.delta = delta or ExactStore(dim)
        self._live_base = int((~self.dead).sum())
        self._live_bitmap: np.ndarray | None = None
        self.gpu: GpuIvf | None = None
        self.gpu_error: str | None = None

    # Building ------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        dim: int,
        spec: IndexSpec,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        state_path: Path,
        text_samples: np.ndarray | None = None,
        text_source: str = "given",
    ) -> IvfStore:
        """Stream the vectors to a new float32 file, train and fill the IVF, tune its probe count."""
        generation = secrets.token_hex(6)
        raw_path = BaseFiles.raw_path(state_path, generation)
        ids: list[np.ndarray] = []
        clock = _Stopwatch()

        def write_rows(path: Path) -> None:
            with open(path, "wb") as handle:
                for batch_ids, vectors in batches:
                    ids.append(np.asarray(batch_ids, np.int64))
                    handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())

        raw_sha = write_part(raw_path, write_rows)
        clock.lap("read and write rows")
        slot_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        count = len(slot_ids)
        if len(np.unique(slot_ids)) != count:
            raw_path.unlink(missing_ok=True)
            raise ValueError("the vectors to build from hold an id twice")
        raw = RowFile.open(raw_path, count, dim)
        nlist = spec.ivf_nlist or int(np.clip(round(4 * np.sqrt(count)), 1, max(1, count // 40)))
        nlist = min(nlist, max(1, count))
        ivf = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        ivf.cp.niter = TRAIN_ITERATIONS
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST  # FAISS would subsample to 256 per list
        ivf.cp.min_points_per_centroid = 1  # and warn below 39 per list: fewer is the plan here
        rng = np.random.default_rng(0)
        sample_size = min(count, TRAIN_POINTS_PER_LIST * nlist)
        train_slots = np.sort(rng.choice(count, sample_size, replace=False)) if count else np.zeros(0, int)
        # One sequential read of the file, not a read per sampled row.
        training = rows_at(raw_path, count, dim, train_slots) if count else np.zeros((1, dim), np.float32)
        ivf.train(training)
        del training
        clock.lap("train")
        for _, chunk in read_chunks(raw_path, count, dim):
            ivf.add(chunk)  # ids = slots 0..count-1
        clock.lap("add")
        ivf_path = BaseFiles.ivf_path(state_path, generation)
        ivf_sha = write_part(ivf_path, lambda path: faiss.write_index(ivf, str(path)))
        files = BaseFiles(generation, count, raw_sha, ivf_sha)
        store = cls(dim, spec, ivf, raw, slot_ids, files, Tuning(nprobe=spec.ivf_nprobe or min(nlist, 16)))
        clock.lap("write")
        store.tuned = store.tune(text_samples, text_source=text_source)
        clock.lap("tune")
        store.tuned.samples["build_seconds"] = clock.laps
        return store

    def tune(
        self, text_samples: np.ndarray | None = None, queries: int = 200, text_source: str = "given"
    ) -> Tuning:
        """Measure recall@10 against exact search; choose the probe count unless the spec fixes it.
        ``text_source`` says what ``text_samples`` are (search.index.tuning_queries decides)."""
        live = np.flatnonzero(~self.dead)
        if len(live) == 0:
            return Tuning(nprobe=self.tuned.nprobe)
        rng = np.random.default_rng(1)
        picked = np.sort(rng.choice(live, min(queries, len(live)), replace=False))
        catalog_queries = self.raw.read(picked)
        if text_samples is not None and len(text_samples) >= 20:
            # Every text-side query given, up to TEXT_QUERIES: text recall varies more from query to
            # query than image recall, so its estimate needs the larger sample.
            chosen = rng.choice(len(text_samples), min(TEXT_QUERIES, len(text_samples)), replace=False)
            text_queries = np.ascontiguousarray(text_samples[chosen], np.float32)
        else:
            text_queries, text_source = tuning.far_proxies(catalog_queries), "far proxies of catalog vectors"
        k = 10
        both = np.concatenate([catalog_queries, text_queries])
        truth = tuning.exact_top_k(self.iter_live(), both, k)
        samples = {
            "image_like": (catalog_queries, truth[: len(catalog_queries)]),
            "text_like": (text_queries, truth[len(catalog_queries) :]),
        }

        def search_ids(batch: np.ndarray, nprobe: int) -> list[np.ndarray]:
            # The whole sample in one IVF search (FAISS spreads queries over its threads), then each
            # query's candidates re-scored and merged with the side index as a served search would.
            candidates = self._candidates(batch, max(self.spec.rerank, 4 * k), nprobe)
            found = []
            for query, slots in zip(batch, candidates, strict=True):
                scores, ids = self._rescore(query[None], slots[slots >= 0], k)
                found.append(self._merge_delta(query[None], k, None, [], scores, ids)[1])
            return found

        nlist = int(self.ivf.nlist)
        if self.spec.ivf_nprobe:
            nprobe = min(self.spec.ivf_nprobe, nlist)
            table = {
                str(nprobe): {
                    n: tuning.recall_at_k(search_ids(q, nprobe), t) for n, (q, t) in samples.items()
                }
            }
        else:
            nprobe, table = tuning.choose_probes(search_ids, samples, self.spec.recall_target, nlist)
        return Tuning(
            nprobe=nprobe,
            recall=table[str(nprobe)],
            samples={
                "image_like": len(catalog_queries),
                "text_like": len(text_queries),
                "text_source": text_source,
            },
            table=table,
        )

    # Reads ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live_base + len(self.delta)

    def ids(self) -> np.ndarray:
        return np.concatenate([self.slot_ids[~self.dead], self.delta.ids()])

    def iter_live(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of every live vector, in chunks."""
        for start, chunk in read_chunks(self.raw.path, len(self.slot_ids), self.dim):
            alive = np.flatnonzero(~self.dead[start : start + len(chunk)])
            if len(alive):
                yield self.slot_ids[alive + start], chunk[alive]
        if len(self.delta):
            ids = self.delta.ids()
            yield ids, np.stack([self.delta.reconstruct(int(i)) for i in ids])

    def slots_of(self, ids: np.ndarray) -> np.ndarray:
        """Base slot of each id, -1 where the base does not hold it."""
        if len(self._sorted_ids) == 0:
            return np.full(len(ids), -1, np.int64)
        where = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[where] == ids, self._sorted_slots[where], -1)

    def reconstruct(self, vector_id: int) -> np.ndarray | None:
        found = self.delta.reconstruct(vector_id)
        if found is not None:
            return found
        slot = int(self.slots_of(np.array([vector_id], np.int64))[0])
        if slot < 0 or self.dead[slot]:
            return None
        return self.raw.read(np.array([slot]))[0]

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: list[int],
        nprobe: int | None = None,
        share: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        nprobe = nprobe or self.tuned.nprobe
        if share < 1:
            nprobe = _widened(nprobe, share, int(self.ivf.nlist))
        base_scores, base_ids = self._search_base(query, k, allowed, excluded, nprobe)
        return self._merge_delta(query, k, allowed, excluded, base_scores, base_ids)

    def neighbours(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched k-NN by the 8-bit codes (approximate scores, no re-scoring: a whole-catalog pass reads
        no float32 rows), merged with the side index (exact)."""
        n = len(queries)
        scores = np.full((n, k), -np.inf, np.float32)
        ids = np.full((n, k), -1, np.int64)
        if self._live_base:
            probes = int(min(nprobe or self.tuned.nprobe, self.ivf.nlist))
            if self._live_base == len(self.slot_ids):
                params = faiss.SearchParametersIVF(nprobe=probes)
            else:
                selector = packed_selector(self._live_packed(), len(self.slot_ids))
                params = faiss.SearchParametersIVF(sel=selector, nprobe=probes)
            base_scores, slots = self.ivf.search(queries, k, params=params)
            found = slots >= 0
            scores = np.where(found, base_scores, -np.inf).astype(np.float32)
            ids = np.where(found, self.slot_ids[np.maximum(slots, 0)], -1)
        if len(self.delta):
            delta_scores, delta_ids = self.delta.neighbours(queries, k)
            delta_scores = np.where(delta_ids >= 0, delta_scores, -np.inf)
            scores = np.concatenate([scores, delta_scores], axis=1)
            ids = np.concatenate([ids, delta_ids], axis=1)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        return scores, ids

    def near_pairs(
        self, cut: float, visits: int = NEAR_VISITS
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every pair of live base vectors with cosine >= ``cut``: (ids, ids, exact scores) list by list.

        A self-join inside the inverted lists instead of a k-NN search per vector: each list is joined
        with the vectors for which it is one of the ``visits`` next-nearest centroids, so a near pair
        split by a list boundary is still inside one block (a near copy's own list is, almost always,
        its original's nearest or next-nearest). Cost: each vector's nearest centroids (the coarse step
        a k-NN search pays too), then a product of each block (a list and its visitors, about twice a
        list) with itself from the float32 rows, instead of scanning ~nprobe lists of codes per vector.
        Reads only what a build wrote (and the dead marks).
        """
        nlist = int(self.ivf.nlist)
        invlists = self.ivf.invlists
        members = []
        for number in range(nlist):
            size = invlists.list_size(number)
            members.append(
                faiss.rev_swig_ptr(invlists.get_ids(number), size).copy() if size else np.zeros(0, np.int64)
            )
        visitors: list[list[np.ndarray]] = [[] for _ in range(nlist)]
        if visits > 0 and nlist > 1:
            for start, chunk in read_chunks(self.raw.path, len(self.slot_ids), self.dim):
                _, nearest = self.ivf.quantizer.search(chunk, min(nlist, 1 + visits))
                for column in range(1, nearest.shape[1]):  # the next-nearest lists, each as a visit
                    lists = nearest[:, column]
                    order = np.argsort(lists, kind="stable")
                    bounds = np.searchsorted(lists[order], np.arange(nlist + 1))
                    for number in np.flatnonzero(np.diff(bounds)):
                        visitors[number].append(order[bounds[number] : bounds[number + 1]] + start)
        for number in range(nlist):
            block = np.unique(np.concatenate([members[number], *visitors[number]]))
            block = block[~self.dead[block]]
            if len(block) < 2:
                continue
            rows = self.raw.read(block)
            gram = rows @ rows.T
            left, right = np.nonzero(np.triu(gram >= cut, 1))
            if len(left):
                yield self.slot_ids[block[left]], self.slot_ids[block[right]], gram[left, right]

    def delta_pairs(self, cut: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``near_pairs`` of the side index's vectors (changes since the build), one search each."""
        found = []
        for vector_id in self.delta.ids():
            vector = self.delta.reconstruct(int(vector_id))
            scores, ids = self.search(vector[None], MAX_NEAR, None, [int(vector_id)])
            keep = (scores >= cut) & (ids >= 0)
            if keep.any():
                found.append((np.full(int(keep.sum()), vector_id, np.int64), ids[keep], scores[keep]))
        return found

    def _merge_delta(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: list[int],
        base_scores: np.ndarray,
        base_ids: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.delta):
            return base_scores, base_ids
        delta_scores, delta_ids = self.delta.search(query, k, allowed, excluded)
        scores = np.concatenate([base_scores, delta_scores])
        ids = np.concatenate([base_ids, delta_ids])
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top], ids[top]

    def _search_base(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, excluded: list[int], nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self._live_base == 0:
            return empty
        if allowed is not None:
            slots = self.slots_of(allowed)
            slots = slots[slots >= 0]
            slots = slots[~self.dead[slots]]
            if excluded:
                slots = np.setdiff1d(slots, self.slots_of(np.asarray(excluded, np.int64)))
            if len(slots) == 0:
                return empty
            if len(slots) <= EXACT_FILTER_LIMIT:
                return self._rescore(query, np.unique(slots), k)
            mask = np.zeros(len(self.slot_ids), dtype=bool)
            mask[slots] = True
            selector = bitmap_selector(mask)
            share = len(slots) / max(1, self._live_base)
            if share <= SELECTIVE_SHARE:
                nprobe = int(self.ivf.nlist)  # all lists: the allowed vectors, wherever they are
            else:
                nprobe = _widened(nprobe, share, int(self.ivf.nlist))
        elif excluded:
            gone = self.slots_of(np.asarray(excluded, np.int64))
            gone = gone[gone >= 0]
            wanted = max(self.spec.rerank, 4 * k)
            found = self._gpu_candidates(query, wanted, nprobe, extra=len(gone))
            if found is not None:  # the excluded dropped here, from candidates widened by their count
                slots = found[0][~np.isin(found[0], gone)][:wanted]
                return self._rescore(query, slots[slots >= 0], k)
            mask = ~self.dead
            mask[gone] = False
            selector = bitmap_selector(mask)
        else:
            return self._rescore(query, self._candidates(query, max(self.spec.rerank, 4 * k), nprobe)[0], k)
        candidates = max(self.spec.rerank, 4 * k)
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(nprobe))
        _, slots = self.ivf.search(query, candidates, params=params)
        return self._rescore(query, slots[0][slots[0] >= 0], k)

    def _candidates(self, queries: np.ndarray, candidates: int, nprobe: int) -> np.ndarray:
        """Slots of the best ``candidates`` live base vectors per query by their SQ8 codes (-1 pads)."""
        found = self._gpu_candidates(queries, candidates, nprobe)
        if found is not None:
            return found
        if self._live_base == len(self.slot_ids):
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))  # no marks: skip the bitmap test
        else:
            selector = packed_selector(self._live_packed(), len(self.slot_ids))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=int(nprobe))
        _, slots = self.ivf.search(np.ascontiguousarray(queries, np.float32), candidates, params=params)
        return slots

    def _gpu_candidates(
        self, queries: np.ndarray, candidates: int, nprobe: int, extra: int = 0
    ) -> np.ndarray | None:
        """``_candidates`` (plus ``extra``) from the GPU copy; None without one or past its limits."""
        if self.gpu is None:
            return None
        dead_count = len(self.slot_ids) - self._live_base
        try:
            return self.gpu.candidates(queries, candidates, nprobe, self.dead, dead_count, extra)
        except RuntimeError as exc:  # FAISS raises RuntimeError for CUDA errors
            drop_gpu_copy(self, exc)
            return None

    def to_gpu(self, device_copy: DeviceCopy = copy_to_gpu) -> None:
        """Serve the candidate step from a GPU copy of the base (``device_copy``: how it gets there)."""
        self.gpu = GpuIvf(self.ivf, device_copy)

    def gpu_bytes(self) -> int:
        """The base on the GPU: codes and ids, both quantisers' centroids, lists padded to 32 codes."""
        nlist, code = int(self.ivf.nlist), int(self.ivf.code_size)
        return int(self.ivf.ntotal) * (code + 8) + nlist * (2 * self.dim * 4 + 32 * code)

    def _rescore(self, query: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines of the candidates from the float32 rows (read in slot order)."""
        slots = np.sort(slots[slots >= 0])
        scores = self.raw.read(slots) @ query[0]
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top].astype(np.float32), self.slot_ids[slots[top]]

    def _live_packed(self) -> np.ndarray:
        # Rebuilt only after a change: packing a million-bit mask per query would cost ~0.3 ms.
        if self._live_bitmap is None:
            self._live_bitmap = np.packbits(~self.dead, bitorder="little")
        return self._live_bitmap

    # Changes -------------------------------------------------------------------------------------------

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._mark_dead(ids)
        self.delta.upsert(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        return self._mark_dead(ids) + self.delta.remove(ids)

    def _mark_dead(self, ids: np.ndarray) -> int:
        slots = self.slots_of(ids)
        slots = slots[slots >= 0]
        slots = slots[~self.dead[slots]]
        if len(slots):
            self.dead[slots] = True
            self._live_base -= len(slots)
            self._live_bitmap = None
        return len(slots)

    def wants_rebuild(self) -> bool:
        """The side index or the dead slots have grown enough that a rebuild pays off."""
        base = max(1, len(self.slot_ids))
        return len(self.delta) > max(1000, base // 20) or (base - self._live_base) > max(1000, base // 5)

    # Facts and persistence -----------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Resident bytes of the index itself (codes, ids, marks, side index); float32 rows are on disk."""
        codes = int(self.ivf.ntotal) * (int(self.ivf.code_size) + 8)
        return codes + self.ivf.nlist * self.dim * 4 + self.slot_ids.nbytes * 3 + self.delta.memory_bytes()

    def describe(self) -> dict[str, object]:
        return {
            "kind": "ivf",
            "quantisation": "SQ8 (exact float32 re-scoring from disk)",
            "nlist": int(self.ivf.nlist),
            "nprobe": self.tuned.nprobe,
            "rerank": self.spec.rerank,
            "recall_target": self.spec.recall_target,
            "measured_recall_at_10": self.tuned.recall,
            "tuning_samples": self.tuned.samples,
            "recall_by_nprobe": self.tuned.table,
            "base_vectors": len(self.slot_ids),
            "side_index_vectors": len(self.delta),
            "deleted_marks": len(self.slot_ids) - self._live_base,
        }

    def meta(self) -> dict[str, object]:
        return {
            "generation": self.files.generation,
            "count": self.files.count,
            "raw_sha256": self.files.raw_sha256,
            "ivf_sha256": self.files.ivf_sha256,
            "tuning": {
                "nprobe": self.tuned.nprobe,
                "recall": self.tuned.recall,
                "samples": self.tuned.samples,
                "table": self.tuned.table,
            },
        }

    def sections(self) -> list[bytes]:
        return [
            self.slot_ids.astype("<i8").tobytes(),
            np.packbits(self.dead).tobytes(),
            *self.delta.sections(),
        ]

    @classmethod
    def from_sections(
        cls, dim: int, spec: IndexSpec, meta: dict[str, Any], sections: list[bytes], state_path: Path
    ) -> IvfStore:
        files = BaseFiles(meta["generation"], int(meta["count"]), meta["raw_sha256"], meta["ivf_sha256"])
        raw_path = BaseFiles.raw_path(state_path, files.generation)
        ivf_path = BaseFiles.ivf_path(state_path, files.generation)
        check_part(raw_path, files.raw_sha256)
        check_part(ivf_path, files.ivf_sha256)
        slot_ids = np.frombuffer(sections[0], dtype="<i8").astype(np.int64)
        dead = np.unpackbits(np.frombuffer(sections[1], dtype=np.uint8), count=len(slot_ids)).astype(bool)
        if len(slot_ids) != files.count:
            raise IndexFileError(
                f"{state_path} names {files.count} base vectors but holds {len(slot_ids)} ids"
            )
        ivf = faiss.read_index(str(ivf_path))
        if ivf.ntotal != files.count:
            raise IndexFileError(f"{ivf_path.name} holds {ivf.ntotal} vectors, not {files.count}")
        raw = RowFile.open(raw_path, files.count, dim)
        saved = meta.get("tuning", {})
        tuned = Tuning(
            nprobe=int(saved.get("nprobe", 16)),
            recall=saved.get("recall", {}),
            samples=saved.get("samples", {}),
            table=saved.get("table", {}),
        )
        if spec.ivf_nprobe:
            tuned.nprobe = spec.ivf_nprobe
        delta = ExactStore.from_sections(dim, sections[2:])
        return cls(dim, spec, ivf, raw, slot_ids, files, tuned, dead, delta)


def _widened(nprobe: int, share: float, nlist: int) -> int:
    """Probes for a search of which only ``share`` counts (a filter): a filter leaves fewer candidates
    per list, so more lists are probed (by 1/sqrt(share): measured to keep the recall target)."""
    return int(min(nlist, np.ceil(nprobe / np.sqrt(max(share, 1e-6)))))


class _Stopwatch:
    """Seconds per build phase, kept with the tuning facts (what a 10x larger build would cost)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now
