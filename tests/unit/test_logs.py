"""Third-party warnings stay out of the service log unless VITRINE_LOG_LEVEL=debug."""

from __future__ import annotations

import logging
import warnings

from search.logs import quiet_libraries


def warn_from(module: str, message: str) -> None:
    warnings.warn_explicit(message, UserWarning, f"{module.replace('.', '/')}.py", 1, module=module)


def test_third_party_warnings_are_silenced_and_ours_are_not(monkeypatch):
    monkeypatch.setattr(logging.getLogger("nncf"), "level", logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries("INFO")
        warn_from("transformers.models.siglip.modeling_siglip", "converting a tensor to a Python boolean")
        warn_from("torch.onnx.utils", "constant folding")
        warn_from("nncf.quantization", "a table")
        warn_from("search.catalog.search", "ours")
    assert [str(warning.message) for warning in caught] == ["ours"]
    assert logging.getLogger("nncf").level == logging.ERROR  # its compression tables are INFO


def test_debug_keeps_every_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries("debug")
        warn_from("transformers.models.siglip.modeling_siglip", "converting a tensor to a Python boolean")
    assert len(caught) == 1
