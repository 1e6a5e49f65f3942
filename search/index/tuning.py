"""Recall measurement against exact search, and the choice of an IVF probe count from it.

Text queries sit across SigLIP's modality gap, far from every image vector; their nearest images are
spread over many IVF lists, so a probe count that serves image-like queries loses text recall. The
probe count is therefore chosen on two samples: catalog vectors (image-like queries) and text-side
vectors (served text queries, title embeddings, or, when none are known, far proxies made from the
catalog), as the smallest that reaches the recall target on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

# Steps of at most 1.5x (1.33x past 256: hard text data needs 256-384 probes at 100k).
PROBE_LADDER = (
    *(1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    *(320, 384, 512, 768, 1024, 1536, 2048),
)
# Recall measured on a few hundred queries is an estimate: a probe count is chosen when the lower end
# of a one-sided 99% interval (mean - 2.326 standard errors) reaches the target, so the recall served
# to queries like the sample stays at or above it. 95% (1.645) was not enough: on a 200k catalog of
# vague text queries (bench/bench_text_tuning.py, `harder`) the tuning sample's 95% bound reached 0.95
# and 300 held-out queries of the same kind were served 0.946.
Z_LOWER = 2.326


def exact_top_k(chunks: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top ``k`` per query (-1 pads), scanning (ids, vectors) chunks once."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    for ids, vectors in chunks:
        if len(ids) == 0:
            continue
        scores = queries @ np.asarray(vectors, dtype=np.float32).T
        scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else None
        if top is not None:
            best_scores = np.take_along_axis(scores, top, axis=1)
            best_ids = np.take_along_axis(all_ids, top, axis=1)
        else:
            best_scores, best_ids = scores, all_ids
    return best_ids


def recall_per_query(found: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Per query, the share of its true top-k (ignoring -1 pads) that the search found."""
    out = []
    for got, expected in zip(found, truth, strict=True):
        expected = expected[expected >= 0]
        out.append(len(np.intersect1d(got, expected)) / len(expected) if len(expected) else 1.0)
    return np.asarray(out, dtype=np.float64)


def recall_at_k(found: list[np.ndarray], truth: np.ndarray) -> float:
    per_query = recall_per_query(found, truth)
    return float(per_query.mean()) if len(per_query) else 1.0


def lower_bound(per_query: np.ndarray) -> float:
    if len(per_query) < 2:
        return float(per_query.mean()) if len(per_query) else 1.0
    return float(per_query.mean() - Z_LOWER * per_query.std(ddof=1) / np.sqrt(len(per_query)))


def far_proxies(sample: np.ndarray, seed: int = 0) -> np.ndarray:
    """Text-like stand-ins when no text-side vector is known: catalog vectors with the catalog's mean
    direction taken out and noise added, so they are far from every stored vector (cosine ~0.1-0.2 to
    the best) yet about some of them, as text queries are."""
    rng = np.random.default_rng(seed)
    centred = sample - sample.mean(axis=0)
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    noise = rng.standard_normal(sample.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    proxies = 0.2 * centred + noise
    return (proxies / np.linalg.norm(proxies, axis=1, keepdims=True)).astype(np.float32)


def choose_probes(
    search_ids: Callable[[np.ndarray, int], list[np.ndarray]],
    samples: dict[str, tuple[np.ndarray, np.ndarray]],
    target: float,
    nlist: int,
) -> tuple[int, dict[str, dict[str, float]]]:
    """The smallest probe count whose recall surely reaches ``target`` (99% lower bound) on every sample.

    ``samples`` maps a name to (queries, exact top-k ids); returns (probes, recall by probes and name).
    """
    table: dict[str, dict[str, float]] = {}
    ladder = [p for p in PROBE_LADDER if p < nlist] + [nlist]
    for probes in ladder:
        per_query = {
            name: recall_per_query(search_ids(q, probes), truth) for name, (q, truth) in samples.items()
        }
        table[str(probes)] = {name: round(float(values.mean()), 4) for name, values in per_query.items()}
        if all(lower_bound(values) >= target for values in per_query.values()):
            return probes, table
    return nlist, table
