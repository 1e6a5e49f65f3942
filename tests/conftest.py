"""Fixtures only (helpers live in tests/support): a tiny random SigLIP checkpoint, settings, a local
image server, the app in-process or under a real uvicorn, the indexer CLI and an indexed catalog.

Tests under tests/e2e/ are marked ``e2e`` and get a real uvicorn server; every other test gets the app
in-process. The few tests beside their unit peers that need a process of their own (killed, signalled,
racing) carry the marker themselves. ``pytest -m "not e2e"`` is the edit loop."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker gets its share of the cores for OpenMP (FAISS, torch), set before either
# is imported: two workers of two threads each on two cores spin in each other's barriers (test_ivf.py:
# 27 s of CPU with two threads per worker, 21 s with one).
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))

from api.settings import ServerSettings
from devtools.random_model import write_random_model
from search.endpoint import InferenceService
from search.model.encoder import BatchSettings, Encoder
from search.settings import Settings
from search.wiring import Components, quiet_transformers
from tests.support.catalogs import SAMPLE_PRODUCTS, IndexedCatalog, copy_catalog, read_manifest_rows
from tests.support.http import ImageServer
from tests.support.indexer import run_indexer_in_process, summary_of
from tests.support.servers import InProcessServer, LiveServer, TestServer
from tests.support.settings import indexer_settings, settings_for

# Property-based fuzz (tests/api/test_fuzz.py): a quick default, a long profile by command
# (pytest tests/api/test_fuzz.py --hypothesis-profile=fuzz-long). No deadline: cases go through the app.
_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
hypothesis_settings.register_profile("fuzz-quick", max_examples=30, **_FUZZ)
hypothesis_settings.register_profile("fuzz-long", max_examples=3400, **_FUZZ)
hypothesis_settings.load_profile("fuzz-quick")

TESTS = Path(__file__).resolve().parent
E2E = TESTS / "e2e"
# The files that take longest (seconds on this 2-core machine under `make test`, 2026-12), run first:
# pytest-xdist hands out whole files (--dist loadfile) in collection order (--no-loadscope-reorder), so
# the many short files that follow even out the two workers' ends. By its own order, by test count,
# xdist ran these one-test files last, and one worker ran 40 s alone.
LONGEST_FIRST = (
    "indexer/test_ray_engine.py",  # 107
    "e2e/test_first_start.py",  # 60
    "indexer/test_ray_killed_job.py",  # 43
    "unit/model/test_backends.py",  # 27
    "e2e/test_ui.py",  # 26
    "unit/catalog/test_pgvector_tuning.py",  # 26
    "unit/index/test_ivf.py",  # 17
    "e2e/test_ui_browse.py",  # 16
    "indexer/test_failures.py",  # 16
    "e2e/test_replicas.py",  # 13
    "e2e/test_startup.py",  # 12
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    rank = {TESTS / path: place for place, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))  # stable: the rest keep their order


def _server_kind(path: Path) -> type[InProcessServer] | type[LiveServer]:
    return LiveServer if E2E in path.parents else InProcessServer


# Tiny model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    quiet_transformers()
    return write_random_model("tiny", tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(
        str(tiny_model_dir),
        device="cpu",
        dtype="float32",
        batching=BatchSettings(image_batch=4, text_batch=4),
    )


@pytest.fixture
def count_image_embeddings(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many images the (shared, in-process) encoder embedded since the fixture started: every
    image forward pass goes through ``embed_pixels``."""
    calls = [0]
    original = encoder.embed_pixels

    def counting(pixels: object) -> object:
        calls[0] += len(pixels)  # type: ignore[arg-type]
        return original(pixels)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "embed_pixels", counting)
    return calls


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., ServerSettings]:
    """Settings for a test: the tiny model, a fresh data folder, loopback images allowed."""

    def make(**overrides: object) -> ServerSettings:
        return settings_for(tiny_model_dir, tmp_path / "data", **overrides)

    return make


