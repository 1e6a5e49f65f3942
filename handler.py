"""Hugging Face Inference Endpoints custom handler: the same mode logic as the HTTP server.

Deploy this repository as a custom-handler endpoint; the toolkit calls ``EndpointHandler(path)`` once and
``handler(data)`` per request with the decoded JSON body. Errors are raised as exceptions whose text is the
same message the HTTP server puts in ``{"error": ...}``; the toolkit answers them with that shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.settings import Settings
from search.wiring import Components


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        settings = Settings()
        # The endpoint's repository folder holds the weights when they were uploaded next to this file.
        if path and (Path(path) / "config.json").is_file():
            settings = settings.model_copy(update={"model": path})
        self.components = Components.start(settings)

    def __call__(self, data: dict[str, Any]) -> Any:
        return self.components.endpoint(data)
