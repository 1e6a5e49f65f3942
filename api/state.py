"""What a running server holds: its settings, the loaded components (once ready) and its admission count."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from api.metrics import Metrics, queue_gauges
from api.settings import ServerSettings
from search.errors import NotReady, Overloaded
from search.wiring import search_limits

if TYPE_CHECKING:
    from api.readiness import DatabaseProbe
    from search.catalog.service import ProductService
    from search.wiring import Components


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), for /info."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class ServiceState:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.limits = search_limits(settings)  # what a query string may ask for, as a body
        self.components: Components | None = None
        self.database_probe: DatabaseProbe | None = None  # set once a catalog is open
        self.load_error: str | None = None
        self.stopping = False  # the server is shutting down: no background export may start
        self.in_flight = 0
        self.finished = 0  # admitted requests that have ended (the memory trimmer watches it)
        self.metrics = Metrics()

    @property
    def ready(self) -> bool:
        return self.components is not None

    @property
    def saturated(self) -> bool:
        """Every admission slot is taken: new work would be answered 429."""
        return self.in_flight >= self.settings.max_pending_requests

    def require_components(self) -> Components:
        if self.components is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly (GET /ready)")
        return self.components

    def require_products(self) -> ProductService:
        components = self.require_components()
        mismatch = components.space_mismatch()
        if mismatch is not None:
            raise mismatch
        if components.products is None:
            raise NotReady("the product catalog is not enabled on this server")
        return components.products

    def model_phase(self) -> dict[str, object]:
        """What serves and what is being built: "serving torch-bfloat16; building openvino-int8, 40%"."""
        components = self.components
        if components is None:
            return {"phase": "loading the model"}
        export = components.export
        if export is not None:
            return export.status.as_dict()
        info = components.encoder.info
        serving = f"{info.runtime}-{info.dtype}"
        return {"phase": f"serving {serving}", "serving": serving, "export": "none"}

    def readiness(self, catalog_revision: int | None) -> dict[str, object]:
        """Facts for GET /ready once the model is loaded: the index, and how far behind the database it is.

        Reads no database itself (the probe hands in ``catalog_revision``) and never updates the index:
        it answers in microseconds however busy the request threads are.
        """
        components = self.components
        products = components.products if components else None
        if components is None or products is None:
            return {"model": self.model_phase(), "index": {"loaded": False}}
        index = products.index
        mismatch = components.space_mismatch()
        catalog: dict[str, object] = {"mismatch": mismatch is not None}
        if catalog_revision is not None:
            catalog["revision"] = catalog_revision
        if components.catalog_space is not None:
            catalog["embedding_space"] = components.catalog_space.as_dict()
        if mismatch is not None:
            catalog["error"] = mismatch.message
        return {
            "model": self.model_phase(),
            "index": {"loaded": True, "size": len(index), "revision": index.revision},
            "catalog": catalog,
        }

    def catalog_info(self) -> dict[str, object]:
        """Catalog facts for GET /info. Only reads: the index is shown as it is (its revision says how
        current), never brought up to date here."""
        products = self.components.products if self.components else None
        if products is None:
            return {}
        index = products.index
        return {
            "catalog": {"products": products.catalog.count(), "index_vectors": len(index)},
            "storage": self._storage(products),
            "index": {**index.describe(), "revision": index.revision, "server_rss_bytes": resident_bytes()},
        }

    @staticmethod
    def _storage(products: ProductService) -> dict[str, object]:
        """Which backends serve: the catalog's database (where reads go), the vectors, the images."""
        return {
            "database": products.catalog.describe_database(),
            "vector_backend": products.vector_backend,
            "image_store": products.image_store.kind,
        }

    def render_metrics(self) -> str:
        """The exposition text. Only reads: no database call, no index update."""
        gauges: dict[str, tuple[str, float]] = {
            "vitrine_ready": ("1 once the model (and catalog) are loaded.", float(self.ready)),
            "vitrine_requests_in_flight": ("Admitted requests being worked on.", float(self.in_flight)),
        }
        info = {"model": self.settings.model}
        if self.components is not None:
            encoder = self.components.encoder
            info |= {
                "runtime": encoder.info.runtime,
                "device": encoder.info.device,
                "dtype": encoder.info.dtype,
                "random_weights": str(encoder.info.random_weights).lower(),
            }
            export = self.components.export
            if export is not None:
                status = export.status
                gauges["vitrine_export_building"] = (
                    "1 while the faster runtime's export is built in the background.",
                    float(status.state == "building"),
                )
                gauges["vitrine_export_progress_percent"] = (
                    "How far the background export has got (100: switched to it).",
                    float(status.percent),
                )
            for tower, queue in (("image", encoder.images_queue), ("text", encoder.texts_queue)):
                gauges |= queue_gauges(tower, queue.stats)
            products = self.components.products
            if products is not None:
                index = products.index
                info["index_type"] = index.kind
                info["index_device"] = index.search_device[0]
                storage = self._storage(products)
                database = storage["database"]
                info |= {
                    "database_backend": str(database["backend"]),
                    "database_reads": str(database["reads"]),
                    "vector_backend": str(storage["vector_backend"]),
                    "image_store": str(storage["image_store"]),
                }
                if "standby_reads" in database:
                    gauges["vitrine_standby_reads"] = (
                        "Reads served by the standby since start.",
                        float(database["standby_reads"]),  # type: ignore[arg-type]
                    )
                    gauges["vitrine_standby_fallback_reads"] = (
                        "Reads sent to the primary since start: the standby had not replayed this "
                        "process's write within VITRINE_READ_YOUR_WRITES_WAIT_MS.",
                        float(database["primary_fallback_reads"]),  # type: ignore[arg-type]
                    )
                gauges["vitrine_index_vectors"] = ("Vectors in the search index.", float(len(index)))
                gauges["vitrine_catalog_revision"] = (
                    "Catalog revision the index reflects.",
                    float(index.revision),
                )
        return self.metrics.render(gauges, info)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Bounded work in flight: past the limit, answer 429 at once instead of queueing without end."""
        if self.saturated:
            raise Overloaded(
                f"server is busy: {self.in_flight} requests in flight "
                f"(VITRINE_MAX_PENDING_REQUESTS={self.settings.max_pending_requests}); retry later"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.finished += 1
