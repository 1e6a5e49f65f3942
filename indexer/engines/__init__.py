"""Engines that run ``indexer add`` and ``indexer reembed``: ``local`` (one process: worker threads
read, the model embeds in the main thread) and ``ray`` (Ray Data: tasks read, an actor pool embeds,
on one machine or a cluster). Both go through the same stages and the same writer; this is the one
place where ``--engine`` becomes an engine.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from search.errors import BadInput

if TYPE_CHECKING:
    from indexer.cli import Context
    from indexer.manifest import Manifest
    from indexer.summary import RunSummary
    from search.catalog.service import ProductService
    from search.images.loader import ImageLoader
    from search.model.encoder import Encoder
    from search.model.space import EmbeddingSpace

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class JobOptions:
    batch_size: int = 16  # images per transaction
    workers: int = 4  # local: threads that read
    refetch: bool = False
    progress: bool = True
    progress_every: float = 5.0
    actors: int | None = None  # ray: model workers (default: one per GPU, else one per node)


class Engine(Protocol):
    space: EmbeddingSpace  # the embedding space the engine's model makes
    encoder: Encoder | None  # the driver's model (None: the model runs elsewhere)
    images: ImageLoader | None

    def add(self, service: ProductService, manifest: Manifest, options: JobOptions) -> RunSummary: ...

    def reembed(self, service: ProductService, options: JobOptions) -> RunSummary: ...


@contextlib.contextmanager
def open_engine(context: Context) -> Iterator[Engine]:
    """The engine ``--engine`` names, ready to run (its model loaded, or its Ray cluster joined),
    closed after the block."""
    args = context.args
    if args.engine == "local":
        if args.ray_address is not None:
            raise BadInput("--ray-address needs --engine ray")
        from indexer.engines.local import LocalEngine

        with context.encoder() as encoder, LocalEngine.open(context.settings, encoder) as engine:
            yield engine
    elif args.engine == "ray":
        from indexer.engines.ray import RayEngine

        # Ray prints its workers' and raylets' messages on stdout: with --json they go to stderr.
        with context.quiet_stdout(), RayEngine.open(context.settings, args.ray_address) as engine:
            yield engine
    else:
        raise BadInput(f"unknown engine {args.engine!r}: choose one of {', '.join(ENGINES)}")


def engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="local", help="where images are embedded")
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="--engine ray: join this Ray cluster (default: start a local Ray on 127.0.0.1 for the job)",
    )
    parser.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help="--engine ray: model workers (default: one per GPU of the cluster, else one per node)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write what the run stores as Parquet shards to DIR (python -m indexer import DIR)",
    )


def job_options(context: Context) -> JobOptions:
    args = context.args
    return JobOptions(
        batch_size=args.batch_size or context.settings.batch_size,
        workers=getattr(args, "workers", 4),
        refetch=getattr(args, "refetch", False),
        progress=not args.no_progress,
        progress_every=args.progress_every,
        actors=args.actors,
    )
