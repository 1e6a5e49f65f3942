"""A synthetic catalog with SigLIP's modality gap: image-like vectors and text-like queries.

Images and texts live in two narrow cones (their own mean directions ``g_img`` and ``g_txt``, nearly
orthogonal), and share a low-rank semantic subspace. Two images of a cluster have cosine ~0.8, any two
images ~0.6; a text query's best image has cosine ~0.1-0.2, as with real SigLIP embeddings. Such
queries are far from every stored vector and their nearest images are spread out: the hard case for
graph and IVF indexes (``hard=True`` spreads them further).

Vectors come in chunks from a seeded generator, so a million rows never need to be in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GapModel:
    dim: int = 768
    rank: int = 64
    clusters: int = 1000
    seed: int = 12345
    hard: bool = False
    # Texts vaguer still (issue 17: a catalog where far-proxy tuning served text at 0.92): a wider
    # spread around their subject (default 1.5, 3.0 when hard) and a smaller weight on it (default 0.3).
    text_spread: float | None = None
    text_weight: float = 0.3

    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        q, _ = np.linalg.qr(rng.standard_normal((self.dim, self.rank + 2)))
        basis = q[:, : self.rank].T.astype(np.float32)  # semantic subspace
        g_img, g_txt = q[:, self.rank].astype(np.float32), q[:, self.rank + 1].astype(np.float32)
        centres = rng.standard_normal((self.clusters, self.rank)).astype(np.float32)
        return basis, g_img, g_txt, centres

    def images(self, n: int, seed: int, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vectors, cluster labels) in chunks of ``chunk`` rows."""
        basis, g_img, _, centres = self._basis()
        rng = np.random.default_rng(seed)
        spread = 1.0 if self.hard else 0.6
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            labels = rng.integers(0, self.clusters, m)
            semantic = centres[labels] + spread * rng.standard_normal((m, self.rank)).astype(np.float32)
            semantic /= np.linalg.norm(semantic, axis=1, keepdims=True)
            noise = rng.standard_normal((m, self.dim)).astype(np.float32) / np.sqrt(self.dim)
            vectors = 0.8 * g_img + 0.5 * (semantic @ basis) + 0.3 * noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            yield vectors.astype(np.float32), labels

    def texts(self, n: int, seed: int) -> np.ndarray:
        """Text-like queries: about a cluster's subject, seen from the text side of the gap."""
        basis, _, g_txt, centres = self._basis()
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, self.clusters, n)
        # Text is vaguer than a picture: its subject lies between clusters (further still when hard).
        spread = self.text_spread or (3.0 if self.hard else 1.5)
        semantic = centres[labels] + spread * rng.standard_normal((n, self.rank)).astype(np.float32)
        semantic /= np.linalg.norm(semantic, axis=1, keepdims=True)
        noise = rng.standard_normal((n, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        vectors = 0.85 * g_txt + self.text_weight * (semantic @ basis) + 0.43 * noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)

    def image_queries(self, n: int, seed: int) -> np.ndarray:
        """Image-like queries (search by photo, similar products): new images of the same clusters."""
        return next(self.images(n, seed, chunk=n))[0]
