"""OpenVINO on CPU: the towers converted from their ONNX export to OpenVINO IR, run in float32, in
bfloat16 (on CPUs with native bf16: AVX512-BF16, AMX; OpenVINO keeps accuracy-sensitive ops in float32
by itself), or with int8 weights.

int8: the weights of every matmul and embedding are stored as int8, one scale per output channel
(NNCF's data-free weight compression), and at run time OpenVINO quantises each activation row in groups
of ``DYNAMIC_QUANTIZATION_GROUP`` channels, so the matmuls run on the CPU's int8 dot-product units
(AVX512-VNNI, AMX) while everything else runs in bfloat16 (float32 without native bf16). Per-group
scales computed from the live activations are what keep it accurate: a static int8 quantisation
calibrated on drawings measured 0.983 cosine on siglip2-base shapes, this 0.9994 (bench/RESULTS.md).

The conversion is cached like an ONNX export (``export_cache``), with its own accuracy check: the
execution at the chosen precision is measured against float32 transformers on the probe inputs when the
IR is built.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import numpy as np

from search.heap import release_freed_memory
from search.model.backends.accuracy import Reference, probe_inputs
from search.model.backends.base import BackendUnavailable, RuntimeChoice
from search.model.backends.export_cache import MIN_COSINE, Export, load_or_build
from search.model.backends.onnx_backend import TEXT, VISION
from search.model.backends.progress import report
from search.model.backends.torch_backend import cpu_has_native_bf16
from search.model.weights import Checkpoint

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "int8")
IR = {VISION: "vision.xml", TEXT: "text.xml"}
REFERENCE = "reference.npz"  # the float32 outputs on the probe inputs, kept with the float IR
# Activation channels per int8 scale. Measured on siglip2-base shapes at batch 1 (bench/bench_int8.py,
# 2-core Zen 4, same run): bf16 598 ms; groups of 64 / 128 / 256 / 768: 468 / 432 / 418 / 411 ms, worst
# cosine 0.99944 / 0.99944 / 0.99942 / 0.99939. 256 divides base's 768 and 3072 (large's 1024, 4096).
DYNAMIC_QUANTIZATION_GROUP = 256


def _block_vendor_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry out of this process.

    Both import ``openvino_telemetry`` when they can, and with no consent file it sends events to Google
    Analytics by default: each event forks the process (``multiprocessing``), so a model conversion
    holding a 1.5 GB checkpoint forked copies of itself that tried to reach the internet from a
    catalog's server. Both fall back to a stub when the package cannot be imported (their own
    ``except ImportError``), which is what a ``None`` in ``sys.modules`` makes every import of it do.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def _import_openvino() -> object:
    _block_vendor_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("openvino is not installed (pip install openvino)") from exc
    return openvino


def _import_nncf() -> object:
    _block_vendor_telemetry()
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailable("nncf is not installed (pip install 'vitrine[cpu]' or nncf)") from exc
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        nncf.set_log_level(logging.ERROR)  # its import sets INFO: compression tables in a service log
    return nncf


def compile_config(precision: str, threads: int | None) -> dict[str, object]:
    """OpenVINO's CPU settings for a precision (int8: int8 weights, the rest in the fastest exact-enough type)."""
    if precision == "int8":
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "bf16" if cpu_has_native_bf16() else "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_QUANTIZATION_GROUP,
        }
    else:
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32"}
    config["PERFORMANCE_HINT"] = "LATENCY"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _compile(ov: object, path: Path, precision: str, threads: int | None) -> object:
    return ov.Core().compile_model(str(path), "CPU", compile_config(precision, threads))


