"""OpenVINO on CPU: the towers converted from their ONNX export to OpenVINO IR, run in float32 or in
bfloat16 (on CPUs with native bf16: AVX512-BF16, AMX), where OpenVINO keeps accuracy-sensitive ops in
float32 by itself.

The conversion is cached like an ONNX export (``export_cache``), with its own accuracy check: the
bfloat16 execution is measured against float32 transformers on the probe inputs when the IR is built.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from search.runtimes.accuracy import Reference
from search.runtimes.base import RuntimeChoice, RuntimeUnavailable
from search.runtimes.export_cache import MIN_COSINE, Export, load_or_build
from search.runtimes.onnx_runtime import TEXT, VISION, export_towers
from search.weights import Checkpoint

log = logging.getLogger(__name__)

PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
IR = {VISION: "vision.xml", TEXT: "text.xml"}


def _import_openvino() -> object:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailable("openvino is not installed (pip install openvino)") from exc
    return openvino


def _compile(ov: object, path: Path, precision: str, threads: int | None) -> object:
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


class OpenVinoRuntime:
    def __init__(self, export: Export, choice: RuntimeChoice, threads: int | None = None) -> None:
        ov = _import_openvino()
        self.vision = _compile(ov, export.path(IR[VISION]), choice.precision, threads)
        self.text = _compile(ov, export.path(IR[TEXT]), choice.precision, threads)
        self.choice = choice
        self.export = export
        self.logit_scale = float(export.manifest["logit_scale"])
        self.logit_bias = float(export.manifest["logit_bias"])

    @classmethod
    def load(
        cls,
        model_id: str,
        choice: RuntimeChoice,
        cache_dir: Path,
        *,
        threads: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> OpenVinoRuntime:
        if choice.precision not in PRECISIONS:
            raise RuntimeUnavailable(f"openvino runs float32 or bfloat16, not {choice.precision}")
        if choice.device != "cpu":
            raise RuntimeUnavailable("the openvino runtime adapter runs on CPU; use torch on CUDA")
        _import_openvino()
        export = load_or_build(
            cache_dir,
            (checkpoint or Checkpoint(model_id)).export_key,
            f"openvino-{choice.precision}",
            lambda folder: build(model_id, choice, folder),
        )
        if not export.accepted:
            raise RuntimeUnavailable(
                f"openvino {choice.precision} of {model_id} is refused: cosine to float32 "
                f"{export.manifest.get('cosine')} < {MIN_COSINE}"
            )
        return cls(export, choice, threads)

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return np.asarray(self.vision(pixels)[0], dtype=np.float32)

    def text_features(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        return np.asarray(self.text(ids)[0], dtype=np.float32)


def build(model_id: str, choice: RuntimeChoice, folder: Path) -> dict:
    """ONNX export -> OpenVINO IR (float32 weights), then the accuracy check at the chosen precision."""
    import torch
    from transformers import SiglipModel

    ov = _import_openvino()
    model = SiglipModel.from_pretrained(model_id, dtype=torch.float32).eval()
    reference = Reference.of(model)
    onnx_dir = folder / "onnx"
    onnx_dir.mkdir()
    export_towers(model, onnx_dir)
    del model
    for name, ir_name in IR.items():
        # Weights stay float32 in the IR: the precision is chosen when compiling, per machine.
        ov.save_model(ov.convert_model(str(onnx_dir / name)), str(folder / ir_name), compress_to_fp16=False)
    for path in onnx_dir.iterdir():
        path.unlink()
    onnx_dir.rmdir()
    vision = _compile(ov, folder / IR[VISION], choice.precision, None)
    text = _compile(ov, folder / IR[TEXT], choice.precision, None)
    facts = reference.check(
        choice,
        lambda pixels: vision(pixels)[0],
        lambda ids: text(ids)[0],
    )
    return facts | {"openvino": ov.__version__, "torch": torch.__version__}