@pytest.fixture
def inference(encoder: Encoder, make_settings: Callable[..., Settings]) -> Iterator[InferenceService]:
    """The endpoint logic without the web server, on the shared tiny encoder."""
    runtime = Components.start(make_settings(), encoder)
    yield runtime.endpoint
    runtime.close()


# Local image server -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


# The app: in-process, or under a real uvicorn in tests/e2e ---------------------------------------------


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, encoder: Encoder, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., TestServer]]:
    """Start the app with settings overrides: ``start_server(api_tokens=["t"])``."""
    from api.app import create_app

    kind = _server_kind(request.path)
    servers: list[TestServer] = []

    def start(**overrides: object) -> TestServer:
        server = kind(create_app(make_settings(**overrides), encoder=encoder)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., TestServer]) -> TestServer:
    return start_server()


@pytest.fixture(scope="module")
def start_shared_server(
    request: pytest.FixtureRequest,
    encoder: Encoder,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., TestServer]]:
    """Like ``start_server``, but one app per distinct settings for a whole module, for tests that only
    send stateless inference requests."""
    from api.app import create_app

    kind = _server_kind(request.path)
    servers: dict[str, TestServer] = {}

    def start(**overrides: object) -> TestServer:
        key = repr(sorted(overrides.items()))
        if key not in servers:
            settings = settings_for(tiny_model_dir, tmp_path_factory.mktemp("data"), **overrides)
            servers[key] = kind(create_app(settings, encoder=encoder)).start()
        return servers[key]

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def shared_server(start_shared_server: Callable[..., TestServer]) -> TestServer:
    """The default app, shared by a module's stateless tests."""
    return start_shared_server()


# Catalog: the indexer CLI in-process, and an indexed sample catalog -----------------------------------------


@pytest.fixture(scope="session")
def indexer_cli(tiny_model_dir: Path, encoder: Encoder) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``indexer_cli(data_dir, "add", manifest, index_type="hnsw")``: the indexer CLI in-process on the
    shared tiny encoder; keyword arguments are settings overrides."""

    def run(data_dir: Path, *args: object, **overrides: object) -> subprocess.CompletedProcess[str]:
        return run_indexer_in_process(
            indexer_settings(tiny_model_dir, data_dir, **overrides), *args, encoder=encoder
        )

    return run


@pytest.fixture(scope="session")
def indexed_catalog(
    tmp_path_factory: pytest.TempPathFactory, indexer_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> IndexedCatalog:
    """40 generated products (64 px) indexed once per session by the indexer CLI.

    Read-only: tests that write take ``catalog_copy`` instead."""
    root = tmp_path_factory.mktemp("catalog")
    data_dir = root / "data"
    sample = indexer_cli(data_dir, "sample", root / "sample", "--count", SAMPLE_PRODUCTS, "--size", 64)
    assert sample.returncode == 0, summary_of(sample)
    manifest = root / "sample" / "manifest.csv"
    added = indexer_cli(data_dir, "add", manifest, "--no-progress")
    assert added.returncode == 0, summary_of(added)
    assert f"{SAMPLE_PRODUCTS} added" in added.stdout, summary_of(added)
    return IndexedCatalog(manifest, data_dir, read_manifest_rows(manifest))


@pytest.fixture
def catalog_copy(indexed_catalog: IndexedCatalog, tmp_path: Path) -> IndexedCatalog:
    """A private copy of the indexed catalog: its data folder is the one ``make_settings`` and
    ``start_server`` use (tmp_path / "data"), its manifest and images may be edited."""
    return copy_catalog(indexed_catalog, tmp_path)


# pgvector -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgvector_server_url() -> Iterator[str]:
    """A throwaway PostgreSQL + pgvector for the session (tests/support/pgvector.py); fails under CI."""
    from tests.support.pgvector import pgvector_server

    with pgvector_server() as url:
        yield url


@pytest.fixture
def pgvector_url(pgvector_server_url: str) -> Iterator[str]:
    """A fresh, migrated catalog database with the vector extension."""
    from devtools.pgvector_server import fresh_pgvector_database

    with fresh_pgvector_database(pgvector_server_url) as url:
        yield url
