"""Vectors made elsewhere: ``import`` (Parquet, or .npy with an ids file) and ``export`` (Parquet)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from indexer.cli import Command, Context, catalog_model, progress_arguments


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument(
        "--ids", type=Path, help="for a .npy matrix: a text file with one product id per line, in row order"
    )
    parser.add_argument("--model", help="the embedding space the vectors are in (default: VITRINE_MODEL)")
    parser.add_argument(
        "--dim", type=int, help="expected dimension (default: the catalog's, else the file's first row)"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
    progress_arguments(parser)


def import_vectors(context: Context) -> int:
    from indexer.progress import Progress
    from indexer.summary import RunSummary
    from indexer.vector_files import VectorImporter, first_embedding_length, row_count
    from search.wiring import open_products

    args = context.args
    settings = context.settings.model_copy(update={"model": args.model or catalog_model(context.settings)})
    service = open_products(settings)
    try:
        dim = service.dim or args.dim or first_embedding_length(args.file, args.ids)
        if args.dim and dim != args.dim:
            print(
                f"error: the catalog's {service.model} vectors are {dim}-d, not {args.dim}-d", file=sys.stderr
            )
            return 1
        bar = Progress(
            row_count(args.file, args.ids), enabled=not args.no_progress, every=args.progress_every
        )

        def progress(summary: RunSummary) -> None:
            bar.update(summary.total - bar.done, added=summary.added, failed=len(summary.failed))

        importer = VectorImporter(service, dim, batch_size=args.batch_size, on_batch=progress)
        try:
            summary = importer.run(args.file, args.ids)
        except BaseException:
            bar.close()
            raise
        bar.close(interrupted=summary.interrupted)
    finally:
        service.catalog.close()
    return context.finish(summary)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument("--model", help="which embedding space to export (default: the catalog's)")


def export(context: Context) -> int:
    from indexer.vector_files import export_vectors
    from search.catalog import Catalog

    args = context.args
    model = args.model or catalog_model(context.settings)
    catalog = Catalog.open(context.settings.resolved_database_url)
    try:
        count = export_vectors(catalog, model, args.file)
    finally:
        catalog.close()
    context.report(
        f"exported {count} products of {model} to {args.file}",
        exported=count,
        model=model,
        file=str(args.file),
    )
    return 0


COMMANDS = [
    Command(
        "import",
        "import embeddings from a Parquet file or a .npy matrix (no model loaded)",
        import_vectors,
        _import_arguments,
    ),
    Command("export", "write products and embeddings to a Parquet file", export, _export_arguments),
]
