"""Indexer throughput against the bare encoder on the same images, in the same run, per runtime.

    .venv/bin/python bench/bench_indexer.py --size tiny --count 300
    .venv/bin/python bench/bench_indexer.py --size base-512 --count 24 --configs torch/float32 auto/auto

- bare encoder: the images already decoded in memory, `Encoder.embed_images` in batches (processor +
  model): the floor the indexer cannot beat;
- indexer: `Indexer.run` on the manifest into a fresh SQLite database and FAISS index: reading files,
  hashing, decoding, preprocessing in worker threads, embedding, one transaction per batch, storing
  image copies, and saving the index at the end.
The ratio indexer/bare shows what fetching, decoding and storage cost on top of the model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT, ensure_model, write_result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny", choices=["tiny", "base-512"])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--image-px", type=int, default=512, help="side of the generated images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["torch/float32"],
        help="runtime/dtype pairs to compare (torch/float32 was the only path before runtimes)",
    )
    parser.add_argument("--cache", default=str(ROOT / "models" / "bench-data" / "models"))
    args = parser.parse_args()

    from PIL import Image

    from devtools.sample_catalog import write_sample_catalog
    from indexer.manifest import read_manifest
    from indexer.pipeline import Indexer
    from search.catalog.db import migrate
    from search.model.encoder import Encoder
    from search.settings import Settings
    from search.wiring import build_image_loader, open_products

    model_dir = ensure_model(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest_path = write_sample_catalog(root / "catalog", args.count, size=args.image_px)
        manifest = read_manifest(manifest_path)
        for config in args.configs:
            runtime, dtype = config.split("/")
            encoder = Encoder.load(
                str(model_dir), runtime=runtime, device="cpu", dtype=dtype, cache_dir=Path(args.cache)
            )
            pictures = [Image.open(root / "catalog" / row.image).convert("RGB") for row in manifest.rows]
            encoder.embed_images(pictures[:2])  # warm-up
            started = time.perf_counter()
            for start in range(0, len(pictures), args.batch_size):
                encoder.embed_images(pictures[start : start + args.batch_size])
            bare_s = time.perf_counter() - started
            del pictures

            settings = Settings(
                model=str(model_dir), data_dir=root / f"data-{len(rows)}", batch_size=args.batch_size
            )
            migrate(settings.resolved_database_url)
            images = build_image_loader(settings)
            service = open_products(settings, encoder=encoder, images=images)
            indexer = Indexer(
                service, encoder, images, batch_size=args.batch_size, workers=args.workers, progress=False
            )
            started = time.perf_counter()
            summary = indexer.run(manifest)
            indexer_s = time.perf_counter() - started
            images.close()
            service.catalog.close()
            encoder.close()
            assert summary.added == args.count, summary.lines()
            rows.append(
                {
                    "config": f"{encoder.info.runtime}/{encoder.info.dtype}",
                    "bare_s": bare_s,
                    "indexer_s": indexer_s,
                    "bare_images_per_s": args.count / bare_s,
                    "indexer_images_per_s": args.count / indexer_s,
                    "ratio": bare_s / indexer_s,
                }
            )

    print(
        f"model {args.size}, {args.count} generated {args.image_px}px images, batch {args.batch_size}, "
        f"{args.workers} workers"
    )
    print("| runtime | bare encoder images/s | indexer images/s | indexer / bare | indexer vs first |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['config']} | {row['bare_images_per_s']:.2f} | {row['indexer_images_per_s']:.2f} "
            f"| {row['ratio']:.2f} | {row['indexer_images_per_s'] / rows[0]['indexer_images_per_s']:.2f} |"
        )
    data = {
        "size": args.size,
        "count": args.count,
        "image_px": args.image_px,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "rows": rows,
    }
    print(f"results: {write_result('indexer-' + args.size, data)}")


if __name__ == "__main__":
    main()
