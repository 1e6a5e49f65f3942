"""One short, prepared GPU check (not run here: no GPU was lent to the session that wrote it).

On the device machine (Python 3.12, CUDA torch, transformers; no fastapi/faiss/sqlalchemy), from the
repository root:

    python bench/gpu_check.py --out "$OUT"         # about 3-5 minutes on an H100/H200
    python bench/gpu_check.py --smoke              # here, first: every step on CPU with the tiny model

It needs only torch, transformers, numpy and pillow (the encoder path imports nothing web or database);
FAISS is measured when ``import faiss`` works (the official faiss-gpu wheel; the device lacks it and it is
too large to carry). It prints and writes:
1. the card, torch/CUDA versions;
2. per precision (float32, bfloat16, float16): one image latency, images/s at batch 64, cosine to float32;
3. images/s at 512 px through the scheduler: 64 threads each submitting one preprocessed image at a
   time (goal: >= 1,500 on an H100), and with decoding + preprocessing of 1024x768 JPEGs in 16 threads;
4. single-request zero-shot p50 (one image + 3 cached labels through the encoder; goal <= 15 ms);
5. FAISS through the service's own index (``VectorIndex`` with ``index_device`` cpu, then cuda): flat at
   1M x 768 and IVF-SQ8 at 200k x 768, ms per query, the top-10 agreement of the two, and that the cuda
   index really searched on the GPU (its ``describe()``) -- one run proves the wiring.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--model", default=str(ROOT / "models" / "base-512"))
    parser.add_argument("--seconds", type=float, default=15, help="length of each throughput run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a dry run of every step on CPU with the tiny model and small indexes: checks this script "
        "before it spends device time (no figure it prints means anything)",
    )
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.seconds = min(args.seconds, 1.0)
        if args.model == parser.get_default("model"):
            args.model = str(ROOT / "models" / "tiny-smoke")

    import numpy as np
    import torch
    from PIL import Image

    from devtools.random_model import write_random_model
    from search.model.backends.base import min_cosine
    from search.model.encoder import BatchSettings, Encoder

    report: dict[str, object] = {}

    def say(key: str, value: object) -> None:
        report[key] = value
        print(f"{key}: {value}", flush=True)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    if args.smoke:
        say("device", "cpu (smoke run: the figures below mean nothing)")
    else:
        assert torch.cuda.is_available(), "no CUDA device"
        say("device", torch.cuda.get_device_name(0))
    say("versions", {"torch": torch.__version__, "cuda": torch.version.cuda})
    model_dir = Path(args.model)
    if not (model_dir / "config.json").exists():
        write_random_model("tiny" if args.smoke else "base-512", model_dir)

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(16):
        array = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        picture = Image.fromarray(array).resize((1024, 768), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in photos]

    # 2. Precisions -----------------------------------------------------------------------------------
    encoders = {}
    for dtype in ("float32", "bfloat16", "float16"):
        encoders[dtype] = Encoder.load(
            str(model_dir),
            runtime="torch",
            device=device,
            dtype=dtype,
            batching=BatchSettings(image_batch=64, text_batch=256, max_wait_ms=2),
        )
    pixels = encoders["float32"].preprocess(pictures[:8])
    reference = encoders["float32"].backend.image_features(pixels)
    batch64 = np.repeat(pixels, 8, axis=0)
    for dtype, encoder in encoders.items():
        runtime = encoder.backend
        for _ in range(3):
            runtime.image_features(pixels[:1]), runtime.image_features(batch64)
        one = []
        for _ in range(20):
            synchronize()
            started = time.perf_counter()
            runtime.image_features(pixels[:1])
            one.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(5):
            runtime.image_features(batch64)
        rate = 5 * 64 / (time.perf_counter() - started)
        say(
            f"precision {dtype}",
            {
                "one_image_ms": round(median(one) * 1000, 2),
                "images_per_s_batch64": round(rate, 1),
                "cosine_to_float32": round(min_cosine(runtime.image_features(pixels), reference), 6),
            },
        )
    for dtype in ("float32", "float16"):
        encoders.pop(dtype).close()
    bf16 = args.smoke or torch.cuda.is_bf16_supported()
    encoder = encoders["bfloat16"] if bf16 else encoders["float16"]

    # 3. Throughput through the scheduler -------------------------------------------------------------
    def through_scheduler(threads: int, work) -> float:
        done = [0]
        stop = time.monotonic() + args.seconds
        lock = threading.Lock()

        def client(index: int) -> None:
            while time.monotonic() < stop:
                work(index)
                with lock:
                    done[0] += 1

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(client, range(threads)))
        return done[0] / (time.perf_counter() - started)

    one_pixel = [encoder.preprocess([picture]) for picture in pictures]
    say(
        "scheduler images/s, 64 clients, preprocessed",
        round(through_scheduler(64, lambda i: encoder.embed_pixels(one_pixel[i % 16])), 1),
    )

    def from_jpeg(i: int) -> None:
        picture = Image.open(io.BytesIO(photos[i % 16]))
        picture.draft("RGB", (512, 512))
        encoder.embed_images([picture.convert("RGB")])

    say(
        "scheduler images/s, 64 clients, JPEG decode + preprocess in the clients",
        round(through_scheduler(64, from_jpeg), 1),
    )
    say(
        "image batches formed (rows/batch)",
        round(encoder.images_queue.stats.rows / max(1, encoder.images_queue.stats.batches), 1),
    )

    # 4. Zero-shot, one request -----------------------------------------------------------------------
    labels = [
        "This is a photo of ceramic tile.",
        "This is a photo of oak plank.",
        "This is a photo of a pump.",
    ]
    text_vectors = encoder.embed_texts(labels)
    latencies = []
    for i in range(30):
        started = time.perf_counter()
        image_vectors = encoder.embed_images([pictures[i % 16]])
        encoder.logits(image_vectors, encoder.embed_texts(labels))
        latencies.append(time.perf_counter() - started)
    say(
        "zero-shot one request p50 ms (cached labels, decoded picture)",
        round(median(latencies[5:]) * 1000, 2),
    )
    assert text_vectors.shape[0] == 3

    # 5. FAISS, through the service's index code (search.index.VectorIndex) ----------------------------
    try:
        import faiss  # the official faiss-gpu wheel
    except ImportError:
        say("faiss", "not installed: the index on the GPU not measured")
    else:
        import tempfile

        from search.index import IndexSpec, VectorIndex

        say("faiss", {"version": faiss.__version__, "gpus": faiss.get_num_gpus()})

        def unit(rows: np.ndarray) -> np.ndarray:
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

        def in_batches(vectors: np.ndarray, size: int = 100_000):
            for start in range(0, len(vectors), size):
                chunk = vectors[start : start + size]
                yield np.arange(start, start + len(chunk)), chunk

        sizes = (("flat", 5_000), ("ivf", 20_000)) if args.smoke else (("flat", 1_000_000), ("ivf", 200_000))
        for kind, count in sizes:
            vectors = unit(rng.standard_normal((count, 768), dtype=np.float32))
            queries = unit(vectors[:64] + 0.05 * rng.standard_normal((64, 768), dtype=np.float32))
            found, figures = {}, {}
            with tempfile.TemporaryDirectory() as folder:
                # cuda: the GPU copy or a start-up error, never the CPU (smoke: auto, which is the CPU)
                for index_device in ("cpu", "auto" if args.smoke else "cuda"):
                    index = VectorIndex.build(
                        768,
                        "gpu-check",
                        0,
                        IndexSpec(kind=kind, device=index_device),
                        in_batches(vectors),
                        count=count,
                        path=Path(folder) / f"{kind}-{index_device}.faiss",
                    )
                    index.search(queries[0], 10)
                    started = time.perf_counter()
                    found[index_device] = [{hit.id for hit in index.search(q, 10)} for q in queries]
                    excluded = [
                        [hit.id for hit in index.search(q, 10, excluded_ids=[i])]
                        for i, q in enumerate(queries)
                    ]
                    figures[index_device] = {
                        "search_device": index.describe()["search_device"],
                        "one_query_ms": round((time.perf_counter() - started) / 128 * 1000, 2),
                        "excluded_ids_respected": all(i not in ids for i, ids in enumerate(excluded)),
                    }
                    del index
            other = "auto" if args.smoke else "cuda"
            figures[f"top10_agreement_cpu_vs_{other}"] = round(
                float(np.mean([len(a & b) / 10 for a, b in zip(found["cpu"], found[other], strict=True)])), 4
            )
            say(f"faiss {kind} {count} x 768 via VectorIndex, 64 queries + 64 with an exclusion", figures)
            if not args.smoke:
                assert figures["cuda"]["search_device"].startswith("cuda"), (
                    "the index did not search on the GPU"
                )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
