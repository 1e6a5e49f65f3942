"""Embedding products into the catalog: ``add`` (a manifest or a folder) and ``reembed`` (a new model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from indexer.cli import Command, Context, progress_arguments


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per transaction (VITRINE_BATCH_SIZE)"
    )
    parser.add_argument("--workers", type=int, default=4, help="threads that fetch, decode and preprocess")
    parser.add_argument(
        "--refetch", action="store_true", help="download URLs again and re-embed if content changed"
    )
    progress_arguments(parser)


def add(context: Context) -> int:
    from indexer.manifest import read_manifest
    from indexer.pipeline import Indexer
    from search.model.space import SpaceMismatch, space_of
    from search.wiring import build_image_loader, json_limits, open_products, product_limits, settled_space

    args, settings = context.args, context.settings
    manifest = read_manifest(args.manifest, product_limits(settings), json_limits(settings))
    with context.encoder() as encoder:
        served = space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint)
        recorded = settled_space(settings, served)
        if recorded.key != served.key:
            raise SpaceMismatch(recorded, served)
        images = build_image_loader(settings, encoder.info.image_size)
        service = open_products(settings, encoder=encoder, images=images, model=served.key)
        indexer = Indexer(
            service,
            batch_size=args.batch_size or settings.batch_size,
            workers=args.workers,
            refetch=args.refetch,
            progress=not args.no_progress,
            progress_every=args.progress_every,
        )
        try:
            summary = indexer.run(manifest)
        finally:
            images.close()
            service.catalog.close()
    return context.finish(summary)


def _reembed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    progress_arguments(parser)


def reembed(context: Context) -> int:
    from indexer.progress import Progress
    from indexer.reembed import reembed as run_reembed
    from search.catalog import Catalog
    from search.catalog.spaces import ids_outside
    from search.model.space import space_of
    from search.wiring import build_image_loader, open_products

    args, settings = context.args, context.settings
    with context.encoder() as encoder:
        served = space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint)
        images = build_image_loader(settings, encoder.info.image_size)
        catalog = Catalog.open(settings.resolved_database_url)
        try:
            pending = len(ids_outside(catalog, served.key))
        finally:
            catalog.close()
        service = open_products(settings, encoder=encoder, images=images, model=served.key)
        progress = Progress(pending, enabled=not args.no_progress, every=args.progress_every)
        try:
            summary = run_reembed(
                service,
                encoder,
                images,
                served,
                batch_size=args.batch_size or settings.batch_size,
                progress=progress,
            )
        finally:
            images.close()
            service.catalog.close()
    return context.finish(summary)


COMMANDS = [
    Command("add", "index a manifest (CSV, JSONL) or a folder of images", add, _add_arguments),
    Command("reembed", "re-embed every product with VITRINE_MODEL (resumable)", reembed, _reembed_arguments),
]
