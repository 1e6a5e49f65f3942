"""python -m indexer duplicates: the whole-catalog pass that groups near-duplicate products (stored as the
groups results collapse on, at the catalog's threshold), and the threshold's calibration on labelled
pairs. No model: the stored vectors and the index are enough (docs/duplicates.md)."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

from indexer.cli import Command, Context, maintenance_service
from search.catalog.duplicate_store import Group
from search.catalog.service import ProductService
from search.errors import BadInput

TRUE = {"1", "true", "yes", "y", "duplicate"}
FALSE = {"0", "false", "no", "n", "distinct"}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, help="cosine (default: the catalog's)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the groups to FILE")
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="PAIRS.csv",
        help="fit the threshold on labelled pairs: a,b,is_duplicate",
    )
    parser.add_argument(
        "--precision",
        type=float,
        default=0.95,
        help="with --calibrate: the precision to reach (default 0.95)",
    )


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    """``a,b,is_duplicate`` rows (a header row is skipped); is_duplicate: 1/0, true/false, yes/no."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    pairs = []
    for number, row in enumerate(rows, 1):
        if not row or (number == 1 and row[-1].strip().lower() not in TRUE | FALSE):
            continue  # a header or a blank line
        if len(row) != 3:
            raise BadInput(f"{path}:{number}: expected a,b,is_duplicate")
        label = row[2].strip().lower()
        if label not in TRUE | FALSE:
            raise BadInput(f"{path}:{number}: is_duplicate must be 1/0, true/false or yes/no, not {row[2]!r}")
        pairs.append((row[0].strip(), row[1].strip(), label in TRUE))
    if not pairs:
        raise BadInput(f"{path} holds no labelled pairs")
    return pairs


def duplicates(context: Context) -> int:
    args = context.args
    with maintenance_service(context.settings) as service:
        calibration = None
        if args.calibrate is not None:
            calibration = service.duplicates.calibrate(read_pairs(args.calibrate), args.precision)
            if args.threshold is None:
                args.threshold = calibration.threshold
        started = time.perf_counter()
        pairs, groups, stored = service.duplicates.full_pass(args.threshold, progress=_progress())
        seconds = time.perf_counter() - started
        threshold = args.threshold or service.duplicates.threshold()
        views = _views(service, groups)
    if args.csv is not None:
        _write_csv(args.csv, views)
    lines = [f"  {', '.join(v['products'])} (min score {v['min_score']:.4f})" for v in views]
    text = [
        *(
            [
                f"calibrated threshold {calibration.threshold} for precision {calibration.target_precision}: "
                f"precision {calibration.precision:.3f}, recall {calibration.recall:.3f} "
                f"on {calibration.pairs} pairs ({calibration.positives} duplicates); stored for this catalog"
            ]
            if calibration
            else []
        ),
        f"{len(groups)} duplicate group(s) at threshold {threshold} ({len(pairs.scores)} pair(s), "
        f"{len(pairs.exact)} exact) in {seconds:.1f} s" + ("; stored" if stored else ""),
        *lines,
    ]
    result: dict[str, object] = {
        "threshold": threshold,
        "groups": views,
        "pairs": len(pairs.scores),
        "exact_pairs": len(pairs.exact),
        "seconds": round(seconds, 2),
        "stored": stored,
    }
    if calibration is not None:
        result["calibration"] = calibration.as_dict()
    context.report("\n".join(text), **result)
    return 0


def _views(service: ProductService, groups: list[Group]) -> list[dict[str, object]]:
    names: dict[int, str] = {}
    ids = [p for group in groups for p in group.products]
    for start in range(0, len(ids), 10_000):
        names.update(
            (pid, r.external_id) for pid, r in service.catalog.get_by_ids(ids[start : start + 10_000]).items()
        )
    return [
        {
            "products": [names[p] for p in group.products if p in names],
            "representative": names.get(group.representative),
            "min_score": round(group.min_score, 6),
        }
        for group in groups
    ]


def _write_csv(path: Path, views: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "product", "representative", "min_score"])
        for number, view in enumerate(views, 1):
            for product in view["products"]:  # type: ignore[attr-defined]
                writer.writerow([number, product, product == view["representative"], view["min_score"]])


def _progress() -> Callable[[int], None]:
    """A line on stderr every 5 s while the pass runs (stdout keeps the result)."""
    done = [0, time.monotonic()]

    def report(count: int) -> None:
        done[0] += count
        if time.monotonic() - done[1] >= 5:
            done[1] = time.monotonic()
            print(f"duplicates: {done[0]} vectors searched", file=sys.stderr, flush=True)

    return report


COMMANDS = [
    Command(
        "duplicates",
        "group near-duplicate products over the whole catalog; --calibrate fits the threshold",
        duplicates,
        _arguments,
    ),
]
