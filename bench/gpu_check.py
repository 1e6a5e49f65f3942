"""One short, prepared GPU check (not run here: no GPU was lent to the session that wrote it).

On the device machine (Python 3.12, CUDA torch, transformers; no fastapi/faiss/sqlalchemy), from the
repository root:

    python bench/gpu_check.py --out "$OUT"         # about 3-5 minutes on an H100/H200

It needs only torch, transformers, numpy and pillow (the encoder path imports nothing web or database);
FAISS is measured when ``import faiss`` works (the official faiss-gpu wheel). It prints and writes:
1. the card, torch/CUDA versions;
2. per precision (float32, bfloat16, float16): one image latency, images/s at batch 64, cosine to float32;
3. images/s at 512 px through the scheduler: 64 threads each submitting one preprocessed image at a
   time (goal: >= 1,500 on an H100), and with decoding + preprocessing of 1024x768 JPEGs in 16 threads;
4. single-request zero-shot p50 (one image + 3 cached labels through the encoder; goal <= 15 ms);
5. FAISS flat inner product at 1M x 768: GPU vs CPU, one query and a batch of 64.
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
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from search.encoder import BatchSettings, Encoder
    from search.random_model import write_random_model
    from search.runtimes.base import min_cosine

    report: dict[str, object] = {}

    def say(key: str, value: object) -> None:
        report[key] = value
        print(f"{key}: {value}", flush=True)

    assert torch.cuda.is_available(), "no CUDA device"
    say("device", torch.cuda.get_device_name(0))
    say("versions", {"torch": torch.__version__, "cuda": torch.version.cuda})
    model_dir = Path(args.model)
    if not (model_dir / "config.json").exists():
        write_random_model("base-512", model_dir)

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
            device="cuda",
            dtype=dtype,
            batching=BatchSettings(image_batch=64, text_batch=256, max_wait_ms=2),
        )
    pixels = encoders["float32"].preprocess(pictures[:8])
    reference = encoders["float32"].runtime.image_features(pixels)
    batch64 = np.repeat(pixels, 8, axis=0)
    for dtype, encoder in encoders.items():
        runtime = encoder.runtime
        for _ in range(3):
            runtime.image_features(pixels[:1]), runtime.image_features(batch64)
        one = []
        for _ in range(20):
            torch.cuda.synchronize()
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
    encoder = encoders["bfloat16"] if torch.cuda.is_bf16_supported() else encoders["float16"]

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

    # 5. FAISS ----------------------------------------------------------------------------------------
    try:
        import faiss
    except ImportError:
        say("faiss", "not installed: GPU vs CPU FAISS not measured")
    else:
        vectors = rng.standard_normal((1_000_000, 768), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = vectors[:64] + 0.01
        cpu = faiss.IndexFlatIP(768)
        cpu.add(vectors)
        timings = {}
        indexes = {"cpu": cpu}
        if faiss.get_num_gpus() > 0:
            indexes["gpu"] = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
        for name, index in indexes.items():
            index.search(queries[:1], 10)
            started = time.perf_counter()
            for q in range(10):
                index.search(queries[q : q + 1], 10)
            single = (time.perf_counter() - started) / 10
            started = time.perf_counter()
            index.search(queries, 10)
            timings[name] = {
                "one_query_ms": round(single * 1000, 2),
                "batch64_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        say("faiss flat IP 1M x 768", timings)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
