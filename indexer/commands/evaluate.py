"""python -m indexer evaluate JUDGEMENTS.csv: ranking quality on the user's own judgements (NDCG@k,
recall@k, MRR, latency p50) per mode and hybrid weight; --save keeps the run in the catalog, --gate
fails a pipeline when NDCG fell, --suggest-weight finds the best hybrid weight, --calibrate fits the
relevance probability. See docs/relevance.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from indexer.cli import Command, Context
from search.errors import BadInput

SUGGEST_GRID = [round(i * 0.05, 2) for i in range(21)]
MODES = ("vector", "lexical", "hybrid")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("judgements", type=Path, help="CSV: query,product_id,grade[,query_image][,filters]")
    parser.add_argument("--k", type=int, default=10, help="results per query (NDCG@k, recall@k)")
    parser.add_argument("--modes", default="vector,lexical,hybrid", help="comma-separated modes")
    parser.add_argument(
        "--weights", default=None, help="hybrid lexical weights (default: the configured one)"
    )
    parser.add_argument("--per-query", action="store_true", help="each query's figures too")
    parser.add_argument("--save", action="store_true", help="record the run in the catalog")
    parser.add_argument(
        "--gate",
        type=float,
        default=None,
        metavar="T",
        help="exit 1 when NDCG@k is below the last saved run on the same judgements by more than T",
    )
    parser.add_argument("--suggest-weight", action="store_true", help="the hybrid weight with the best NDCG")
    parser.add_argument("--calibrate", action="store_true", help="fit and store the relevance calibration")
    parser.add_argument("--url", default=None, help="search a running server instead of in-process")
    parser.add_argument("--token", default=None, help="the server's API token (with --url)")


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(f"{what} must be comma-separated numbers: {text!r}") from None
    if not values or not all(0 <= value <= 1 for value in values):
        raise BadInput(f"{what} must be numbers from 0 to 1: {text!r}")
    return values


def _options(context: Context) -> tuple[list[str], list[float]]:
    args = context.args
    if args.k < 1 or args.k > context.settings.search_max_k:
        raise BadInput(f"--k must be from 1 to {context.settings.search_max_k}")
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise BadInput(f"--modes takes {', '.join(MODES)}; not {', '.join(unknown) or 'nothing'}")
    default = context.settings.hybrid_lexical_weight
    weights = _floats(args.weights, "--weights") if args.weights else [default]
    if args.suggest_weight:
        weights = sorted({*weights, *SUGGEST_GRID, default})
        modes = modes if "hybrid" in modes else [*modes, "hybrid"]
    if args.calibrate and args.url:
        raise BadInput("--calibrate reads the catalog's vectors: run it in-process, without --url")
    return modes, weights


def evaluate(context: Context) -> int:
    from search.catalog import Catalog
    from search.relevance.evaluation import HttpSearcher, ServiceSearcher, evaluate, variants
    from search.relevance.judgements import read_judgements

    args, settings = context.args, context.settings
    modes, weights = _options(context)
    judgements = read_judgements(args.judgements)
    base = args.judgements.resolve().parent
    result: dict[str, Any] = {
        "judgements": str(args.judgements),
        "judgements_sha256": judgements.sha256,
        "queries": len(judgements.queries),
        "k": args.k,
    }
    if args.url:
        rows = evaluate(
            judgements,
            HttpSearcher(args.url, base, args.token),
            variants(modes, weights),
            args.k,
            per_query=args.per_query,
        )
    else:
        with _service(context) as service:
            searcher = ServiceSearcher(service, base)
            rows = evaluate(judgements, searcher, variants(modes, weights), args.k, per_query=args.per_query)
            if args.calibrate:
                result["calibration"] = _calibrate(service, judgements, base)
    result["results"] = rows
    if args.suggest_weight:
        result["suggested"] = _suggestion(rows, settings.hybrid_lexical_weight)
    code = 0
    catalog = Catalog.open(settings.resolved_database_url)
    try:
        if args.gate is not None:
            result["gate"], code = _gate(catalog, judgements.sha256, rows, args.gate)
        if args.save:
            result["saved_run"] = _save(catalog, context, judgements.sha256, rows, modes, weights)
    finally:
        catalog.close()
    context.report(_text(result), **result)
    return code


def _service(context: Context) -> Any:
    import contextlib

    from search.model.space import SpaceMismatch, space_of
    from search.wiring import build_image_loader, open_products, settled_space

    @contextlib.contextmanager
    def opened() -> Any:
        settings = context.settings
        with context.encoder() as encoder:
            served = space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint)
            recorded = settled_space(settings, served)
            if recorded.key != served.key:
                raise SpaceMismatch(recorded, served)
            images = build_image_loader(settings, encoder.info.image_size)
            service = open_products(settings, encoder=encoder, images=images, model=served.key)
            try:
                yield service
            finally:
                images.close()
                service.catalog.close()

    return opened()


def _calibrate(service: Any, judgements: Any, base: Path) -> dict[str, Any]:
    from search.relevance.calibration import Calibration, judged_pairs
    from search.relevance.saved import save_calibration

    pairs = judged_pairs(service, judgements, base)
    calibration = Calibration.fit(pairs)
    if not calibration.models:
        raise BadInput("calibration needs judged products both relevant (grade >= 1) and not (grade 0)")
    save_calibration(service.catalog, judgements.sha256, calibration.models)
    service.finder.calibration.clear()
    return calibration.models


def _suggestion(rows: list[dict[str, Any]], default: float) -> dict[str, Any]:
    from search.relevance.evaluation import weight_curve

    best, curve = weight_curve(rows)
    at_default = next(ndcg for weight, ndcg in curve if weight == default)
    return {
        "lexical_weight": best,
        "ndcg": dict(curve)[best],
        "default_weight": default,
        "default_ndcg": at_default,
        "curve": [{"lexical_weight": w, "ndcg": n} for w, n in curve],
    }


def _gate(
    catalog: Any, sha256: str, rows: list[dict[str, Any]], tolerance: float
) -> tuple[dict[str, Any], int]:
    from search.relevance.evaluation import gate
    from search.relevance.saved import last_run

    previous = last_run(catalog, sha256)
    if previous is None:
        return {"passed": True, "against": None, "note": "no saved run on these judgements yet"}, 0
    failures = gate(rows, previous["figures"], tolerance)
    return {"passed": not failures, "against": previous["id"], "failures": failures}, 1 if failures else 0


def _save(
    catalog: Any,
    context: Context,
    sha256: str,
    rows: list[dict[str, Any]],
    modes: list[str],
    weights: list[float],
) -> int:
    from search.relevance.saved import save_run

    settings = context.settings
    recorded = {
        "k": context.args.k,
        "modes": modes,
        "weights": weights,
        "url": context.args.url,
        "model": settings.model,
        "runtime": settings.runtime,
        "dtype": settings.dtype,
        "index_type": settings.index_type,
        "search_mode": settings.search_mode,
        "hybrid_lexical_weight": settings.hybrid_lexical_weight,
    }
    figures = [{key: value for key, value in row.items() if key != "per_query"} for row in rows]
    return save_run(catalog, sha256, json.loads(json.dumps(recorded, default=str)), figures)


def _text(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [
        f"{result['queries']} queries (judgements sha256 {result['judgements_sha256'][:12]}), k={k}",
        f"| ranking | NDCG@{k} | recall@{k} | MRR | p50 ms | queries |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        lines.append(
            f"| {row['name']} | {row['ndcg']:.4f} | {row['recall']:.4f} | {row['mrr']:.4f} | "
            f"{row['latency_p50_ms']:.1f} | {row['queries']} |"
        )
        for item in row.get("per_query", []):
            figures = (
                "no relevant judgement"
                if item["ndcg"] is None
                else (f"NDCG {item['ndcg']:.4f} recall {item['recall']:.4f} RR {item['rr']:.4f}")
            )
            lines.append(f"    {item['query']}: {figures}")
    if "suggested" in result:
        suggested = result["suggested"]
        lines.append(
            f"suggested lexical weight: {suggested['lexical_weight']:g} (NDCG@{k} {suggested['ndcg']:.4f}; "
            f"the configured {suggested['default_weight']:g}: {suggested['default_ndcg']:.4f})"
        )
        for point in suggested["curve"]:
            bar = "#" * round(point["ndcg"] * 40)
            lines.append(f"  w={point['lexical_weight']:.2f} {point['ndcg']:.4f} {bar}")
    if "calibration" in result:
        lines.append("relevance calibrated for: " + ", ".join(result["calibration"]))
    if "gate" in result:
        gate = result["gate"]
        if gate.get("against") is None:
            lines.append(f"gate: passed ({gate['note']})")
        else:
            lines.append(f"gate: {'passed' if gate['passed'] else 'FAILED'} against run {gate['against']}")
            lines += [f"  {failure}" for failure in gate["failures"]]
    if "saved_run" in result:
        lines.append(f"saved as run {result['saved_run']}")
    return "\n".join(lines)


COMMANDS = [
    Command(
        "evaluate",
        "ranking quality on your judgements (NDCG, recall, MRR); --save, --gate, --suggest-weight, --calibrate",
        evaluate,
        _arguments,
    )
]
