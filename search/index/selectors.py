"""FAISS id selectors built from plain arrays (allow-lists, exclusions, slot masks)."""

from __future__ import annotations

import faiss
import numpy as np


def id_selector(allowed: np.ndarray | None, excluded: list[int]) -> faiss.IDSelector | None:
    keep: list[faiss.IDSelector] = []
    conditions: list[faiss.IDSelector] = []
    if allowed is not None:
        conditions.append(faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)))
    if excluded:
        inner = faiss.IDSelectorBatch(np.asarray(excluded, dtype=np.int64))
        keep.append(inner)
        conditions.append(faiss.IDSelectorNot(inner))
    if not conditions:
        return None
    selector = conditions[0] if len(conditions) == 1 else faiss.IDSelectorAnd(*conditions)
    # The SWIG wrappers do not own the selectors they wrap: keep every part alive on the outer one.
    selector.referenced_objects = keep + conditions
    return selector


def bitmap_selector(mask: np.ndarray) -> faiss.IDSelector:
    """Select positions (slots) where ``mask`` is True; the selector keeps the packed bits alive."""
    bitmap = np.packbits(mask, bitorder="little")  # FAISS reads bit (slot & 7) of byte slot >> 3
    return packed_selector(bitmap, len(mask))


def packed_selector(bitmap: np.ndarray, count: int) -> faiss.IDSelector:
    selector = faiss.IDSelectorBitmap(count, faiss.swig_ptr(bitmap))
    selector.referenced_objects = [bitmap]
    return selector
