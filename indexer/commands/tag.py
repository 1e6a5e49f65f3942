"""Tagging from the catalog's stored vectors: ``tag`` (store a taxonomy, build an attribute from the
catalog, calibrate thresholds, re-tag every product) and ``audit`` (merchant values that contradict a
confident tag). The model loads only to embed prompts a taxonomy has not embedded before."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.cli import Command, Context, catalog_model, progress_arguments

if TYPE_CHECKING:
    from search.catalog.tag_service import TaggingService
    from search.catalog.taxonomy import Taxonomy


def _tag_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--taxonomy", type=Path, help="a taxonomy JSON file to store (as PUT /taxonomy)")
    parser.add_argument(
        "--from-catalog", metavar="NAME", help="add attribute NAME with the distinct values the catalog has"
    )
    parser.add_argument("--calibrate", type=Path, metavar="LABELS.csv", help="rows id,attribute,value")
    parser.add_argument(
        "--precision", type=float, default=None, help="with --calibrate: the target precision (default 0.9)"
    )
    progress_arguments(parser)


def tag(context: Context) -> int:
    from indexer.labels import read_labels
    from indexer.progress import Progress
    from search.catalog import Catalog
    from search.catalog.tag_service import TaggingService
    from search.catalog.taxonomy import Taxonomy
    from search.errors import BadInput
    from search.strict_json import parse_json
    from search.wiring import json_limits

    args, settings = context.args, context.settings
    if args.precision is not None and args.calibrate is None:
        raise BadInput("--precision goes with --calibrate LABELS.csv")
    catalog = Catalog.open(settings.resolved_database_url)
    try:
        tagging = TaggingService(catalog, catalog_model(settings))
        result: dict[str, object] = {}
        lines = []
        if args.taxonomy is not None or args.from_catalog is not None:
            taxonomy = tagging.taxonomy()
            if args.taxonomy is not None:
                taxonomy = Taxonomy.parse(
                    parse_json(_read(args.taxonomy), "taxonomy file", json_limits(settings))
                )
            if args.from_catalog is not None:
                taxonomy = tagging.from_catalog(args.from_catalog, taxonomy)
            version = _store(context, tagging, taxonomy)
            result["version"] = version
            lines.append(f"taxonomy version {version}: {', '.join(a.name for a in taxonomy.attributes)}")
        if args.calibrate is not None:
            reports = tagging.calibrate(read_labels(args.calibrate), args.precision or 0.9)
            result["calibration"] = [report.as_dict() for report in reports]
            lines += [_calibration_line(report.as_dict()) for report in reports]
        bar = Progress(
            catalog.count(), unit="products", enabled=not args.no_progress, every=args.progress_every
        )
        status = tagging.retag_all(lambda products, tags: bar.update(products))
        bar.close()
        result["retag"] = status.as_dict()
        lines.append(
            f"tagged {status.done} products: {status.tags} tags in {status.seconds:.1f}s ({status.state})"
        )
    finally:
        catalog.close()
    context.report("\n".join(lines), **result)
    return 0


def _read(path: Path) -> bytes:
    from search.errors import BadInput

    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read taxonomy file {str(path)!r}: {exc.strerror}") from None


def _store(context: Context, tagging: TaggingService, taxonomy: Taxonomy) -> int:
    """Store ``taxonomy``, loading the model only when it has prompts to embed."""
    if not tagging.needs_model(taxonomy):
        return tagging.set_taxonomy(taxonomy)
    from search.model.space import SpaceMismatch, space_of
    from search.wiring import settled_space

    with context.encoder() as encoder:
        served = space_of(context.settings.model, encoder.info.embedding_dim, encoder.checkpoint)
        recorded = settled_space(context.settings, served)
        if recorded.key != served.key:
            raise SpaceMismatch(recorded, served)
        tagging.encoder = encoder
        try:
            return tagging.set_taxonomy(taxonomy)
        finally:
            tagging.encoder = None


def _calibration_line(report: dict[str, object]) -> str:
    precision = report["precision"]
    shown = "n/a" if precision is None else f"{precision:.3f}"
    verdict = "threshold set" if report["reached"] else "target NOT reached, threshold left alone"
    return (
        f"{report['attribute']}: {verdict}: threshold {report['threshold']:.4f}, precision {shown}, "
        f"coverage {report['coverage']:.3f}, {report['labels']} labels"
    )


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attribute", required=True, help="a taxonomy attribute, e.g. category")
    parser.add_argument("--min-score", type=float, default=None, help="default: the attribute's threshold")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)


def audit(context: Context) -> int:
    from search.catalog import Catalog
    from search.catalog.query import SearchLimits
    from search.catalog.tag_service import TaggingService

    args, settings = context.args, context.settings
    SearchLimits().check_page(args.offset, args.limit)
    catalog = Catalog.open(settings.resolved_database_url)
    try:
        rows, total, min_score = TaggingService(catalog, catalog_model(settings)).audit(
            args.attribute, args.min_score, args.limit, args.offset
        )
    finally:
        catalog.close()
    lines = [
        f"{row.id}: {row.given!r} but the pictures say {row.predicted!r} ({row.score:.3f})" for row in rows
    ]
    lines.append(f"{total} contradiction(s) of {args.attribute} at min_score {min_score}")
    context.report(
        "\n".join(lines),
        attribute=args.attribute,
        min_score=min_score,
        total=total,
        count=len(rows),
        offset=args.offset,
        results=[row.as_dict() for row in rows],
    )
    return 0


COMMANDS = [
    Command(
        "tag",
        "store a taxonomy (--taxonomy, --from-catalog), calibrate thresholds, re-tag every product",
        tag,
        _tag_arguments,
    ),
    Command("audit", "list merchant values that contradict a confident tag", audit, _audit_arguments),
]
