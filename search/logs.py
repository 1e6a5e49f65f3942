"""Logging set-up shared by the server and the indexer."""

from __future__ import annotations

import logging

# Libraries that narrate their start-up at INFO (FAISS's CPU-feature probing, Alembic's plugins).
_CHATTY = ("alembic", "faiss.loader", "httpx", "httpcore")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
