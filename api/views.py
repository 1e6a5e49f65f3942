"""JSON views of catalog values: the HTTP shape of products and search answers (image URLs live here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from search.catalog.query import ProductHit, SearchAnswer
from search.catalog.records import ImageRecord, ProductRecord


def product_url(external_id: str) -> str:
    return f"/products/{quote(external_id, safe='')}"


def image_view(record: ProductRecord, image: ImageRecord) -> dict[str, Any]:
    return {
        "position": image.position,
        "image": image.image_ref,
        "url": f"{product_url(record.external_id)}/images/{image.position}",
    }


def product_view(record: ProductRecord) -> dict[str, Any]:
    first = record.images[0] if record.images else None
    return {
        "id": record.external_id,
        "title": record.title,
        "category": record.category,
        "attributes": record.attributes,
        "tags": record.tags,
        "image": first.image_ref if first else None,
        "image_url": f"{product_url(record.external_id)}/image",
        "images": [image_view(record, image) for image in record.images],
        "embedding_model": first.embedding_model if first else None,
        "created_at": _utc_iso(record.created_at),
        "updated_at": _utc_iso(record.updated_at),
    }


def hit_view(hit: ProductHit) -> dict[str, Any]:
    view = {"score": hit.score, **product_view(hit.record)}
    view["matched_image"] = image_view(hit.record, hit.matched_image) if hit.matched_image else None
    if (hit.vector_score is not None and hit.lexical_score is not None) or hit.lexical_score is not None:
        view["vector_score"] = hit.vector_score
        view["lexical_score"] = hit.lexical_score
    if hit.relevance is not None:
        view["relevance"] = hit.relevance  # the calibrated probability that the hit is relevant
    if hit.explain is not None:
        view["explain"] = hit.explain
    if hit.duplicates is not None:
        view["duplicates"] = hit.duplicates
    return view


def search_view(answer: SearchAnswer, offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "results": [hit_view(hit) for hit in answer.hits],
        "count": len(answer.hits),
        "offset": offset,
        "mode": answer.mode,
        "took_ms": answer.took_ms,
        "encode_ms": answer.encode_ms,
    }
    if answer.total is not None:
        out["total"] = answer.total  # a sort: how many products passed the cut-offs
    if answer.facets is not None:
        out["facets"] = answer.facets
    return out


def _utc_iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; they were written in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
