"""Evaluation runs: every judged query searched in each mode (and hybrid weight), scored by metrics.py.

The searches go through the service's own path (``ProductService.search``, in-process) or through a
running server's ``POST /search`` (``HttpSearcher``): the same bodies either way.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.errors import BadInput
from search.relevance.judgements import JudgedQuery, Judgements
from search.relevance.metrics import query_figures, summary

# A search: (query, mode, lexical weight or None, k) -> product ids, best first.
Searcher = Callable[[JudgedQuery, str, float | None, int], list[str]]


@dataclass(frozen=True)
class Variant:
    mode: str
    lexical_weight: float | None = None  # hybrid only

    @property
    def name(self) -> str:
        return self.mode if self.lexical_weight is None else f"{self.mode} w={self.lexical_weight:g}"


def variants(modes: Sequence[str], weights: Sequence[float]) -> list[Variant]:
    """Each mode once, hybrid once per weight."""
    out = []
    for mode in modes:
        if mode == "hybrid":
            out += [Variant("hybrid", weight) for weight in weights]
        else:
            out.append(Variant(mode))
    return out


def image_value(image: str, base: Path) -> str:
    """A judgements file's query_image as a request's image: a URL as it is, a path (relative to the
    judgements file) as base64 of the file."""
    if image.startswith(("http://", "https://", "data:")):
        return image
    path = Path(image) if Path(image).is_absolute() else base / image
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise BadInput(f"cannot read query_image {image}: {exc.strerror or exc}") from None


def search_body(query: JudgedQuery, mode: str, weight: float | None, k: int, base: Path) -> dict[str, Any]:
    """The /search body of a judged query."""
    body: dict[str, Any] = {"mode": mode, "k": k}
    if query.text and query.image:
        body["positive"] = [{"text": query.text}, {"image": image_value(query.image, base)}]
    elif query.text:
        body["text"] = query.text
    else:
        body["image"] = image_value(query.image or "", base)
    if weight is not None:
        body["lexical_weight"] = weight
    if query.filters:
        body["filters"] = query.filters
    return body


class ServiceSearcher:
    """Searches through the service in this process."""

    def __init__(self, service: ProductService, base: Path) -> None:
        self.service, self.base = service, base

    def __call__(self, query: JudgedQuery, mode: str, weight: float | None, k: int) -> list[str]:
        from api.schemas import parse_search  # the server's own reading of a body

        parsed: SearchQuery = parse_search(
            search_body(query, mode, weight, k, self.base), self.service.limits
        )
        return [hit.record.external_id for hit in self.service.search(parsed).hits]


class HttpSearcher:
    """Searches through a running server's POST /search."""

    def __init__(self, url: str, base: Path, token: str | None = None, timeout: float = 60.0) -> None:
        self.url, self.base, self.token, self.timeout = url.rstrip("/") + "/search", base, token, timeout

    def __call__(self, query: JudgedQuery, mode: str, weight: float | None, k: int) -> list[str]:
        data = json.dumps(search_body(query, mode, weight, k, self.base)).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise BadInput(
                f"{self.url} answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise BadInput(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None
        return [hit["id"] for hit in answer["results"]]


def runnable(query: JudgedQuery, mode: str) -> bool:
    """Lexical and hybrid rankings need a text."""
    return mode == "vector" or bool(query.text)


def evaluate(
    judgements: Judgements, search: Searcher, variants: Sequence[Variant], k: int, *, per_query: bool = False
) -> list[dict[str, Any]]:
    """One row of figures per variant (mode and weight), with each query's figures when asked."""
    rows = []
    for variant in variants:
        figures, latencies, queries = [], [], []
        for query in judgements.queries:
            if not runnable(query, variant.mode):
                continue
            started = time.perf_counter()
            results = search(query, variant.mode, variant.lexical_weight, k)
            latencies.append((time.perf_counter() - started) * 1000)
            figures.append(query_figures(results, query.grades, k))
            queries.append((query, results))
        row: dict[str, Any] = {
            "name": variant.name,
            "mode": variant.mode,
            "lexical_weight": variant.lexical_weight,
        }
        row |= summary(figures, latencies)
        if per_query:
            row["per_query"] = [
                {"query": q.label, "results": results[:k]} | (f.__dict__ if f else {"ndcg": None})
                for (q, results), f in zip(queries, figures, strict=True)
            ]
        rows.append(row)
    return rows


def weight_curve(rows: Sequence[dict[str, Any]]) -> tuple[float, list[tuple[float, float]]]:
    """(the hybrid weight with the best NDCG, the curve of (weight, NDCG)); ties go to the lower weight."""
    curve = sorted((row["lexical_weight"], row["ndcg"]) for row in rows if row["mode"] == "hybrid")
    if not curve:
        raise BadInput("--suggest-weight needs the hybrid mode")
    best = max(curve, key=lambda point: (point[1], -point[0]))
    return best[0], curve


def gate(
    current: Sequence[dict[str, Any]], previous: Sequence[dict[str, Any]], tolerance: float
) -> list[str]:
    """The variants whose NDCG fell by more than ``tolerance`` against the previous run (same names)."""
    before = {row["name"]: row["ndcg"] for row in previous}
    return [
        f"{row['name']}: NDCG {row['ndcg']:.4f} < {before[row['name']]:.4f} - {tolerance:g}"
        for row in current
        if row["name"] in before and row["ndcg"] < before[row["name"]] - tolerance
    ]


def filters_of(query: JudgedQuery, max_keys: int) -> Filters:
    return Filters.parse(query.filters, max_keys)


def examples_of(query: JudgedQuery, base: Path) -> list[Example]:
    """A judged query's examples as the core takes them (calibration reads the lists directly)."""
    examples = []
    if query.text:
        examples.append(Example(text=query.text))
    if query.image:
        examples.append(Example(image=image_value(query.image, base)))
    return examples
