"""Which text-side queries an approximate index is tuned on: the one place that decides.

Text queries sit across the modality gap, and where their nearest images lie depends on the catalog.
Far proxies made from catalog vectors (tuning.far_proxies) are a guess at that geometry, not a
measurement: on a hard 200k catalog they tuned an IVF that served text at recall@10 0.92. So, best
first, the index is tuned on:
1. the text-side queries it has served (the query log), once there are enough of them;
2. the model's text tower on the catalog's own titles and categories (queries like the ones it will
   get, before it has served one), or on a built-in set of product phrases when the catalog has no text;
3. far proxies, only where no model is loaded (maintenance commands).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from search.index.query_log import QueryLog

# Served queries replace the text tower's stand-ins once this many are logged (a recall estimate on
# fewer is too loose to choose a probe count by), and the server re-tunes after this many more.
MIN_SERVED = 200
RETUNE_AFTER = 200
CATALOG_TEXTS = 300
MIN_TEXTS = 20

# Short shopper-style phrases over common product families: the text side when the catalog has no titles.
PRODUCT_PHRASES = tuple(
    f"{adjective} {thing}"
    for adjective in (
        "red",
        "black",
        "white",
        "blue",
        "leather",
        "wooden",
        "cotton",
        "cheap",
        "small",
        "vintage",
    )
    for thing in (
        "dress",
        "running shoes",
        "sofa",
        "table lamp",
        "backpack",
        "wrist watch",
        "coffee mug",
        "t-shirt",
        "office chair",
        "handbag",
        "sunglasses",
        "winter jacket",
        "kitchen knife",
        "phone case",
        "desk",
        "earrings",
        "jeans",
        "bed sheets",
        "water bottle",
        "toy car",
    )
)


@dataclass(frozen=True)
class TextQueries:
    """Text-side tuning queries (None: none known, the index falls back to far proxies) and their source."""

    vectors: np.ndarray | None
    source: str


class TuningQueries:
    def __init__(
        self,
        query_log: QueryLog | None,
        embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
        catalog_texts: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.query_log = query_log
        self.embed_texts = embed_texts
        self.catalog_texts = catalog_texts

    def choose(self, dim: int) -> TextQueries:
        served = self.query_log.sample(dim) if dim and self.query_log is not None else None
        if served is not None and len(served) >= MIN_SERVED:
            return TextQueries(served, f"{len(served)} served queries")
        if self.embed_texts is not None and dim:
            texts = self.catalog_texts(CATALOG_TEXTS) if self.catalog_texts else []
            source = f"text tower: {len(texts)} catalog titles and categories"
            if len(texts) < MIN_TEXTS:
                texts, source = (
                    list(PRODUCT_PHRASES),
                    f"text tower: {len(PRODUCT_PHRASES)} built-in product phrases",
                )
            vectors = np.asarray(self.embed_texts(texts), np.float32)
            if vectors.ndim == 2 and vectors.shape[1] == dim:
                return TextQueries(vectors, source)
        if served is not None and len(served) >= MIN_TEXTS:
            return TextQueries(served, f"{len(served)} served queries")
        return TextQueries(None, "far proxies of catalog vectors (no model loaded)")

    def guessed(self, text_source: str | None) -> bool:
        """Whether an index tuned on ``text_source`` had only far proxies for text (nothing measured on
        text-side queries) while this process could measure: its model's text tower is loaded."""
        return self.embed_texts is not None and (not text_source or text_source.startswith("far proxies"))

    def due(self, tuned_at: int) -> bool:
        """Enough served queries logged since the last tuning (at ``tuned_at`` adds) to tune on them."""
        log = self.query_log
        return log is not None and len(log) >= MIN_SERVED and log.added - tuned_at >= RETUNE_AFTER
