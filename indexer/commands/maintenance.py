"""Keeping a catalog and its index healthy, without a model: remove, rebuild, verify, tune, stats,
compact, migrate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from indexer.cli import Command, Context, maintenance_service


def _remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+")


def remove(context: Context) -> int:
    ids = context.args.ids
    with maintenance_service(context.settings) as service:
        removed = service.remove(ids)
        service.save_index()
    missing = sorted(set(ids) - set(removed))
    context.report(
        f"removed {len(removed)} product(s)" + (f"; not found: {', '.join(missing)}" if missing else ""),
        removed=removed,
        not_found=missing,
    )
    return 0


def rebuild(context: Context) -> int:
    with maintenance_service(context.settings) as service:
        vectors = service.rebuild()
    context.report(f"rebuilt the index: {vectors} vectors", index_vectors=vectors)
    return 0


def verify(context: Context) -> int:
    # The index file is inspected as it is: loading it would repair what verify must report.
    with maintenance_service(context.settings, load_index=False) as service:
        report = service.verify()
    print(json.dumps(report.__dict__, indent=2))
    return 0 if report.ok else 1


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queries",
        type=Path,
        help="text-side vectors to tune on (.npy, or Parquet with an embedding column); "
        "default: the sample of served text queries, else far proxies of catalog vectors",
    )


def tune(context: Context) -> int:
    samples = None
    if context.args.queries is not None:
        from indexer.vector_files import read_query_vectors

        samples = read_query_vectors(context.args.queries)
    with maintenance_service(context.settings) as service:
        print(json.dumps(service.tune(samples), indent=2))
    return 0


def stats(context: Context) -> int:
    with maintenance_service(context.settings) as service:
        print(json.dumps(service.stats(), indent=2))
    return 0


def compact(context: Context) -> int:
    with maintenance_service(context.settings) as service:
        pruned = service.compact()
        revision = service.index.revision
    context.report(
        f"pruned {pruned} logged removal(s); index saved at revision {revision}",
        pruned_removals=pruned,
        index_revision=revision,
    )
    return 0


def migrate(context: Context) -> int:
    context.report("database is at the latest migration", migrated=True)  # run before every command
    return 0


COMMANDS = [
    Command("remove", "remove products by id", remove, _remove_arguments),
    Command("rebuild", "rebuild the index file from the database", rebuild),
    Command("verify", "check that the database and the index agree", verify),
    Command("tune", "measure the index's recall@10 against exact search; re-tune it", tune, _tune_arguments),
    Command("stats", "print catalog and index statistics as JSON", stats),
    Command("compact", "save the index, then prune the removal log it no longer needs", compact),
    Command("migrate", "apply database migrations", migrate),
]
