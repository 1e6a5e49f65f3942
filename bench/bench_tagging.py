"""Zero-shot tagging from stored vectors: throughput at 100k and 1M imported 768-d vectors, peak memory,
a server-like process's memory while it re-tags in the background, and the cost of a ``tags.*`` filter
and facet against a plain attribute filter in the same run.

    nice -n 10 .venv/bin/python bench/bench_tagging.py --sizes 100000 1000000

Vectors come from devtools.modality_gap (SigLIP-like geometry), bulk-loaded as ``indexer import`` leaves
them; the taxonomy's value vectors are text-like vectors of the same model (no text tower runs here: the
prompts of a version are embedded once, seconds at most, and are not what this measures). Re-tagging is
``TaggingService.retag_all``: the code a server's background re-tag and ``indexer tag`` run.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from _common import median, write_result
from bench_scale import fill_catalog, memory

from devtools.modality_gap import GapModel

MODEL = "bench-gap"
# SigLIP base's learned values (exp(logit_scale) and logit_bias) are of this size.
LOGIT_SCALE, LOGIT_BIAS = 112.0, -16.5
ATTRIBUTES = {
    "color": (12, False, 0.3),
    "material": (8, False, 0.3),
    "style": (6, True, 0.2),
}


def reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux 4.0+): each phase reports its own peak.
    Path("/proc/self/clear_refs").write_text("5")


def store_taxonomy(catalog, gap: GapModel) -> None:
    from search.catalog.tag_store import save_taxonomy
    from search.catalog.taxonomy import Taxonomy

    document = {
        "attributes": {
            name: {
                "values": [f"{name}-{i}" for i in range(count)],
                "prompts": ["a photo of a {} product", "a {} thing"],
                "multi_label": multi,
                "min_score": min_score,
            }
            for name, (count, multi, min_score) in ATTRIBUTES.items()
        }
    }
    vectors = gap.texts(sum(count for count, _, _ in ATTRIBUTES.values()), seed=5)
    with catalog.writing() as connection:
        save_taxonomy(connection, Taxonomy.parse(document), vectors, MODEL, LOGIT_SCALE, LOGIT_BIAS)


def tag_once(url: str, batch: int) -> dict[str, object]:
    from search.catalog import Catalog
    from search.catalog.tag_service import TaggingService

    catalog = Catalog.open(url)
    try:
        tagging = TaggingService(catalog, MODEL, batch=batch)
        reset_peak()
        before = memory()
        started = time.perf_counter()
        status = tagging.retag_all()
        seconds = time.perf_counter() - started
        after = memory()
        tags = {name: tagging.count_tags(name) for name in ATTRIBUTES}
    finally:
        catalog.close()
    return {
        "products": status.done,
        "seconds": round(seconds, 2),
        "products_per_s": round(status.done / seconds),
        "tag_rows": status.tags,
        "tags_by_attribute": tags,
        "rss_before_mib": round(before["VmRSS"]),
        "peak_rss_mib": round(after["VmHWM"]),
    }


def server_retag_memory(url: str, folder: Path, dim: int) -> dict[str, object]:
    """A process holding what a server holds (the product service, its index loaded) re-tags in the
    background thread PUT /taxonomy starts, while its RSS is sampled."""
    from search.catalog import Catalog
    from search.images.store import ImageStore
    from search.wiring import build_products

    service = build_products(
        Catalog.open(url),
        model=MODEL,
        index_path=folder / "index.faiss",
        image_store=ImageStore(folder),
        dim=dim,
    )
    try:
        service.refresh()
        idle = memory()["VmRSS"]
        reset_peak()
        samples: list[float] = []
        service.tagging.start_retag()
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(memory()["VmRSS"])
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        status = service.tagging.wait()
        done.set()
        sampler.join()
        return {
            "idle_rss_mib": round(idle),
            "max_sampled_rss_mib": round(max(samples, default=idle)),
            "peak_rss_mib": round(memory()["VmHWM"]),
            "retag_seconds": status.seconds,
            "state": status.state,
        }
    finally:
        service.catalog.close()


def filter_costs(url: str, folder: Path, dim: int, gap: GapModel, runs: int) -> dict[str, object]:
    """The same product service, same run: a plain attribute filter against a tags.* filter (listing with
    its count, and a vector search), and an attribute facet against a tags.* facet."""
    from search.catalog import Catalog
    from search.catalog.filters import Filters
    from search.catalog.query import Example, SearchQuery
    from search.images.store import ImageStore
    from search.wiring import build_products

    service = build_products(
        Catalog.open(url),
        model=MODEL,
        index_path=folder / "index.faiss",
        image_store=ImageStore(folder),
        dim=dim,
    )
    try:
        service.refresh()
        counts = service.list(Filters(), limit=1, facets=["tags.color"]).facets["tags.color"]
        # Two tag values covering about as many products as the attribute filter's 30%, if the data allows.
        ranked = sorted(counts, key=counts.get, reverse=True)
        tag_values = ranked[:2]
        filters = {
            "attribute": {"tier": "a"},
            "tags": {"tags.color": {"in": tag_values}},
        }
        queries = gap.texts(runs, seed=11)
        out: dict[str, object] = {"tag_values": tag_values}
        for label, spec in filters.items():
            parsed = Filters.parse(spec, 10)
            matching = service.list(parsed, limit=1).total
            listing, searching = [], []
            for query in queries:
                started = time.perf_counter()
                service.list(parsed, limit=20)
                listing.append(time.perf_counter() - started)
                started = time.perf_counter()
                service.search(SearchQuery([Example(vector=tuple(map(float, query)))], filters=parsed, k=10))
                searching.append(time.perf_counter() - started)
            out[label] = {
                "matching": matching,
                "list_ms": round(median(listing) * 1000, 1),
                "vector_search_ms": round(median(searching) * 1000, 1),
            }
        for label, field in (("attribute_facet", "tier"), ("tags_facet", "tags.color")):
            for scope, spec in (("all", None), ("filtered", filters["attribute"])):
                parsed = Filters.parse(spec, 10)
                samples = []
                for _ in range(runs):
                    started = time.perf_counter()
                    service.catalog.facet_counts(parsed.clause() if parsed else None, [field])
                    samples.append(time.perf_counter() - started)
                out[f"{label}_{scope}_ms"] = round(median(samples) * 1000, 1)
        return out
    finally:
        service.catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=20_000, help="products per re-tag transaction")
    parser.add_argument("--runs", type=int, default=30, help="queries per filter measurement")
    parser.add_argument(
        "--extras-at", type=int, default=100_000, help="size for server memory and filter costs"
    )
    args = parser.parse_args()

    from search.catalog import Catalog
    from search.catalog.db import migrate

    gap = GapModel(dim=args.dim)
    results: dict[str, object] = {"dim": args.dim, "batch": args.batch, "sizes": {}}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="vitrine-tagbench-") as tmp:
            folder = Path(tmp)
            url = f"sqlite:///{folder / 'vitrine.db'}"
            migrate(url)
            fill_seconds = fill_catalog(url, gap, size, MODEL)
            catalog = Catalog.open(url)
            store_taxonomy(catalog, gap)
            catalog.close()
            entry: dict[str, object] = {"fill_seconds": round(fill_seconds, 1)}
            entry["tagging"] = tag_once(url, args.batch)
            print(size, entry, flush=True)
            if size == args.extras_at:
                entry["server_retag"] = server_retag_memory(url, folder, args.dim)
                print(size, "server", entry["server_retag"], flush=True)
                entry["filters"] = filter_costs(url, folder, args.dim, gap, args.runs)
                print(size, "filters", entry["filters"], flush=True)
            results["sizes"][str(size)] = entry  # type: ignore[index]
    print(write_result("tagging", results))


if __name__ == "__main__":
    main()
