"""Runtimes: one adapter per way of running the model, all behind ``ModelBackend``.

``load_backend`` turns the settings (runtime, dtype, device) into a loaded adapter. ``auto`` tries the
choices for the hardware fastest first and takes the first that loads and passes its accuracy check
(cosine >= 0.999 to float32 on probe inputs, measured when an export is built). With
``allow_build=False`` (a server's first start) choices whose export is not built yet are passed over and
returned by ``pending_exports``, for ``search.model.background_export`` to build while torch serves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from search.model.backends.base import BackendUnavailable, ModelBackend, RuntimeChoice
from search.model.backends.export_cache import ExportMissing
from search.model.backends.torch_backend import TorchBackend, cpu_has_native_bf16
from search.model.weights import Checkpoint

log = logging.getLogger(__name__)

__all__ = [
    "BackendUnavailable",
    "ModelBackend",
    "RuntimeChoice",
    "candidates",
    "load_backend",
    "pending_exports",
]

EXPORTED_RUNTIMES = ("onnx", "openvino")  # runtimes that serve a conversion built from the checkpoint


def candidates(runtime: str, dtype: str, device: str) -> list[RuntimeChoice]:
    """The choices to try, fastest first, for the settings on this hardware (measured: bench/RESULTS.md)."""
    if device == "cuda":
        if runtime not in ("auto", "torch"):
            raise BackendUnavailable(
                f"VITRINE_RUNTIME={runtime} runs on CPU only; use torch (or auto) on CUDA"
            )
        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return [RuntimeChoice("torch", dtype, device)]
    fast_torch = fastest_torch_dtype()
    if runtime == "torch":
        return [RuntimeChoice("torch", fast_torch if dtype == "auto" else dtype)]
    if runtime == "onnx":
        if dtype == "auto":
            return [RuntimeChoice("onnx", "int8"), RuntimeChoice("onnx", "float32")]
        return [RuntimeChoice("onnx", dtype)]
    if runtime == "openvino":
        if dtype == "auto":
            return [RuntimeChoice("openvino", "int8"), RuntimeChoice("openvino", fast_torch)]
        return [RuntimeChoice("openvino", dtype)]
    # auto: a dtype alone names its natural runtime (int8: OpenVINO's, else ONNX's; float types: torch's).
    if dtype == "int8":
        return [RuntimeChoice("openvino", "int8"), RuntimeChoice("onnx", "int8")]
    if dtype != "auto":
        return [RuntimeChoice("torch", dtype)]
    # Fastest first, as measured on a 2-core Zen 4 (bench/RESULTS.md), one image against torch float32:
    # OpenVINO int8 (int8 weights, activations quantised per group at run time) 3.5x, OpenVINO bfloat16
    # 2.4x, ONNX Runtime int8 2.4x but below 0.999 cosine on product-like pictures, so its export is
    # refused by the accuracy check there and the next choice serves.
    if fast_torch == "bfloat16":
        return [
            RuntimeChoice("openvino", "int8"),
            RuntimeChoice("openvino", "bfloat16"),
            RuntimeChoice("onnx", "int8"),
            RuntimeChoice("torch", "bfloat16"),
        ]
    return [
        RuntimeChoice("openvino", "int8"),
        RuntimeChoice("onnx", "int8"),
        RuntimeChoice("openvino", "float32"),
        RuntimeChoice("onnx", "float32"),
    ]


def load_backend(
    model_id: str,
    *,
    runtime: str = "torch",
    dtype: str = "float32",
    device: str = "cpu",
    cache_dir: Path | None = None,
    threads: int | None = None,
    checkpoint: Checkpoint | None = None,
    allow_build: bool = True,
) -> ModelBackend:
    """The first of ``candidates`` that loads; the reasons for skipped ones are logged.

    ``checkpoint``: the folder's digests when the caller has them already (hashing 1.5 GB takes seconds).
    ``allow_build``: False passes over the choices whose export is not built yet (quietly: they are
    being built elsewhere) and, where only such choices were left, serves torch in its fastest dtype.
    """
    checkpoint = checkpoint or Checkpoint(model_id)
    reasons = []
    choices = candidates(runtime, dtype, device)
    if not allow_build and runtime == "auto" and choices[-1].runtime in EXPORTED_RUNTIMES:
        choices.append(RuntimeChoice("torch", fastest_torch_dtype(), device))
    for choice in choices:
        try:
            return _load(model_id, choice, cache_dir, threads, checkpoint, allow_build)
        except ExportMissing:
            continue
        except BackendUnavailable as exc:
            log.warning("runtime %s unavailable: %s", choice, exc)
            reasons.append(f"{choice}: {exc}")
    if runtime == "auto":
        # The reference always works.
        return _load(model_id, RuntimeChoice("torch", "float32", device), cache_dir, threads, checkpoint)
    raise BackendUnavailable("; ".join(reasons))


def load_backend_choice(
    model_id: str, choice: RuntimeChoice, cache_dir: Path, threads: int | None, checkpoint: Checkpoint
) -> ModelBackend:
    """``choice`` from its built export (``ExportMissing`` where there is none yet: nothing is built)."""
    return _load(model_id, choice, cache_dir, threads, checkpoint, allow_build=False)


def fastest_torch_dtype() -> str:
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def pending_exports(
    serving: RuntimeChoice,
    runtime: str,
    dtype: str,
    device: str,
    cache_dir: Path | None,
    checkpoint: Checkpoint,
) -> list[RuntimeChoice]:
    """The choices ranked before ``serving`` whose export is not built yet, fastest first: what a
    background export would build (nothing without a cache folder or off CPU)."""
    if cache_dir is None or device != "cpu":
        return []
    from search.model.backends.export_cache import is_built

    pending = []
    for choice in candidates(runtime, dtype, device):
        if choice == serving:
            break
        if choice.runtime in EXPORTED_RUNTIMES and not is_built(
            cache_dir, checkpoint.export_key, f"{choice.runtime}-{choice.precision}"
        ):
            pending.append(choice)
    return pending


def _load(
    model_id: str,
    choice: RuntimeChoice,
    cache_dir: Path | None,
    threads: int | None,
    checkpoint: Checkpoint,
    allow_build: bool = True,
) -> ModelBackend:
    if choice.runtime == "torch":
        return TorchBackend.load(model_id, choice)
    if choice.runtime == "onnx":
        from search.model.backends.onnx_backend import OnnxBackend

        if cache_dir is None:
            raise BackendUnavailable("the onnx runtime needs a cache folder for its exports")
        return OnnxBackend.load(
            model_id, choice, cache_dir, threads=threads, checkpoint=checkpoint, allow_build=allow_build
        )
    if choice.runtime == "openvino":
        from search.model.backends.openvino_backend import OpenVinoBackend

        if cache_dir is None:
            raise BackendUnavailable("the openvino runtime needs a cache folder for its conversions")
        return OpenVinoBackend.load(
            model_id, choice, cache_dir, threads=threads, checkpoint=checkpoint, allow_build=allow_build
        )
    raise BackendUnavailable(f"unknown runtime {choice.runtime!r}")
