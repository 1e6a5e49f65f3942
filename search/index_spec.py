"""Which vector index to build: a plain value, so settings can name it without importing FAISS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class IndexSpec:
    kind: Literal["flat", "hnsw"] = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256

    def describe(self) -> str:
        if self.kind == "flat":
            return "IDMap2,Flat,IP (exact cosine)"
        return f"HNSW{self.hnsw_m},Flat,IP (approximate; efSearch {self.hnsw_ef_search})"
