"""A typed client for a vitrine server: search, products, embeddings, zero-shot.

    from vitrine import Client
    with Client("http://127.0.0.1:8000", token="...") as vitrine:
        hits = vitrine.search(text="beige matte ceramic floor tile", k=5)
        vitrine.put_product("sku-9", image=Path("oak.jpg"), title="Oak plank", color="oak")

Images are URLs, data URIs, raw bytes or a ``Path`` (bytes and files are sent as base64).
Every error answer raises ``VitrineAPIError`` with the server's status and message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ImageInput = str | bytes | Path


class VitrineAPIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Product:
    id: str
    title: str | None
    category: str | None
    attributes: dict[str, Any]
    image_url: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        return cls(
            id=data["id"],
            title=data.get("title"),
            category=data.get("category"),
            attributes=data.get("attributes") or {},
            image_url=data.get("image_url", ""),
            raw=data,
        )


@dataclass(frozen=True)
class SearchHit:
    score: float
    product: Product


@dataclass(frozen=True)
class SearchResults:
    hits: list[SearchHit]
    took_ms: float
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResults:
        hits = [SearchHit(float(item["score"]), Product.from_json(item)) for item in data["results"]]
        return cls(hits=hits, took_ms=float(data.get("took_ms", 0.0)), raw=data)

    @property
    def ids(self) -> list[str]:
        return [hit.product.id for hit in self.hits]


def image_value(image: ImageInput) -> str:
    """What the API accepts for an image: a URL or data URI as given, bytes and files as base64."""
    if isinstance(image, Path):
        image = image.read_bytes()
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    return image


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Catalog ------------------------------------------------------------------------------------------

    def search(
        self,
        *,
        text: str | None = None,
        image: ImageInput | None = None,
        product_id: str | None = None,
        vector: list[float] | None = None,
        k: int = 10,
        filters: dict[str, Any] | None = None,
        min_score: float | None = None,
    ) -> SearchResults:
        body: dict[str, Any] = {"k": k}
        for name, value in (("text", text), ("product_id", product_id), ("vector", vector)):
            if value is not None:
                body[name] = value
        if image is not None:
            body["image"] = image_value(image)
        if filters is not None:
            body["filters"] = filters
        if min_score is not None:
            body["min_score"] = min_score
        return SearchResults.from_json(self._call("POST", "/search", json=body))

    def similar(self, product_id: str, k: int = 10, min_score: float | None = None) -> SearchResults:
        params: dict[str, Any] = {"k": k}
        if min_score is not None:
            params["min_score"] = min_score
        return SearchResults.from_json(self._call("GET", f"{_path(product_id)}/similar", params=params))

    def get_product(self, product_id: str) -> Product:
        return Product.from_json(self._call("GET", _path(product_id)))

    def put_product(
        self,
        product_id: str,
        *,
        image: ImageInput | None = None,
        title: str | None = None,
        category: str | None = None,
        **attributes: Any,
    ) -> tuple[str, Product]:
        """Create or update; returns ("created" | "updated" | "unchanged", the stored product)."""
        body: dict[str, Any] = dict(attributes)
        if image is not None:
            body["image"] = image_value(image)
        if title is not None:
            body["title"] = title
        if category is not None:
            body["category"] = category
        answer = self._call("PUT", _path(product_id), json=body)
        return answer["status"], Product.from_json(answer["product"])

    def delete_product(self, product_id: str) -> None:
        self._call("DELETE", _path(product_id))

    def product_image(self, product_id: str) -> bytes:
        response = self._http.get(f"{_path(product_id)}/image", follow_redirects=True)
        _raise_for_error(response)
        return response.content

    # Inference ----------------------------------------------------------------------------------------

    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        rows = self._call("POST", "/", json={"inputs": texts, "parameters": {"mode": "text_embedding"}})
        return [row["embedding"] for row in rows]

    def embed_images(self, images: list[ImageInput]) -> list[list[float]]:
        inputs = [image_value(image) for image in images]
        rows = self._call("POST", "/", json={"inputs": inputs, "parameters": {"mode": "image_embedding"}})
        return [row["embedding"] for row in rows]

    def zero_shot(
        self, image: ImageInput, labels: list[str], *, multi_label: bool = False
    ) -> dict[str, float]:
        """Label -> score, best first."""
        parameters = {"candidate_labels": labels, "multi_label": multi_label}
        rows = self._call("POST", "/", json={"inputs": image_value(image), "parameters": parameters})
        return {row["label"]: float(row["score"]) for row in rows}

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def ready(self) -> bool:
        return self._http.get("/ready").status_code == 200

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for_error(response)
        return response.json()


def _path(product_id: str) -> str:
    return f"/products/{quote(product_id, safe='')}"


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    raise VitrineAPIError(response.status_code, message)
