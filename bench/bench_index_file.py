"""A saved index as a server holds it: load time, resident memory, and VectorIndex.search latency.

    .venv/bin/python bench/bench_index_file.py /tmp/bench1m/<run>/index/products.faiss --model bench/gap
    .venv/bin/python bench/bench_index_file.py /tmp/bench1m/keep/index/products.faiss \
        --catalog /tmp/bench1m/keep/bench.db     # as a server: the service path, filters as filters

Pair it with an index that bench_scale.py built (keep its folder with --dir; the run deletes it at the
end, so point this at the folder while bench_scale.py is still searching). Queries come from the same
modality-gap model and seeds as bench_scale.py. Filters are id allow-lists of 1% and 30% of the ids.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import median, percentile, write_result
from bench_scale import memory

from devtools.modality_gap import GapModel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("index_file", type=Path)
    parser.add_argument("--model", default="bench/gap")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--data", choices=["gap", "hard"], default="gap")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--catalog",
        type=Path,
        help="the SQLite catalog the index was built from (bench_scale.py --keep): search through the "
        "product service, as a server does, with filters (category c07: 1%%, tier a: 30%%)",
    )
    args = parser.parse_args()

    from search.index import IndexSpec, VectorIndex

    out: dict[str, object] = {"index_file": str(args.index_file), "rss_before_mib": memory()}
    started = time.perf_counter()
    if args.catalog:
        service = open_service(args.catalog, args.index_file, args.model, args.dim)
        index = service.index
        assert index.kind == "ivf", "the service rebuilt the index instead of loading it"
    else:
        index = VectorIndex.load(args.index_file, model=args.model, dim=args.dim, spec=IndexSpec())
    out["load_s"] = time.perf_counter() - started  # includes checksumming every part
    out["rss_after_load_mib"] = memory()
    out["index"] = index.describe()
    print(
        f"loaded {len(index):,} vectors in {out['load_s']:.1f} s; memory {out['rss_after_load_mib']}",
        flush=True,
    )
    model = GapModel(dim=args.dim, hard=args.data == "hard")
    texts, images = model.texts(args.queries, seed=2), model.image_queries(args.queries, seed=3)
    ids = index.ids()
    rows = []
    for label, queries, allowed, filters in (
        ("text-like", texts, None, None),
        ("image-like", images, None, None),
        ("text-like, 1% allowed", texts[:100], ids[ids % 100 == 7], {"category": "c07"}),
        ("text-like, 30% allowed", texts[:100], ids[ids % 10 < 3], {"tier": "a"}),
    ):
        if args.catalog:
            search = service_search(service, filters)
            label = f"service, {label}"
        else:

            def search(query, allowed=allowed):
                index.search(query, 10, allowed_ids=allowed)

        search(queries[0])
        samples = []
        for query in queries:
            begun = time.perf_counter()
            search(query)
            samples.append(time.perf_counter() - begun)
        rows.append(
            {"path": label, "p50_ms": median(samples) * 1000, "p95_ms": percentile(samples, 95) * 1000}
        )
        print(rows[-1], flush=True)
    out["rss_after_searches_mib"] = memory()
    print("memory after searches", out["rss_after_searches_mib"], flush=True)
    out["rows"] = rows
    print(f"results: {write_result('index-file', out)}")


def open_service(db: Path, index_file: Path, model: str, dim: int):
    from search.catalog import Catalog
    from search.images.store import ImageStore
    from search.index import IndexSpec
    from search.wiring import build_products

    return build_products(
        Catalog.open(f"sqlite:///{db}"),
        model=model,
        index_path=index_file,
        image_store=ImageStore(db.parent / "images"),
        dim=dim,
        index_spec=IndexSpec(kind="auto"),
    )


def service_search(service, filters: dict | None):
    from search.catalog.filters import Filters
    from search.catalog.query import Example, SearchQuery

    parsed = Filters.parse(filters, 100)

    def search(query):
        # A list of Python floats, as a JSON body arrives.
        service.search(SearchQuery([Example(vector=tuple(query.tolist()))], filters=parsed, k=10))

    return search


if __name__ == "__main__":
    main()