class OpenVinoBackend:
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
        allow_build: bool = True,
    ) -> OpenVinoBackend:
        export = ensure_export(model_id, choice, cache_dir, checkpoint=checkpoint, allow_build=allow_build)
        return cls(export, choice, threads)

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return np.asarray(self.vision(pixels)[0], dtype=np.float32)

    def text_features(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        return np.asarray(self.text(ids)[0], dtype=np.float32)


def ensure_export(
    model_id: str,
    choice: RuntimeChoice,
    cache_dir: Path,
    *,
    checkpoint: Checkpoint | None = None,
    allow_build: bool = True,
) -> Export:
    """The accepted, verified conversion for ``choice`` (built first unless ``allow_build`` is False:
    ``ExportMissing`` then). A conversion refused by its accuracy check raises BackendUnavailable."""
    if choice.precision not in PRECISIONS:
        raise BackendUnavailable(f"openvino runs float32, bfloat16 or int8, not {choice.precision}")
    if choice.device != "cpu":
        raise BackendUnavailable("the openvino runtime adapter runs on CPU; use torch on CUDA")
    _import_openvino()
    if choice.precision == "int8":
        _import_nncf()
    key = (checkpoint or Checkpoint(model_id)).export_key

    def build_export(folder: Path) -> dict:
        if choice.precision != "int8":
            return build(model_id, choice, folder)
        # int8 compresses the float conversion that ``auto`` falls back to when int8 is refused: built
        # (and kept) first, so that fallback never converts the checkpoint a second time.
        float_choice = RuntimeChoice("openvino", float_fallback())
        source = load_or_build(
            cache_dir,
            key,
            f"openvino-{float_choice.precision}",
            lambda f: build(model_id, float_choice, f),
        )
        return build(model_id, choice, folder, source=source.folder)

    export = load_or_build(
        cache_dir, key, f"openvino-{choice.precision}", build_export, allow_build=allow_build
    )
    if not export.accepted:
        raise BackendUnavailable(
            f"openvino {choice.precision} of {model_id} is refused: cosine to float32 "
            f"{export.manifest.get('cosine')} < {MIN_COSINE}"
        )
    return export


def float_fallback() -> str:
    """The float precision OpenVINO runs best here: the one ``auto`` falls back to from int8."""
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def build(model_id: str, choice: RuntimeChoice, folder: Path, source: Path | None = None) -> dict:
    """OpenVINO IR of the checkpoint (float32 weights), or for int8 the float IR in ``source`` with its
    weights compressed to int8; then the accuracy check at the chosen precision.

    One tower at a time, converted straight from torch (no ONNX file in between), each freed before the
    next: the peak holds one tower, not the whole model plus its ONNX graph plus its IR (measured for
    siglip2-base-512: bench/RESULTS.md, "First start"). The float32 reference outputs are kept in the
    float export (``reference.npz``), so the int8 step never loads torch's model.
    """
    import torch

    ov = _import_openvino()
    if source is None:
        reference = _convert(ov, model_id, folder)
    else:
        reference = Reference.load(source / REFERENCE)
        report(62, "compressing the weights to int8")
        _compress(ov, source, folder)
    base = 85 if source is not None else 45
    report(base, f"checking {choice} against float32")
    facts = reference.check(
        choice,
        lambda pixels: _run_once(ov, folder / IR[VISION], choice.precision, pixels),
        lambda ids: _run_once(ov, folder / IR[TEXT], choice.precision, ids),
    )
    return facts | {"openvino": ov.__version__, "torch": torch.__version__}


def _run_once(ov: object, path: Path, precision: str, inputs: np.ndarray) -> np.ndarray:
    """One tower compiled, run on ``inputs`` and released (so the two towers are never compiled at once)."""
    compiled = _compile(ov, path, precision, None)
    try:
        return np.asarray(compiled(inputs)[0], dtype=np.float32)
    finally:
        del compiled
        gc.collect()


def _convert(ov: object, model_id: str, folder: Path) -> Reference:
    """Each tower of the checkpoint as OpenVINO IR with float32 weights (the precision is chosen when
    compiling, per machine), and the float32 reference outputs, saved beside them."""
    import torch
    from transformers import AutoConfig, SiglipTextModel, SiglipVisionModel

    config = AutoConfig.from_pretrained(model_id)
    pixels, ids = probe_inputs(config)
    outputs = {}
    towers = (
        (VISION, SiglipVisionModel, "pixel_values", pixels, 5),
        (TEXT, SiglipTextModel, "input_ids", ids, 25),
    )
    for name, tower_class, input_name, probes, percent in towers:
        tower = name.split(".")[0]
        report(percent, f"loading the {tower} tower in float32")
        model = tower_class.from_pretrained(model_id, dtype=torch.float32).eval()
        report(percent + 5, f"computing the {tower} tower's float32 reference")
        with torch.inference_mode():
            outputs[name] = model(**{input_name: torch.from_numpy(probes)}).pooler_output.numpy()
        report(percent + 8, f"converting the {tower} tower to OpenVINO IR")
        # One example input: the shapes stay dynamic ([?, ...]; the accuracy check below runs all the
        # probes as one batch), and tracing 512 px activations of one picture instead of two took the
        # vision tower's step from 2.3 to 1.8 GB for base-512.
        graph = ov.convert_model(_pooled(model, input_name), example_input=torch.from_numpy(probes[:1]))
        ov.save_model(graph, str(folder / IR[name]), compress_to_fp16=False)
        del graph, model
        gc.collect()
        release_freed_memory()  # else glibc keeps the vision tower's freed graph under the text tower's
    scale, bias = _logit_scale_and_bias(model_id)
    reference = Reference(pixels, ids, outputs[VISION], outputs[TEXT], scale, bias)
    reference.save(folder / REFERENCE)
    return reference


def _pooled(model: object, input_name: str) -> object:
    """A tower's pooled output as a plain module of one input (what the converter traces)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**{input_name: inputs}).pooler_output

    return Pooled()


def _logit_scale_and_bias(model_id: str) -> tuple[float, float]:
    """exp(logit_scale) and logit_bias, read from the weight files alone (not the 1.5 GB model)."""
    import torch

    for path in sorted(Path(model_id).glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as weights:
            if "logit_scale" in weights.keys():  # noqa: SIM118 (safe_open has no __contains__)
                scale = weights.get_tensor("logit_scale").float()
                bias = weights.get_tensor("logit_bias").float()
                return float(scale.exp().item()), float(bias.item())
    from transformers import SiglipModel  # .bin checkpoints: the whole model, once

    model = SiglipModel.from_pretrained(model_id, dtype=torch.float32)
    return float(model.logit_scale.float().exp().item()), float(model.logit_bias.float().item())


def _compress(ov: object, source: Path, folder: Path) -> None:
    """The float IR in ``source`` with the weights of every matmul and embedding as int8 (NNCF,
    data-free, one scale per output channel)."""
    nncf = _import_nncf()
    for ir_name in IR.values():
        ir = nncf.compress_weights(
            ov.Core().read_model(str(source / ir_name)), mode=nncf.CompressWeightsMode.INT8_SYM
        )
        ov.save_model(ir, str(folder / ir_name), compress_to_fp16=False)
        del ir
        gc.collect()
        release_freed_memory()  # the vision tower's float32 weights, before the text tower's are read
