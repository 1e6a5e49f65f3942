"""Settings come from VITRINE_* environment variables; lists are comma-separated there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import ServerSettings
from search.settings import DEFAULT_MODEL

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith("VITRINE_"):
            monkeypatch.delenv(key)


def test_api_tokens_are_comma_separated_in_the_environment(monkeypatch):
    monkeypatch.setenv("VITRINE_API_TOKENS", "a, b")
    assert ServerSettings().api_tokens == ["a", "b"]


def test_a_single_api_token(monkeypatch):
    monkeypatch.setenv("VITRINE_API_TOKENS", "hf_only")
    assert ServerSettings().api_tokens == ["hf_only"]


def test_empty_entries_in_a_list_are_dropped(monkeypatch):
    monkeypatch.setenv("VITRINE_API_TOKENS", " ,a,, b ,")
    assert ServerSettings().api_tokens == ["a", "b"]


def test_empty_api_tokens_means_no_tokens(monkeypatch):
    monkeypatch.setenv("VITRINE_API_TOKENS", "")
    assert ServerSettings().api_tokens == []


def test_url_allow_hosts_are_comma_separated_hostnames_and_cidrs(monkeypatch):
    monkeypatch.setenv("VITRINE_URL_ALLOW_HOSTS", "images.internal, 10.0.0.0/8,127.0.0.1")
    assert ServerSettings().url_allow_hosts == ["images.internal", "10.0.0.0/8", "127.0.0.1"]


def test_lists_can_be_given_as_lists_in_code():
    settings = ServerSettings(api_tokens=["x"], url_allow_hosts=["localhost"])
    assert settings.api_tokens == ["x"]
    assert settings.url_allow_hosts == ["localhost"]


def test_numbers_and_paths_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("VITRINE_MODEL", "/models/siglip2-base-patch16-512")
    monkeypatch.setenv("VITRINE_MAX_IMAGE_BYTES", "1234")
    monkeypatch.setenv("VITRINE_FETCH_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("VITRINE_DATA_DIR", "/srv/vitrine")
    settings = ServerSettings()
    assert settings.model == "/models/siglip2-base-patch16-512"
    assert settings.max_image_bytes == 1234
    assert settings.fetch_read_timeout == 2.5
    assert settings.data_dir == Path("/srv/vitrine")


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("VITRINE_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        ServerSettings()


def test_defaults_are_the_documented_ones():
    settings = ServerSettings()
    assert settings.model == DEFAULT_MODEL == "google/siglip2-base-patch16-512"
    assert settings.device == "auto"
    assert settings.dtype == "auto"
    assert settings.batch_size == 16
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.api_tokens == []
    assert settings.url_allow_hosts == []
    assert settings.max_request_bytes == 64 * MiB
    assert settings.max_pending_requests == 64
    assert settings.max_image_bytes == 20 * MiB
    assert settings.max_image_pixels == 40_000_000
    assert settings.max_images_per_request == 32
    assert settings.max_texts_per_request == 256
    assert settings.fetch_connect_timeout == 5.0
    assert settings.fetch_read_timeout == 10.0
    assert settings.fetch_total_timeout == 30.0
    assert settings.fetch_max_redirects == 5
    assert settings.fetch_concurrency == 16
    assert settings.fetch_concurrency_per_request == 4
    assert settings.search_max_k == 1000
    assert settings.log_level == "INFO"
    assert settings.torch_threads is None
    assert settings.data_dir == Path("data")
    assert settings.database_url is None


def test_a_standby_read_url_needs_postgresql_on_both_sides(monkeypatch):
    monkeypatch.setenv("VITRINE_DATABASE_READ_URL", "postgresql+psycopg://u@standby/db")
    with pytest.raises(ValidationError, match="VITRINE_DATABASE_URL is sqlite"):
        ServerSettings()  # the default catalog is SQLite
    monkeypatch.setenv("VITRINE_DATABASE_URL", "postgresql+psycopg://u@primary/db")
    assert ServerSettings().database_read_url == "postgresql+psycopg://u@standby/db"
    monkeypatch.setenv("VITRINE_DATABASE_READ_URL", "sqlite:///other.db")
    with pytest.raises(ValidationError, match="VITRINE_DATABASE_READ_URL is sqlite"):
        ServerSettings()


def test_the_image_store_is_a_folder_or_the_database(monkeypatch):
    assert ServerSettings().image_store == "folder"
    monkeypatch.setenv("VITRINE_IMAGE_STORE", "database")
    assert ServerSettings().image_store == "database"
    monkeypatch.setenv("VITRINE_IMAGE_STORE", "s3")
    with pytest.raises(ValidationError, match="image_store"):
        ServerSettings()


def test_the_vector_backend_is_faiss_unless_pgvector_is_named(monkeypatch):
    from search.wiring import pgvector_spec

    assert ServerSettings().vector_backend == "faiss"
    monkeypatch.setenv("VITRINE_DATABASE_URL", "postgresql+psycopg://vitrine@db/vitrine")
    monkeypatch.setenv("VITRINE_VECTOR_BACKEND", "pgvector")
    monkeypatch.setenv("VITRINE_PGVECTOR_INDEX", "hnsw")
    monkeypatch.setenv("VITRINE_PGVECTOR_EF_SEARCH", "600")
    settings = ServerSettings()
    spec = pgvector_spec(settings)
    assert settings.vector_backend == "pgvector"
    assert (spec.index, spec.ef_search, spec.probes, spec.exact_limit) == ("hnsw", 600, 0, 20_000)
    assert spec.configured_breadth == 600  # hnsw: ef_search is the breadth; probes 0 would be measured
    monkeypatch.setenv("VITRINE_RECALL_TARGET", "0.9")
    assert pgvector_spec(ServerSettings()).recall_target == 0.9
    monkeypatch.setenv("VITRINE_VECTOR_BACKEND", "milvus")
    with pytest.raises(ValidationError, match="vector_backend"):
        ServerSettings()
