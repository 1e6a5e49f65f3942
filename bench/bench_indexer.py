"""Indexer throughput against the bare encoder on the same images, in the same run.

    .venv/bin/python bench/bench_indexer.py --size tiny --count 300
    .venv/bin/python bench/bench_indexer.py --size base-512 --count 200

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

from _common import ensure_model, write_result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny", choices=["tiny", "base-512"])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--image-px", type=int, default=512, help="side of the generated images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from PIL import Image

    from indexer.pipeline import Indexer
    from search.db import migrate
    from search.encoder import Encoder
    from search.manifest import read_manifest
    from search.runtime import build_image_loader, open_products
    from search.sample_catalog import write_sample_catalog
    from search.settings import Settings

    model_dir = ensure_model(args.size)
    encoder = Encoder.load(str(model_dir), device="cpu", dtype=args.dtype, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest_path = write_sample_catalog(root / "catalog", args.count, size=args.image_px)
        manifest = read_manifest(manifest_path)

        pictures = [Image.open(root / "catalog" / row.image).convert("RGB") for row in manifest.rows]
        encoder.embed_images(pictures[:2])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(pictures), args.batch_size):
            encoder.embed_images(pictures[start : start + args.batch_size])
        bare_s = time.perf_counter() - started
        del pictures

        settings = Settings(model=str(model_dir), data_dir=root / "data", batch_size=args.batch_size)
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
        assert summary.added == args.count, summary.lines()

    bare_rate, indexer_rate = args.count / bare_s, args.count / indexer_s
    print(
        f"model {args.size} ({args.dtype}), {args.count} generated {args.image_px}px images, batch {args.batch_size}, "
        f"{args.workers} workers"
    )
    print("| path | seconds | images/s |")
    print("|---|---|---|")
    print(f"| bare encoder | {bare_s:.1f} | {bare_rate:.2f} |")
    print(f"| indexer | {indexer_s:.1f} | {indexer_rate:.2f} |")
    print(f"indexer / bare encoder throughput: {indexer_rate / bare_rate:.2f}")
    data = {
        "size": args.size,
        "dtype": args.dtype,
        "count": args.count,
        "image_px": args.image_px,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "bare_s": bare_s,
        "indexer_s": indexer_s,
        "bare_images_per_s": bare_rate,
        "indexer_images_per_s": indexer_rate,
        "ratio": indexer_rate / bare_rate,
    }
    print(f"results: {write_result('indexer-' + args.size, data)}")


if __name__ == "__main__":
    main()
