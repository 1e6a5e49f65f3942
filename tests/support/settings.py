"""Settings for tests: the tiny model on CPU in float32 and a given data folder."""

from __future__ import annotations

from pathlib import Path

from api.settings import ServerSettings
from search.settings import Settings


def settings_for(model_dir: Path, data_dir: Path, **overrides: object) -> ServerSettings:
    """Test settings: the tiny model on CPU in float32, the given data folder, loopback images allowed."""
    values: dict[str, object] = {
        "model": str(model_dir),
        "data_dir": data_dir,
        "url_allow_hosts": ["127.0.0.1"],
        "device": "cpu",
        "dtype": "float32",
        "cache_dir": data_dir.parent / "cache",  # exports: never the user's own cache
    }
    values.update(overrides)
    return ServerSettings(**values)


def indexer_settings(model_dir: Path, data_dir: Path, **overrides: object) -> Settings:
    """An indexer run's settings: the tiny model on CPU in float32 (as the test servers use it). Unlike
    ``settings_for``, no loopback hosts are allowed unless a test says so."""
    values: dict[str, object] = {
        "model": str(model_dir),
        "data_dir": data_dir,
        "device": "cpu",
        "dtype": "float32",
        "cache_dir": data_dir.parent / "cache",
    }
    values.update(overrides)
    return Settings(**values)
