"""Embedding products into the catalog: ``add`` (a manifest or a folder) and ``reembed`` (a new model),
on the local engine or on Ray (``--engine``, ``indexer.engines``)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.cli import Command, Context, progress_arguments
from indexer.engines import engine_arguments, job_options, open_engine

if TYPE_CHECKING:
    from indexer.engines import Engine
    from search.catalog.service import ProductService


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per transaction (VITRINE_BATCH_SIZE)"
    )
    parser.add_argument("--workers", type=int, default=4, help="threads that fetch, decode and preprocess")
    parser.add_argument(
        "--refetch", action="store_true", help="download URLs again and re-embed if content changed"
    )
    engine_arguments(parser)
    progress_arguments(parser)


@contextlib.contextmanager
def _products(context: Context, engine: Engine) -> Iterator[ProductService]:
    """The catalog in the engine's embedding space, with ``--out`` shards following its commits."""
    from indexer.vector_files import ShardWriter
    from search.wiring import open_products

    service = open_products(context.settings, engine.encoder, engine.images, model=engine.space.key)
    try:
        if context.args.out is not None:
            service.writer.listeners.append(ShardWriter(context.args.out, service.catalog, engine.space.key))
        yield service
    finally:
        service.catalog.close()


def add(context: Context) -> int:
    from indexer.manifest import read_manifest
    from search.model.space import SpaceMismatch
    from search.wiring import json_limits, product_limits, settled_space

    args, settings = context.args, context.settings
    manifest = read_manifest(args.manifest, product_limits(settings), json_limits(settings))
    with open_engine(context) as engine:
        recorded = settled_space(settings, engine.space)
        if recorded.key != engine.space.key:
            raise SpaceMismatch(recorded, engine.space)
        with _products(context, engine) as service:
            summary = engine.add(service, manifest, job_options(context))
    return context.finish(summary)


def _reembed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    engine_arguments(parser)
    progress_arguments(parser)


def reembed(context: Context) -> int:
    with open_engine(context) as engine, _products(context, engine) as service:
        summary = engine.reembed(service, job_options(context))
    return context.finish(summary)


COMMANDS = [
    Command(
        "add", "index a manifest (CSV, JSONL) or a folder of images", add, _add_arguments, needs_model=True
    ),
    Command(
        "reembed",
        "re-embed every product with VITRINE_MODEL (resumable)",
        reembed,
        _reembed_arguments,
        needs_model=True,
    ),
]
