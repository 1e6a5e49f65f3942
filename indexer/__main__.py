"""python -m indexer COMMAND: build and maintain the product catalog and its vector index.

    add MANIFEST       index a CSV/JSONL manifest or a folder of images (incremental, resumable)
    import FILE        import embeddings computed elsewhere (Parquet: id, embedding, metadata; no model)
    export FILE        write every product with its embedding to a Parquet file
    remove ID...       remove products
    rebuild            rebuild the index file from the database (no model needed)
    verify             prove the database and the index agree (exit 1 if not)
    tune               measure recall@10 against exact search, re-tune and save the index's parameters
    stats              counts, revisions, files
    compact            save the index, then prune the removal log it no longer needs
    reembed            move the catalog to VITRINE_MODEL's embedding space (resumable)
    migrate            apply database migrations
    sample OUT_DIR     write a synthetic catalog (images + manifest.csv)
    export-model       build (or verify) the exported model VITRINE_RUNTIME/VITRINE_DTYPE choose

Exit codes: 0 done, 1 verify found problems or the command failed, 2 some rows failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from indexer import interrupts
from search.errors import IndexDeviceError, ModelLoadError, VitrineError
from search.logs import configure_logging
from search.settings import Settings

if TYPE_CHECKING:  # torch loads only for the commands that embed
    from search.encoder import Encoder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Every command accepts --json: its result as one JSON object on stdout (progress stays on stderr).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    add = command("add", "index a manifest (CSV, JSONL) or a folder of images")
    add.add_argument("manifest", type=Path)
    add.add_argument(
        "--batch-size", type=int, default=None, help="images per transaction (VITRINE_BATCH_SIZE)"
    )
    add.add_argument("--workers", type=int, default=4, help="threads that fetch, decode and preprocess")
    add.add_argument(
        "--refetch", action="store_true", help="download URLs again and re-embed if content changed"
    )
    add.add_argument("--no-progress", action="store_true", help="no progress bar and no progress log lines")
    add.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="outside a terminal: a progress log line this often (default 5)",
    )
    vectors_in = command("import", "import embeddings from a Parquet file or a .npy matrix (no model loaded)")
    vectors_in.add_argument("file", type=Path)
    vectors_in.add_argument(
        "--ids", type=Path, help="for a .npy matrix: a text file with one product id per line, in row order"
    )
    vectors_in.add_argument("--model", help="the embedding space the vectors are in (default: VITRINE_MODEL)")
    vectors_in.add_argument(
        "--dim", type=int, help="expected dimension (default: the catalog's, else the file's first row)"
    )
    vectors_in.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
    vectors_in.add_argument(
        "--no-progress", action="store_true", help="no progress bar and no progress log lines"
    )
    vectors_in.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS")
    vectors_out = command("export", "write products and embeddings to a Parquet file")
    vectors_out.add_argument("file", type=Path)
    vectors_out.add_argument("--model", help="which embedding space to export (default: VITRINE_MODEL)")
    remove = command("remove", "remove products by id")
    remove.add_argument("ids", nargs="+")
    command("rebuild", "rebuild the index file from the database")
    command("verify", "check that the database and the index agree")
    tune = command("tune", "measure the index's recall@10 against exact search; re-tune it")
    tune.add_argument(
        "--queries",
        type=Path,
        help="text-side vectors to tune on (.npy, or Parquet with an embedding column); "
        "default: the sample of served text queries, else far proxies of catalog vectors",
    )
    command("stats", "print catalog and index statistics as JSON")
    command("compact", "save the index, then prune the removal log it no longer needs")
    command("migrate", "apply database migrations")
    again = command("reembed", "re-embed every product with VITRINE_MODEL (resumable)")
    again.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    again.add_argument("--no-progress", action="store_true", help="no progress bar and no progress log lines")
    again.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS")
    sample = command("sample", "write a synthetic catalog")
    sample.add_argument("out_dir", type=Path)
    sample.add_argument("--count", type=int, default=200)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=256, help="image side in pixels")
    command("export-model", "build the exported model the runtime settings choose (also done at start)")
    return parser


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(
    argv: list[str] | None = None, settings: Settings | None = None, encoder: Encoder | None = None
) -> int:
    """The CLI without the process exit: run one command and return its exit code.

    ``settings`` replaces the environment's; ``encoder``, a model already loaded for ``settings.model``,
    is used (and left open) instead of loading one -- how a host process or the tests run commands
    without paying for a fresh interpreter and model load each time."""
    args = _parser().parse_args(argv)
    settings = settings or Settings()
    configure_logging(settings.log_level)
    try:
        with interrupts.handled():
            return _run(args, settings, encoder)
    except (VitrineError, ModelLoadError, IndexDeviceError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings, encoder: Encoder | None) -> int:
    if args.command == "sample":
        from search.sample_catalog import write_sample_catalog

        manifest = write_sample_catalog(args.out_dir, args.count, seed=args.seed, size=args.size)
        _report(args, f"wrote {args.count} products: {manifest}", products=args.count, manifest=str(manifest))
        return 0

    if args.command == "export-model":
        return _export_model(args, settings)

    from search.db import migrate

    migrate(settings.resolved_database_url)
    if args.command == "migrate":
        _report(args, "database is at the latest migration", migrated=True)
        return 0

    from search.catalog.service import open_products  # no torch: maintenance needs no model

    if args.command == "add":
        return _add(args, settings, encoder)
    if args.command == "reembed":
        return _reembed(args, settings, encoder)
    # Maintenance loads no model: it works on the vectors of the catalog's own embedding space.
    model = args.model if args.command in ("import", "export") and args.model else _catalog_model(settings)
    settings = settings.model_copy(update={"model": model})
    if args.command == "import":
        return _import(args, settings)
    service = open_products(settings, load_index=args.command != "verify")
    try:
        if args.command == "remove":
            removed = service.remove(args.ids)
            service.save_index()
            missing = sorted(set(args.ids) - set(removed))
            _report(
                args,
                f"removed {len(removed)} product(s)"
                + (f"; not found: {', '.join(missing)}" if missing else ""),
                removed=removed,
                not_found=missing,
            )
            return 0
        if args.command == "rebuild":
            vectors = service.rebuild()
            _report(args, f"rebuilt the index: {vectors} vectors", index_vectors=vectors)
            return 0
        if args.command == "verify":
            report = service.verify()
            print(json.dumps(report.__dict__, indent=2))
            return 0 if report.ok else 1
        if args.command == "tune":
            samples = None
            if args.queries is not None:
                from indexer.vector_files import read_query_vectors

                samples = read_query_vectors(args.queries)
            print(json.dumps(service.tune(samples), indent=2))
            return 0
        if args.command == "compact":
            pruned = service.compact()
            _report(
                args,
                f"pruned {pruned} logged removal(s); index saved at revision {service.index.revision}",
                pruned_removals=pruned,
                index_revision=service.index.revision,
            )
            return 0
        if args.command == "export":
            from indexer.vector_files import export_vectors

            count = export_vectors(service.catalog, service.model, args.file)
            _report(
                args,
                f"exported {count} products of {service.model} to {args.file}",
                exported=count,
                model=service.model,
                file=str(args.file),
            )
            return 0
        if args.command == "stats":
            print(json.dumps(service.stats(), indent=2))
            return 0
    finally:
        service.catalog.close()
    return 1


def _export_model(args: argparse.Namespace, settings: Settings) -> int:
    from search.runtime import load_encoder

    encoder = load_encoder(settings)
    encoder.close()
    info = encoder.info
    lines = [f"{info.model_id}: runtime {info.runtime}, {info.dtype}, {info.device}"]
    facts: dict[str, object] = {"runtime": info.runtime, "dtype": info.dtype, "device": info.device}
    export = getattr(encoder.runtime, "export", None)
    if export is not None:
        cosine = ", ".join(f"{tower} {value:.6f}" for tower, value in export.manifest["cosine"].items())
        lines.append(f"export {export.folder} (cosine to float32: {cosine})")
        facts |= {"export": str(export.folder), "cosine": export.manifest["cosine"]}
    _report(args, "\n".join(lines), **facts)
    return 0


def _catalog_model(settings: Settings) -> str:
    from search.catalog import Catalog
    from search.space import catalog_model_key

    catalog = Catalog.open(settings.resolved_database_url)
    try:
        return catalog_model_key(catalog, settings.model)
    finally:
        catalog.close()


@contextmanager
def _encoder(settings: Settings, given: Encoder | None) -> Iterator[Encoder]:
    """The given encoder (its owner closes it), else ``settings.model`` loaded for this command."""
    if given is not None:
        yield given
        return
    from search.runtime import load_encoder

    encoder = load_encoder(settings)
    try:
        yield encoder
    finally:
        encoder.close()


def _add(args: argparse.Namespace, settings: Settings, given: Encoder | None) -> int:
    from indexer.pipeline import Indexer
    from search.manifest import read_manifest
    from search.runtime import build_image_loader, open_products, settled_space
    from search.space import SpaceMismatch, space_of

    manifest = read_manifest(args.manifest)
    with _encoder(settings, given) as encoder:
        served = space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint)
        recorded = settled_space(settings, served)
        if recorded.key != served.key:
            raise SpaceMismatch(recorded, served)
        images = build_image_loader(settings, encoder.info.image_size)
        service = open_products(settings, encoder=encoder, images=images, model=served.key)
        indexer = Indexer(
            service,
            encoder,
            images,
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
    return _finish(args, summary.as_dict(), summary.lines(), summary.interrupted, bool(summary.failed))


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.progress import Progress
    from indexer.vector_files import ImportSummary, VectorImporter, first_embedding_length, row_count
    from search.catalog.service import open_products

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

        def progress(summary: ImportSummary) -> None:
            bar.update(summary.total - bar.done, added=summary.added, failed=len(summary.failed))

        importer = VectorImporter(service, dim, batch_size=args.batch_size, on_batch=progress)
        try:
            summary = importer.run(args.file, args.ids)
        finally:
            bar.close()
    finally:
        service.catalog.close()
    result = {**summary.__dict__, "failed": [str(issue) for issue in summary.failed]}
    return _finish(args, result, summary.lines(), summary.interrupted, bool(summary.failed))


def _reembed(args: argparse.Namespace, settings: Settings, given: Encoder | None) -> int:
    from indexer.progress import Progress
    from indexer.reembed import reembed
    from search.catalog import Catalog
    from search.runtime import build_image_loader, open_products
    from search.space import ids_outside, space_of

    with _encoder(settings, given) as encoder:
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
            summary = reembed(
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
    return _finish(args, summary.as_dict(), summary.lines(), summary.interrupted, bool(summary.failed))


def _finish(
    args: argparse.Namespace, result: dict[str, object], lines: list[str], interrupted: bool, failed: bool
) -> int:
    """Print a batch job's summary (JSON with --json) and choose its exit code: 130 interrupted, 2 rows failed."""
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines))
    if interrupted:
        return 130
    return 2 if failed else 0


def _report(args: argparse.Namespace, text: str, **result: object) -> None:
    print(json.dumps(result, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
