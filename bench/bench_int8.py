"""Ways to run the vision tower in int8 with OpenVINO, against bfloat16, on the same pictures.

    .venv/bin/python bench/bench_int8.py            # base-512 random model (exact shapes)
    .venv/bin/python bench/bench_int8.py --static   # also a static (calibrated) int8 quantisation

Starts from the cached float32-weight OpenVINO conversion of the checkpoint (built first where
missing: minutes for base-512). Variants, measured round-robin at batch 1:
- bfloat16 (the float baseline);
- int8 weights (NNCF's data-free per-channel compression), activations quantised at run time in groups
  of G channels (``DYNAMIC_QUANTIZATION_GROUP_SIZE``; 0 = off: weights decompressed before each matmul);
- ``--static``: NNCF ``quantize`` (transformer preset, SmoothQuant) calibrated on 24 drawings that are
  not among the evaluation pictures.
Accuracy: the worst cosine to float32 transformers over 16 pictures (the accuracy check's 6 probes, 6
other drawings, 4 smooth-noise pictures).
"""

from __future__ import annotations

import argparse
import random
import time

from _common import ROOT, ensure_model, median, write_result


def drawings(count: int, seed: int, size: int):
    import numpy as np

    from search.model.backends.probe_pictures import COLORS, PATTERNS, draw_pattern

    rng = random.Random(seed)
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        picture = draw_pattern(
            rng.choice(PATTERNS), COLORS[rng.choice(list(COLORS))], size, random.Random(seed * 1000 + i)
        )
        out[i] = np.asarray(picture, np.float32).transpose(2, 0, 1) / 127.5 - 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 64, 128, 256])
    parser.add_argument("--static", action="store_true")
    parser.add_argument("--cache", default=str(ROOT / "models" / "bench-data" / "models"))
    args = parser.parse_args()

    from pathlib import Path

    import nncf
    import numpy as np
    import openvino as ov
    import torch
    from transformers import SiglipModel

    from search.model.backends import load_backend
    from search.model.backends.accuracy import probe_inputs
    from search.model.backends.base import min_cosine
    from search.model.backends.openvino_backend import IR, VISION, compile_config

    model_dir = ensure_model(args.size)
    float_ir = load_backend(str(model_dir), runtime="openvino", dtype="bfloat16", cache_dir=Path(args.cache))
    vision_xml = str(float_ir.export.path(IR[VISION]))
    del float_ir

    model = SiglipModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    size = int(model.config.vision_config.image_size)
    probes, _ = probe_inputs(model.config)
    noise = np.random.default_rng(7).normal(0, 0.5, (4, 3, size // 8, size // 8))
    smooth = np.clip(np.repeat(np.repeat(noise, 8, 2), 8, 3), -1, 1).astype(np.float32)
    pictures = np.concatenate([probes, drawings(6, 99, size), smooth])
    with torch.inference_mode():
        reference = np.concatenate(
            [
                model.get_image_features(
                    pixel_values=torch.from_numpy(pictures[i : i + 4])
                ).pooler_output.numpy()
                for i in range(0, len(pictures), 4)
            ]
        )
    del model

    core = ov.Core()
    bf16 = compile_config("bfloat16", None)
    variants = {"bfloat16": core.compile_model(core.read_model(vision_xml), "CPU", bf16)}
    compressed = nncf.compress_weights(core.read_model(vision_xml), mode=nncf.CompressWeightsMode.INT8_SYM)
    for group in args.groups:
        config = bf16 | {"DYNAMIC_QUANTIZATION_GROUP_SIZE": group}
        variants[f"int8 weights, activation groups of {group}"] = core.compile_model(
            compressed, "CPU", config
        )
    if args.static:
        started = time.perf_counter()
        calibration = nncf.Dataset(list(drawings(24, 5, size)[:, None]))
        quantized = nncf.quantize(
            core.read_model(vision_xml), calibration, model_type=nncf.ModelType.TRANSFORMER, subset_size=24
        )
        print(f"static quantisation: {time.perf_counter() - started:.0f} s", flush=True)
        variants["static int8 (calibrated)"] = core.compile_model(quantized, "CPU", bf16)

    cosines = {}
    for name, compiled in variants.items():
        features = np.concatenate([compiled(pictures[i : i + 1])[0] for i in range(len(pictures))])
        cosines[name] = min_cosine(features, reference)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    one = pictures[:1]
    for _ in range(args.runs):
        for name, compiled in variants.items():
            started = time.perf_counter()
            compiled(one)
            samples[name].append(time.perf_counter() - started)

    base = median(samples["bfloat16"])
    rows = []
    print(f"\nmodel {args.size} (random weights), vision tower, batch 1, {args.runs} round-robin runs")
    print("| variant | one image (median, min-max) | vs bfloat16 | worst cosine to float32 (16 pictures) |")
    print("|---|---|---|---|")
    for name in variants:
        ms = [s * 1000 for s in samples[name]]
        row = {
            "variant": name,
            "image_ms": median(samples[name]) * 1000,
            "cosine": cosines[name],
            "samples_ms": ms,
        }
        rows.append(row)
        print(
            f"| {name} | {row['image_ms']:.0f} ms ({min(ms):.0f}-{max(ms):.0f}) "
            f"| {base / median(samples[name]):.2f}x | {cosines[name]:.6f} |"
        )
    print(f"results: {write_result('int8-' + args.size, {'size': args.size, 'rows': rows})}")


if __name__ == "__main__":
    main()
