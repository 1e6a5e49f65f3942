"""Every runtime side by side: speed and cosine to float32 transformers, so a user can choose.

    .venv/bin/python bench/bench_runtimes.py                      # base-512 random model (exact shapes)
    .venv/bin/python bench/bench_runtimes.py --size tiny --runs 3 # smoke run

For each runtime: one image (batch 1) latency, images/s at batch 4, one text (batch 1) latency, and the
worst cosine to torch float32 over real sample-catalog pictures and product texts. Runtimes are measured
round-robin (one sample of each in turn), so a busy neighbour on a shared machine slows all alike;
ratios are against torch float32 from the same run. ONNX exports come from the export cache (built
first where missing: minutes for base-512). ``--compile`` adds torch.compile(bfloat16).
"""

from __future__ import annotations

import argparse
import random
import time

from _common import ROOT, ensure_model, median, write_result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", default=str(ROOT / "models" / "bench-data" / "models"))
    parser.add_argument(
        "--runtimes", nargs="+", default=["torch-float32", "torch-bfloat16", "onnx-float32", "onnx-int8"]
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile (bfloat16)")
    args = parser.parse_args()

    from pathlib import Path

    import numpy as np
    import torch

    from search.model.backends import load_backend
    from search.model.backends.base import BackendUnavailable, RuntimeChoice, min_cosine
    from search.model.backends.probe_pictures import COLORS, draw_pattern
    from search.model.encoder import Encoder

    model_dir = ensure_model(args.size)
    reference = Encoder.load(str(model_dir), runtime="torch", device="cpu", dtype="float32")
    rng = random.Random(0)
    pictures = [
        draw_pattern(kind, color, 512, rng)
        for kind, color in [("checks", COLORS["beige"]), ("planks", COLORS["oak"]), ("dots", COLORS["slate"])]
        for _ in range(1)
    ][:3]
    pixels = reference.preprocess(pictures)
    texts = ["beige matte ceramic floor tile 60x60", "oak laminate plank", "heat pump outdoor unit"]
    ids = reference.tokenize(texts)

    runtimes = {}
    refused: set[str] = set()
    for name in args.runtimes:
        kind, precision = name.split("-")
        started = time.perf_counter()
        try:
            runtimes[name] = load_backend(
                str(model_dir), runtime=kind, dtype=precision, cache_dir=Path(args.cache)
            )
        except BackendUnavailable as exc:
            if "refused" not in str(exc):
                raise
            # Measured all the same, so the table shows what the accuracy check turned down.
            runtimes[name] = load_refused(model_dir, RuntimeChoice(kind, precision), Path(args.cache))
            refused.add(name)
        print(f"{name}: loaded in {time.perf_counter() - started:.1f} s", flush=True)
    if args.compile:
        compiled = load_backend(str(model_dir), runtime="torch", dtype="bfloat16")
        compiled.model.vision_model = torch.compile(compiled.model.vision_model)
        compiled.model.text_model = torch.compile(compiled.model.text_model)
        started = time.perf_counter()
        compiled.image_features(pixels[:1]), compiled.text_features(ids[:1])
        print(f"torch.compile: first call (compilation) {time.perf_counter() - started:.1f} s", flush=True)
        runtimes["torch.compile-bfloat16"] = compiled

    reference_image = (
        runtimes["torch-float32"].image_features(pixels) if "torch-float32" in runtimes else None
    )
    reference_text = runtimes["torch-float32"].text_features(ids) if "torch-float32" in runtimes else None
    samples: dict[str, dict[str, list[float]]] = {
        name: {"image": [], "batch4": [], "text": []} for name in runtimes
    }
    for runtime in runtimes.values():  # warm-up
        runtime.image_features(pixels[:1]), runtime.text_features(ids[:1])
    batch4 = np.concatenate([pixels, pixels[:1]])
    for run in range(args.runs):
        for name, runtime in runtimes.items():
            one = slice(run % 3, run % 3 + 1)
            for key, work, data in (
                ("image", runtime.image_features, pixels[one]),
                ("text", runtime.text_features, ids[one]),
                ("batch4", runtime.image_features, batch4),
            ):
                if key == "batch4" and run >= max(2, args.runs // 2):
                    continue  # the slowest measurement: fewer samples
                started = time.perf_counter()
                work(data)
                samples[name][key].append(time.perf_counter() - started)
        print(f"run {run + 1}/{args.runs} done", flush=True)

    rows = []
    base = samples.get("torch-float32")
    for name, runtime in runtimes.items():
        row = {
            "runtime": name,
            "image_ms": median(samples[name]["image"]) * 1000,
            "images_per_s_batch4": 4 / median(samples[name]["batch4"]),
            "text_ms": median(samples[name]["text"]) * 1000,
            "samples_s": samples[name],
        }
        if reference_image is not None:
            row["image_cosine"] = min_cosine(runtime.image_features(pixels), reference_image)
            row["text_cosine"] = min_cosine(runtime.text_features(ids), reference_text)
        if base:
            row["image_speedup"] = median(base["image"]) / median(samples[name]["image"])
            row["text_speedup"] = median(base["text"]) / median(samples[name]["text"])
        rows.append(row)
    print(
        f"\nmodel {args.size} (random weights), {args.runs} round-robin runs, medians; ratios vs torch-float32"
    )
    print("| runtime | one image | x | images/s at batch 4 | one text | x | cosine image | cosine text |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['runtime']}{' (refused: below 0.999)' if row['runtime'] in refused else ''} | {row['image_ms']:.0f} ms | {row.get('image_speedup', 0):.2f} "
            f"| {row['images_per_s_batch4']:.2f} | {row['text_ms']:.1f} ms | {row.get('text_speedup', 0):.2f} "
            f"| {row.get('image_cosine', float('nan')):.6f} | {row.get('text_cosine', float('nan')):.6f} |"
        )
    print(f"results: {write_result('runtimes-' + args.size, {'size': args.size, 'rows': rows})}")


def load_refused(model_dir, choice, cache):
    """The adapter over a cached export that its accuracy check refused (``load_backend`` will not serve it)."""
    from search.model.backends.export_cache import Export, verify
    from search.model.backends.onnx_backend import OnnxBackend
    from search.model.backends.openvino_backend import OpenVinoBackend
    from search.model.weights import Checkpoint

    folder = cache / Checkpoint(str(model_dir)).export_key[:16] / f"{choice.runtime}-{choice.precision}"
    adapter = {"onnx": OnnxBackend, "openvino": OpenVinoBackend}[choice.runtime]
    return adapter(Export(folder, verify(folder)), choice)


if __name__ == "__main__":
    main()
