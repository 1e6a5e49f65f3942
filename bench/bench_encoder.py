"""Latency of one image embedding and one text embedding, float32 vs bfloat16, on this machine.

    .venv/bin/python bench/bench_encoder.py                 # base-512 random model (exact shapes)
    .venv/bin/python bench/bench_encoder.py --size tiny     # quick smoke run

Image: one 512x512 JPEG through the full path a request takes (base64 decode, PIL decode, processor,
vision tower, normalisation). Text: one query of ~10 words, a new string each run so the text cache
never answers. Median and p90 over --runs runs after a warm-up; the bf16/fp32 ratio is from this run.
"""

from __future__ import annotations

import argparse
import base64
import io

from _common import ensure_model, median, percentile, timed, write_result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()

    import random

    import numpy as np

    from search.images.loader import ImageLimits, decode_image
    from search.model.backends.probe_pictures import COLORS, draw_pattern
    from search.model.encoder import Encoder

    model_dir = ensure_model(args.size)
    buffer = io.BytesIO()
    draw_pattern("checks", COLORS["beige"], 512, random.Random(0)).save(buffer, "JPEG", quality=90)
    payload = base64.b64encode(buffer.getvalue()).decode()
    limits = ImageLimits(max_bytes=20 << 20, max_pixels=40_000_000)

    def measure(dtype: str) -> tuple[dict, np.ndarray]:
        encoder = Encoder.load(str(model_dir), device="cpu", dtype=dtype)
        counter = iter(range(10**6))

        def image_path() -> np.ndarray:
            return encoder.embed_images([decode_image(base64.b64decode(payload), limits)])

        def text_path() -> np.ndarray:
            # A new string each run: the encoder's text cache must not answer.
            return encoder.embed_texts([f"beige matte ceramic floor tile 60x60 number {next(counter)}"])

        image_s = timed(image_path, args.runs)
        text_s = timed(text_path, args.runs)
        row = {
            "dtype": dtype,
            "image_median_s": median(image_s),
            "image_p90_s": percentile(image_s, 90),
            "text_median_s": median(text_s),
            "text_p90_s": percentile(text_s, 90),
            "image_samples_s": image_s,
            "text_samples_s": text_s,
        }
        return row, image_path()[0]

    rows = []
    vectors = {}
    for dtype in args.dtypes:
        row, vectors[dtype] = measure(dtype)
        rows.append(row)
    base = rows[0]
    print(f"model: {args.size} random weights ({model_dir}); {args.runs} runs after 1 warm-up")
    print(
        "| dtype | image median | image p90 | text median | text p90 | image x vs first | text x vs first |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['dtype']} | {row['image_median_s'] * 1000:.0f} ms | {row['image_p90_s'] * 1000:.0f} ms "
            f"| {row['text_median_s'] * 1000:.1f} ms | {row['text_p90_s'] * 1000:.1f} ms "
            f"| {base['image_median_s'] / row['image_median_s']:.2f} | {base['text_median_s'] / row['text_median_s']:.2f} |"
        )
    if len(vectors) > 1:
        first, *others = list(vectors)
        for other in others:
            cosine = float(np.dot(vectors[first], vectors[other]))
            print(f"cosine({first}, {other}) of the image embedding: {cosine:.6f}")
            rows.append({"cosine": {"a": first, "b": other, "value": cosine}})
    print(f"results: {write_result('encoder-' + args.size, {'size': args.size, 'rows': rows})}")


if __name__ == "__main__":
    main()
