"""ONNX Runtime on CPU: the towers exported from the checkpoint, float32 or int8 (dynamic quantisation).

The export (``build``) runs once per checkpoint and precision and is cached (``export_cache``); it
measures the exported towers against the float32 transformers model on probe inputs and records whether
they reach ``MIN_COSINE``. An export that misses it is kept (so it is not rebuilt at every start) but
refused: ``load`` raises ``BackendUnavailable`` and ``auto`` falls back to the next choice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from search.model.backends.accuracy import Reference
from search.model.backends.base import BackendUnavailable, RuntimeChoice
from search.model.backends.export_cache import MIN_COSINE, Export, load_or_build
from search.model.backends.progress import report
from search.model.weights import Checkpoint

log = logging.getLogger(__name__)

VISION, TEXT = "vision.onnx", "text.onnx"
PRECISIONS = ("float32", "int8")


def _import_ort() -> object:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed (pip install 'vitrine[cpu]' or onnx onnxruntime)"
        ) from exc
    return onnxruntime


class OnnxBackend:
    def __init__(self, export: Export, choice: RuntimeChoice, threads: int | None = None) -> None:
        ort = _import_ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.vision = ort.InferenceSession(str(export.path(VISION)), options, providers=providers)
        self.text = ort.InferenceSession(str(export.path(TEXT)), options, providers=providers)
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
        allow_build: bool = True,
    ) -> OnnxBackend:
        """The cached export for this checkpoint (built first where missing or broken), if it passed
        its accuracy check."""
        export = ensure_export(model_id, choice, cache_dir, checkpoint=checkpoint, allow_build=allow_build)
        return cls(export, choice, threads)

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return self.vision.run(None, {"pixel_values": pixels})[0].astype(np.float32, copy=False)

    def text_features(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        return self.text.run(None, {"input_ids": ids})[0].astype(np.float32, copy=False)


# Export ---------------------------------------------------------------------------------------------------


def ensure_export(
    model_id: str,
    choice: RuntimeChoice,
    cache_dir: Path,
    *,
    checkpoint: Checkpoint | None = None,
    allow_build: bool = True,
) -> Export:
    """The accepted, verified export for ``choice`` (built first unless ``allow_build`` is False:
    ``ExportMissing`` then). An export refused by its accuracy check raises BackendUnavailable."""
    if choice.precision not in PRECISIONS:
        raise BackendUnavailable(f"onnx runs float32 or int8, not {choice.precision}")
    if choice.device != "cpu":
        raise BackendUnavailable("the onnx runtime adapter runs on CPU; use torch on CUDA")
    _import_ort()
    key = (checkpoint or Checkpoint(model_id)).export_key
    export = load_or_build(
        cache_dir,
        key,
        f"onnx-{choice.precision}",
        lambda folder: build(model_id, choice, folder),
        allow_build=allow_build,
    )
    if not export.accepted:
        raise BackendUnavailable(
            f"onnx {choice.precision} export of {model_id} is refused: cosine to float32 "
            f"{export.manifest.get('cosine')} < {MIN_COSINE}"
        )
    return export


def build(model_id: str, choice: RuntimeChoice, folder: Path) -> dict:
    """Export both towers to ONNX (int8: then quantise the weights), and check them against float32."""
    import torch
    from transformers import SiglipModel

    ort = _import_ort()
    report(2, "loading the checkpoint in float32")
    model = SiglipModel.from_pretrained(model_id, dtype=torch.float32).eval()
    report(5, "computing the float32 reference on the probe inputs")
    reference = Reference.of(model)
    float_dir = folder / "float32" if choice.precision == "int8" else folder
    float_dir.mkdir(exist_ok=True)
    export_towers(model, float_dir)
    if choice.precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        report(50, "quantising the weights to int8")
        # Dynamic quantisation: int8 weights, activations quantised per batch at run time (no calibration).
        # Per channel: one scale per output column keeps the cosine to float32 above 0.999 where a
        # single scale per tensor does not (measured on the tiny model: 0.9996 against 0.9990).
        for name in (VISION, TEXT):
            quantize_dynamic(float_dir / name, folder / name, weight_type=QuantType.QInt8, per_channel=True)
        for path in float_dir.iterdir():
            path.unlink()
        float_dir.rmdir()
    del model
    report(75, f"checking {choice} against float32")
    options = ort.SessionOptions()
    vision = ort.InferenceSession(str(folder / VISION), options, providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(folder / TEXT), options, providers=["CPUExecutionProvider"])
    facts = reference.check(
        choice,
        lambda pixels: vision.run(None, {"pixel_values": pixels})[0],
        lambda ids: text.run(None, {"input_ids": ids})[0],
    )
    return facts | {"onnxruntime": ort.__version__, "torch": torch.__version__}


def export_towers(model: object, folder: Path) -> None:
    """Both towers of a float32 SiglipModel as ONNX graphs with a dynamic batch axis."""
    import torch

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model.get_text_features(input_ids=input_ids).pooler_output

    size = int(model.config.vision_config.image_size)
    length = int(model.config.text_config.max_position_embeddings)
    # A batch-2 example: with batch 1 the exporter freezes the batch size into the graph.
    examples = {
        VISION: (Vision(), torch.zeros(2, 3, size, size), "pixel_values"),
        TEXT: (Text(), torch.ones(2, length, dtype=torch.int64), "input_ids"),
    }
    for name, (module, example, input_name) in examples.items():
        report(10 if name == VISION else 20, f"exporting the {name.split('.')[0]} tower to ONNX")
        torch.onnx.export(
            module,
            (example,),
            str(folder / name),
            input_names=[input_name],
            output_names=["features"],
            dynamic_axes={input_name: {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, proven on SigLIP
        )
