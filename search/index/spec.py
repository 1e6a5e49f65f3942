"""Which vector index to build: a plain value, so settings can name it without importing FAISS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]
IndexDevice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class IndexSpec:
    kind: IndexKind = "auto"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    # auto: exact below this many vectors (about 15 ms per query at 768-d on two cores), ivf above.
    exact_limit: int = 50_000
    # ivf: the recall@10 the probe count is tuned to, on image-like and text-like samples alike.
    recall_target: float = 0.95
    ivf_nlist: int = 0  # 0: about 4 * sqrt(vectors)
    ivf_nprobe: int = 0  # 0: tuned to recall_target when the index is built
    rerank: int = 100  # candidates re-scored exactly from the float32 rows (at least 4 * k)
    # Where searches run (search.index.gpu.choose_device); not a property of the index file.
    device: IndexDevice = "auto"

    def resolve(self, count: int) -> IndexKind:
        """The concrete kind for a catalog of ``count`` vectors."""
        if self.kind != "auto":
            return self.kind
        return "flat" if count < self.exact_limit else "ivf"

    def accepts(self, kind: str) -> bool:
        """Whether an index of ``kind`` serves this spec (auto: a background rebuild switches kinds)."""
        return kind in ("flat", "ivf") if self.kind == "auto" else kind == self.kind

    def outgrown(self, kind: str, count: int) -> bool:
        """auto: the catalog has grown past (or shrunk well below) what ``kind`` is chosen for."""
        if self.kind != "auto":
            return False
        return (kind == "flat" and count >= self.exact_limit) or (
            kind == "ivf" and count < self.exact_limit // 2
        )

    def describe(self, kind: str | None = None) -> str:
        kind = kind or self.kind
        if kind == "auto":
            return f"auto (exact below {self.exact_limit} vectors, IVF-SQ8 above; recall target {self.recall_target})"
        if kind == "flat":
            return "IDMap2,Flat,IP (exact cosine)"
        if kind == "ivf":
            return f"IVF,SQ8,IP + exact re-scoring (approximate; recall target {self.recall_target})"
        return f"HNSW{self.hnsw_m},Flat,IP (approximate; efSearch {self.hnsw_ef_search})"
