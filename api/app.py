"""The FastAPI application: middleware, error mapping, routes, and the model loading in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.auth import BearerAuth
from api.errors import install_error_handlers
from api.headers import SecurityHeaders
from api.memory import release_memory_when_idle
from api.metrics import MetricsMiddleware
from api.openapi import install_openapi
from api.readiness import DatabaseProbe
from api.routes import catalog, docs, duplicates, embeddings, inference, probes, relevance, taxonomy
from api.settings import ServerSettings
from api.state import ServiceState
from search.errors import IndexDeviceError, ModelLoadError, VectorBackendError
from search.heap import glibc_malloc_trim
from search.model.encoder import Encoder
from search.wiring import Components

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: ServerSettings,
    *,
    encoder: Encoder | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app. The model loads after start-up, so /health answers at once and /ready says when.

    ``encoder`` skips loading (tests share one); ``on_fatal`` is called with a message when loading fails.
    """
    state = ServiceState(settings)

    def start_components() -> None:
        # A missing export is built in the background while torch serves (search/model/background_export.py).
        components = Components.start(settings, encoder, with_catalog=True, export_in_background=True)
        if components.products is not None:
            probe = DatabaseProbe(settings.resolved_database_url)
            probe.check_now()  # /ready has a fact to answer from the moment it can be 200
            state.database_probe = probe
        state.components = components
        if components.export is not None and not state.stopping:
            components.export.start()

    async def watch_database(loaded: asyncio.Event) -> None:
        await loaded.wait()
        if state.database_probe is not None:
            await state.database_probe.run()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.api_tokens:
            log.info("bearer-token auth on: %d token(s) configured", len(settings.api_tokens))
        else:
            log.warning("no VITRINE_API_TOKENS configured: the API is OPEN to anyone who can reach it")
        loaded = asyncio.Event()
        _start_loading(start_components, state, on_fatal, loaded)
        trimmer = asyncio.create_task(release_memory_when_idle(state, glibc_malloc_trim()))
        watcher = asyncio.create_task(watch_database(loaded))
        try:
            yield
        finally:
            state.stopping = True
            trimmer.cancel()
            watcher.cancel()
            if state.database_probe is not None:
                state.database_probe.close()
            if state.components is not None:
                state.components.close()

    # /docs is served from vendored assets (api/routes/docs.py); ReDoc would need a CDN.
    app = FastAPI(title="vitrine", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.vitrine = state
    install_openapi(app)
    install_error_handlers(app)
    app.add_middleware(BearerAuth, tokens=settings.api_tokens)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: 401s are counted too
    app.include_router(probes.router)
    app.include_router(inference.router)
    app.include_router(catalog.router)
    app.include_router(relevance.router)
    app.include_router(duplicates.router)
    app.include_router(embeddings.router)
    app.include_router(taxonomy.router)
    app.include_router(docs.router)
    # Page assets are public (they hold no data); every API call they make carries the token.
    app.mount("/static/swagger", StaticFiles(directory=STATIC / "swagger"), name="swagger")
    app.mount("/ui", StaticFiles(directory=STATIC / "ui", html=True), name="ui")
    return app


def _start_loading(
    start: Callable[[], None],
    state: ServiceState,
    on_fatal: Callable[[str], None] | None,
    loaded: asyncio.Event,
) -> None:
    """Load on a daemon thread: a Ctrl-C while the model loads ends the process at once instead of
    waiting for the load (an executor's thread would be joined at exit)."""
    loop = asyncio.get_running_loop()

    def run() -> None:
        try:
            _load(start, state, on_fatal)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped meanwhile
                loop.call_soon_threadsafe(loaded.set)

    threading.Thread(target=run, name="vitrine-load", daemon=True).start()


def _load(start: Callable[[], None], state: ServiceState, on_fatal: Callable[[str], None] | None) -> None:
    try:
        start()
        log.info("ready")
    except (
        ModelLoadError,
        IndexDeviceError,
        VectorBackendError,
    ) as exc:  # a setting to fix: the message says which
        state.load_error = str(exc)
        if on_fatal:
            on_fatal(str(exc))  # the caller prints it once and exits
        else:
            log.error("%s", exc)
    except Exception as exc:
        state.load_error = f"start-up failed: {exc}"
        log.exception("start-up failed")
        if on_fatal:
            on_fatal(state.load_error)
