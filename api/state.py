"""What a running server holds: its settings, the loaded runtime (once ready) and its admission count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from search.errors import NotReady, Overloaded
from search.settings import Settings

if TYPE_CHECKING:
    from search.products import ProductService
    from search.runtime import InferenceRuntime


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: InferenceRuntime | None = None
        self.load_error: str | None = None
        self.in_flight = 0

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    def require_runtime(self) -> InferenceRuntime:
        if self.runtime is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly (GET /ready)")
        return self.runtime

    def require_products(self) -> ProductService:
        runtime = self.require_runtime()
        if runtime.products is None:
            raise NotReady("the product catalog is not enabled on this server")
        return runtime.products

    def readiness(self) -> dict[str, object]:
        """Extra facts for GET /ready once the model is loaded: the index and its size."""
        products = self.runtime.products if self.runtime else None
        if products is None:
            return {"index": {"loaded": False}}
        products.refresh()
        return {"index": {"loaded": True, "size": len(products.index), "revision": products.index.revision}}

    def catalog_info(self) -> dict[str, object]:
        """Catalog facts for GET /info."""
        products = self.runtime.products if self.runtime else None
        if products is None:
            return {}
        products.refresh()
        return {"catalog": {"products": products.catalog.count(), "index_vectors": len(products.index)}}

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Bounded work in flight: past the limit, answer 429 at once instead of queueing without end."""
        if self.in_flight >= self.settings.max_pending_requests:
            raise Overloaded(
                f"server is busy: {self.in_flight} requests in flight "
                f"(VITRINE_MAX_PENDING_REQUESTS={self.settings.max_pending_requests}); retry later"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
