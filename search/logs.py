"""Logging set-up shared by the server and the indexer."""

from __future__ import annotations

import logging
import warnings

# Libraries that narrate their start-up at INFO (FAISS's CPU-feature probing, Alembic's plugins).
_CHATTY = ("alembic", "faiss.loader", "httpx", "httpcore")
# Libraries whose advice is for their own developers, not for whoever runs vitrine: the tracer's
# "converting a tensor to a Python boolean" warnings, NNCF's compression tables, deprecation notes.
_THIRD_PARTY = ("torch", "transformers", "nncf", "openvino", "onnx", "onnxruntime", "huggingface_hub")
_THIRD_PARTY_MODULES = r"(" + "|".join(_THIRD_PARTY) + r")(\..*)?$"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    quiet_libraries(level)


def quiet_libraries(level: str) -> None:
    """Third-party warnings and INFO tables out of the log, unless VITRINE_LOG_LEVEL=debug."""
    if level.upper() == "DEBUG":
        return
    warnings.filterwarnings("ignore", module=_THIRD_PARTY_MODULES)
    for category in _third_party_categories():
        warnings.filterwarnings("ignore", category=category)
    for name in ("nncf", "openvino", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _third_party_categories() -> list[type[Warning]]:
    """Warning classes only third-party code raises (importing torch here would load it for every
    command: only where it is loaded already)."""
    import sys

    torch_jit = sys.modules.get("torch.jit")
    return [torch_jit.TracerWarning] if torch_jit is not None else []
