"""FAISS on the GPU: where an index searches (one pure decision) and the GPU copies that serve searches.

The CPU index stays the source of truth (writes, saves, rebuilds, reconstruct); a GPU copy only answers
the searches it answers exactly as the CPU index would. FAISS's GPU indexes ignore an ``IDSelector``
(1.8-1.14.1 ignore a flat index's search parameters and an IVF's ``sel``; 1.14.2+ pass ``sel`` on only
in cuVS builds), so no selector ever goes to the GPU: vectors replaced or removed since the copy was
made, and excluded ids, are dropped on the host from a top-k widened by their count, and allow-list
(filtered) searches run on the CPU index. GPU calls of all copies share one ``StandardGpuResources``,
which is not thread-safe: they are serialised by one lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from search.errors import IndexDeviceError
from search.index.spec import IndexDevice

log = logging.getLogger(__name__)

# IndexFlat and IndexIVFScalarQuantizer have GPU forms (as IVF-Flat and IVF-PQ do); IndexHNSW has none.
GPU_KINDS = ("flat", "ivf")
GPU_MAX_K = 2048  # the largest k (and nprobe) a FAISS GPU index selects (GPU_MAX_SELECTION_K)
GiB = 1024**3
# Scratch memory StandardGpuResources reserves on a large card (at most 1.5 GiB), and a margin over
# the index's own estimate for allocator rounding and growth by upserts.
SCRATCH_BYTES = 1536 * 1024**2
MARGIN = 1.25
DEVICE = 0  # the first GPU: one copy per process

DeviceCopy = Callable[[faiss.Index], faiss.Index]


@dataclass(frozen=True)
class Placement:
    device: Literal["cpu", "cuda"]
    reason: str


def choose_device(
    setting: IndexDevice, gpus: int, kind: str, index_bytes: int, free_bytes: int | None
) -> Placement:
    """Where an index of ``kind`` and ``index_bytes`` (on the GPU) searches, and why.

    ``auto``: the GPU when FAISS sees one, the kind has a GPU form and it fits in the free memory with
    headroom; else the CPU. ``cuda``: the GPU, or ``IndexDeviceError`` saying why not (an unknown free
    memory is tried: the copy fails clearly if it does not fit). ``cpu``: never the GPU.
    """
    if setting == "cpu":
        return Placement("cpu", "VITRINE_INDEX_DEVICE=cpu")
    needed = int(index_bytes * MARGIN) + SCRATCH_BYTES
    if gpus <= 0:
        problem = (
            "FAISS sees no GPU (faiss-cpu is installed, or no CUDA device: the `gpu` extra has faiss-gpu)"
        )
    elif kind not in GPU_KINDS:
        problem = f"FAISS has no GPU form of a {kind} index (flat and ivf have one)"
    elif free_bytes is None:
        problem = None if setting == "cuda" else "free GPU memory is unknown (torch without CUDA)"
    elif needed > free_bytes:
        problem = (
            f"the index needs about {needed / GiB:.1f} GiB on the GPU (with scratch and headroom), "
            f"{free_bytes / GiB:.1f} GiB are free"
        )
    else:
        problem = None
    if problem is None:
        free = "unknown" if free_bytes is None else f"{free_bytes / GiB:.1f} GiB"
        return Placement("cuda", f"{kind} index of {index_bytes / GiB:.2f} GiB on GPU {DEVICE} ({free} free)")
    if setting == "cuda":
        raise IndexDeviceError(f"VITRINE_INDEX_DEVICE=cuda, but {problem}")
    return Placement("cpu", problem)


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def free_gpu_bytes() -> int | None:
    """Free memory of the GPU (torch's view of the CUDA driver); None where torch has no CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info(DEVICE)[0])


_lock = threading.RLock()
_resources: list[faiss.StandardGpuResources] = []


def copy_to_gpu(index: faiss.Index) -> faiss.Index:
    """A copy of a CPU index on the GPU, in float32, by FAISS's own (non-cuVS) implementation."""
    with _lock:
        if not _resources:
            _resources.append(faiss.StandardGpuResources())
        options = faiss.GpuClonerOptions()
        if hasattr(options, "use_cuvs"):
            options.use_cuvs = False  # its selector and k limits differ; the classic kernels are checked
        return faiss.index_cpu_to_gpu(_resources[0], DEVICE, index, options)


class GpuFlat:
    """An exact inner-product copy by slot: ``slot_ids[slot]`` is the vector id there, -1 once replaced
    or removed. ``GpuIndexFlat`` appends but cannot remove, so a dead slot is dropped from a top-k
    widened by the dead count; past ``COMPACT_AFTER`` dead slots the owner makes a fresh copy."""

    COMPACT_AFTER = 1024

    def __init__(self, dim: int, ids: np.ndarray, vectors: np.ndarray, device_copy: DeviceCopy) -> None:
        with _lock:
            self.index = device_copy(faiss.IndexFlatIP(dim))
        self.slot_ids = np.zeros(0, np.int64)
        self.id_slot: dict[int, int] = {}
        self.upsert(ids, vectors)

    @property
    def dead(self) -> int:
        return len(self.slot_ids) - len(self.id_slot)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.remove(ids)
        with _lock:
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        first = len(self.slot_ids)
        self.slot_ids = np.concatenate([self.slot_ids, ids])
        self.id_slot.update((int(vector_id), first + offset) for offset, vector_id in enumerate(ids))

    def remove(self, ids: np.ndarray) -> None:
        if not self.id_slot:
            return
        for vector_id in ids:
            slot = self.id_slot.pop(int(vector_id), None)
            if slot is not None:
                self.slot_ids[slot] = -1

    def search(self, query: np.ndarray, k: int, excluded: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Top-k live ids not excluded; None when the widened k is past what the GPU selects."""
        fetch = min(k + self.dead + len(excluded), len(self.slot_ids))
        if fetch > GPU_MAX_K:
            return None
        with _lock:
            scores, slots = self.index.search(query, fetch)
        ids = np.where(slots[0] >= 0, self.slot_ids[np.maximum(slots[0], 0)], -1)
        keep = ids >= 0
        if excluded:
            keep &= ~np.isin(ids, np.asarray(excluded, np.int64))
        return scores[0][keep][:k], ids[keep][:k]


class GpuIvf:
    """A copy of an immutable IVF base (ids = slots); the owner's dead marks are applied on the host."""

    def __init__(self, ivf: faiss.Index, device_copy: DeviceCopy) -> None:
        with _lock:
            self.index = device_copy(ivf)

    def candidates(
        self, queries: np.ndarray, count: int, nprobe: int, dead: np.ndarray, dead_count: int, extra: int = 0
    ) -> np.ndarray | None:
        """Slots of the best ``count + extra`` live base vectors per query (-1 pads), as the CPU index
        with a selector of the live slots finds them; None past the GPU's k or nprobe limit.

        ``extra``: slots the caller will drop itself (excluded ids) and so asks for on top.
        """
        fetch = min(count + extra + dead_count, int(self.index.ntotal))
        if fetch > GPU_MAX_K or nprobe > GPU_MAX_K or fetch <= 0:
            return None
        params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        with _lock:
            _, slots = self.index.search(np.ascontiguousarray(queries, np.float32), fetch, params=params)
        if dead_count:
            slots = np.where((slots >= 0) & ~dead[np.maximum(slots, 0)], slots, -1)
            live_first = np.argsort(slots < 0, axis=1, kind="stable")  # keeps the live ones' ranking
            slots = np.take_along_axis(slots, live_first, axis=1)
        return slots[:, : count + extra]


def drop_gpu_copy(owner: object, exc: Exception) -> None:
    """A GPU call failed (out of memory, driver error): the owner serves from its CPU index from now on,
    which is complete (it is written first)."""
    log.error("the index's GPU copy failed (%s); searching on the CPU from now on", exc)
    owner.gpu = None  # type: ignore[attr-defined]
    owner.gpu_error = str(exc)  # type: ignore[attr-defined]
