"""Search at scale on a modality-gap catalog: recall@10 for text-like and image-like queries, latency
through the service path, filtered search, memory, build time, time until an added product is found.

    .venv/bin/python bench/bench_scale.py --size 100000 --hnsw          # + HNSW and exact baselines
    .venv/bin/python bench/bench_scale.py --size 1000000                # about 15-25 min on 2 cores
    .venv/bin/python bench/bench_scale.py --size 100000 --data hard

Data (bench/modality_gap.py): image-like catalog vectors; text-like queries whose best image has cosine
~0.1; image-like queries (new images of the catalog's clusters). Queries for measuring are never those
the index was tuned on: tuning uses a separate "served" sample of text-like queries.

The products go into SQLite in bulk (Core inserts, not the indexer: no model is involved), then a
ProductService opens the catalog as a server does (VITRINE_INDEX_TYPE=auto): it builds the index from the
database and tunes it. "service" latency is ProductService.search with a vector, the API's path minus encoding:
revision check, SQL filter, index search with exact re-scoring, reading the k products. Recall is
against exact search over the same vectors (the float32 rows, scanned in chunks). RSS is this process
(the server's role) after the build and the searches, split into anonymous memory and mapped file pages.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _common import median, percentile, write_result

from devtools.modality_gap import GapModel


def memory() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields


def fill_catalog(url: str, model: GapModel, size: int, name: str) -> float:
    """Bulk insert: category c00..c99 (1% each), attribute tier=a on 30% of products."""
    from sqlalchemy import insert, update

    from search.catalog import Catalog, vector_to_bytes
    from search.catalog.schema import (
        CatalogState,
        Product,
        ProductAttribute,
        ProductImage,
        attribute_rows,
        search_document,
        utcnow,
    )

    catalog = Catalog.open(url)
    started = time.perf_counter()
    now = utcnow()
    row_id = 0
    with catalog.engine.begin() as connection:
        connection.execute(update(CatalogState).where(CatalogState.id == 1).values(revision=1))
    for vectors, _ in model.images(size, seed=1, chunk=20_000):
        rows, images, attributes = [], [], []
        for vector in vectors:
            row_id += 1  # one image per product: the image (vector) id equals the product row id
            tier = "a" if row_id % 10 < 3 else "b"
            category = f"c{row_id % 100:02d}"
            rows.append(
                {
                    "id": row_id,
                    "external_id": f"p{row_id}",
                    "title": None,
                    "category": category,
                    "attributes": {"tier": tier},
                    "search_text": search_document(f"p{row_id}", None, category, {"tier": tier}),
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            images.append(
                {
                    "id": row_id,
                    "product_id": row_id,
                    "position": 0,
                    "image_ref": "",
                    "embedding": vector_to_bytes(vector),
                    "embedding_dim": len(vector),
                    "embedding_model": name,
                    "revision": 1,
                }
            )
            attributes += attribute_rows(row_id, {"tier": tier})
        with catalog.engine.begin() as connection:
            connection.execute(insert(Product), rows)
            connection.execute(insert(ProductImage), images)
            connection.execute(insert(ProductAttribute), attributes)
    catalog.close()
    return time.perf_counter() - started


@contextmanager
def work_folder(args: argparse.Namespace) -> Iterator[str]:
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        yield str(args.keep)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        yield tmp


def timed(queries: np.ndarray, work) -> tuple[list[float], list]:
    work(queries[0])  # warm-up
    samples, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(work(query))
        samples.append(time.perf_counter() - started)
    return samples, results


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    from search.index.tuning import recall_at_k

    return recall_at_k([np.array([int(x[1:]) for x in ids]) for ids in found], truth)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--filter-queries", type=int, default=50, help="queries per filtered path")
    parser.add_argument("--data", choices=["gap", "hard"], default="gap")
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument(
        "--hnsw", action="store_true", help="also HNSW32 at efSearch 64/256/1024 (slow build)"
    )
    parser.add_argument("--dir", type=Path, help="work folder (default: a temp folder, deleted)")
    parser.add_argument(
        "--keep",
        type=Path,
        help="a work folder kept between runs: its catalog is written once and reused (the index is rebuilt)",
    )
    args = parser.parse_args()

    from search.catalog import ImageWrite, ProductWrite
    from search.catalog.db import migrate
    from search.catalog.filters import Filters
    from search.catalog.query import Example, SearchQuery
    from search.images.store import ImageStore
    from search.index.spec import IndexSpec
    from search.index.tuning import exact_top_k
    from search.wiring import build_products

    model = GapModel(dim=args.dim, hard=args.data == "hard")
    name = "bench/gap"
    texts = model.texts(args.queries, seed=2)
    images = model.image_queries(args.queries, seed=3)
    served = model.texts(300, seed=4)  # the "served query" sample the index is tuned on
    out: dict[str, object] = {"size": args.size, "dim": args.dim, "data": args.data}
    with work_folder(args) as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        written = Path(tmp) / f"catalog-{args.data}-{args.size}.done"
        if written.exists():
            print(f"reusing the catalog of {args.size:,} in {tmp}", flush=True)
        else:
            Path(tmp, "bench.db").unlink(missing_ok=True)
            migrate(url)
            out["sqlite_insert_s"] = fill_catalog(url, model, args.size, name)
            written.touch()
            print(f"catalog of {args.size:,} written in {out['sqlite_insert_s']:.0f} s", flush=True)
        gc.collect()
        out["rss_before_build_mib"] = memory()

        from search.catalog import Catalog

        index_path = Path(tmp) / "index" / "products.faiss"
        shutil.rmtree(index_path.parent, ignore_errors=True)  # always a fresh build
        index_path.parent.mkdir(parents=True)
        np.save(index_path.with_name("products.faiss.queries.npy"), served)
        spec = IndexSpec(kind="auto", recall_target=args.recall_target)
        started = time.perf_counter()
        service = build_products(
            Catalog.open(url),
            model=name,
            index_path=index_path,
            image_store=ImageStore(Path(tmp) / "images"),
            dim=args.dim,
            index_spec=spec,
            rebuild_in_background=True,
        )
        out["build_s"] = time.perf_counter() - started
        out["index"] = service.index.describe()
        print(f"built in {out['build_s']:.0f} s: {out['index']}", flush=True)

        store = service.index._store

        def live():
            # The database's float32 rows: the exact truth for any index kind (only IVF has iter_live).
            return service.catalog.iter_embeddings(service.sync.model)

        everything = np.concatenate([texts, images])
        started = time.perf_counter()
        truth = exact_top_k(live(), everything, 10)
        out["exact_truth_s_per_query"] = (time.perf_counter() - started) / len(everything)
        truth_text, truth_image = truth[: len(texts)], truth[len(texts) :]

        def nearest(vector, k=10, filters=None):
            # A list of Python floats, as a JSON body arrives (not NumPy scalars: slow to convert).
            query = SearchQuery([Example(vector=tuple(vector.tolist()))], filters=filters or Filters(), k=k)
            return [hit.record.external_id for hit in service.search(query).hits]

        rows = []

        def path(label, queries, truth_ids, filters=None):
            samples, results = timed(queries, lambda q: nearest(q, 10, filters))
            rows.append(
                {
                    "path": label,
                    "p50_ms": median(samples) * 1000,
                    "p95_ms": percentile(samples, 95) * 1000,
                    "recall_at_10": None if truth_ids is None else recall(results, truth_ids),
                }
            )
            print(rows[-1], flush=True)
            return results

        path("service, text-like", texts, truth_text)
        path("service, image-like", images, truth_image)
        index_samples, _ = timed(texts, lambda q: service.index.search(q, 10))
        rows.append(
            {
                "path": "index alone (VectorIndex.search incl. re-scoring), text-like",
                "p50_ms": median(index_samples) * 1000,
                "p95_ms": percentile(index_samples, 95) * 1000,
                "recall_at_10": None,
            }
        )
        print(rows[-1], flush=True)
        # Filtered: 1% (one category: its ids listed, then the index given them) and 30% (an attribute:
        # checked in SQL on the hits of a wider search, its ids never listed).
        for label, filters, allowed_of in (
            ("1%", Filters.parse({"category": "c07"}, 100), lambda ids: ids % 100 == 7),
            ("30%", Filters.parse({"tier": "a"}, 100), lambda ids: ids % 10 < 3),
        ):

            def allowed_chunks(keep=allowed_of):
                for ids, vectors in live():
                    mask = keep(ids)
                    yield ids[mask], vectors[mask]

            few = texts[: args.filter_queries]
            filtered_truth = exact_top_k(allowed_chunks(), few, 10)
            found = path(f"service, text-like, filter {label}", few, filtered_truth, filters)
            assert all(allowed_of(np.array([int(x[1:]) for x in ids])).all() for ids in found)
            # The parts: listing the allowed ids in SQL and the index given them (the selective path;
            # for 30% what it would cost), checking 80 hits in SQL (the broad path's check).
            sql_samples, results = timed(few, lambda q, f=filters: service.catalog.image_ids(f.clause()))
            allowed = results[0]
            index_samples, _ = timed(few, lambda q, a=allowed: service.index.search(q, 10, allowed_ids=a))
            hits = [[h.id for h in service.index.search(q, 80)] for q in few]
            check = iter(hits * 2)
            check_samples, _ = timed(
                few,
                lambda q, f=filters, c=check: service.catalog.owners(next(c), f.clause(per_row=True)),
            )
            for part, samples in (
                ("SQL list of the allowed ids", sql_samples),
                ("index alone, given the ids", index_samples),
                ("SQL check of 80 hits", check_samples),
            ):
                rows.append(
                    {
                        "path": f"filter {label}: {part}",
                        "p50_ms": median(samples) * 1000,
                        "p95_ms": percentile(samples, 95) * 1000,
                        "recall_at_10": None,
                    }
                )
                print(rows[-1], flush=True)
        gc.collect()
        out["rss_after_searches_mib"] = memory()
        print("memory", out["rss_after_searches_mib"], flush=True)
        # Exact baseline in the same run: the flat scan over the same rows, per query (FAISS, 2 threads).
        import faiss

        flat = faiss.IndexFlatIP(args.dim)
        for _, vectors in live():
            flat.add(vectors)
        exact_samples, _ = timed(texts[:50], lambda q: flat.search(q[None], 10))
        out["exact_flat_p50_ms"] = median(exact_samples) * 1000
        out["exact_flat_index_mib"] = flat.ntotal * args.dim * 4 / 2**20
        print(f"exact flat baseline p50 {out['exact_flat_p50_ms']:.1f} ms", flush=True)
        flat.reset()  # give its 4 bytes per dimension back before the next steps
        gc.collect()

        # Tuning without served queries: far proxies of catalog vectors. Which probe count, what recall?
        if hasattr(store, "tune"):
            proxy = store.tune(None)
            nprobe_served = store.tuned.nprobe
            store.tuned, served_tuning = proxy, store.tuned
            samples, results = timed(texts, lambda q: nearest(q))
            out["proxy_tuning"] = {
                "nprobe": proxy.nprobe,
                "text_recall_at_10": recall(results, truth_text),
                "p50_ms": median(samples) * 1000,
                "served_tuning_nprobe": nprobe_served,
            }
            print("proxy tuning", out["proxy_tuning"], flush=True)
            store.tuned = served_tuning

        # Time until an added product is searchable (write commits -> the next search finds it).
        new_vector = model.image_queries(1, seed=99)[0]
        started = time.perf_counter()
        service.catalog.upsert(
            [
                ProductWrite(
                    external_id="added", images=[ImageWrite("", embedding=new_vector, embedding_model=name)]
                )
            ]
        )
        committed = time.perf_counter()
        top = nearest(new_vector, 1)[0]
        out["add_commit_ms"] = (committed - started) * 1000
        out["add_visible_ms"] = (time.perf_counter() - committed) * 1000
        assert top == "added"
        print(f"added product searchable {out['add_visible_ms']:.1f} ms after its commit", flush=True)
        service.catalog.remove(["added"])  # a kept catalog stays as it was written

        if args.hnsw:
            import faiss

            hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            started = time.perf_counter()
            for _, vectors in live():
                hnsw.add(vectors)
            out["hnsw_build_s"] = time.perf_counter() - started
            slot_ids = np.concatenate([ids for ids, _ in live()])
            for ef in (64, 256, 1024):
                hnsw.hnsw.efSearch = ef
                for label, queries, truth_ids in (
                    ("text-like", texts, truth_text),
                    ("image-like", images, truth_image),
                ):
                    samples, results = timed(queries, lambda q: hnsw.search(q[None], 10)[1][0])
                    found = [[f"p{slot_ids[i]}" for i in ids if i >= 0] for ids in results]
                    rows.append(
                        {
                            "path": f"HNSW32 efSearch {ef} (faiss alone), {label}",
                            "p50_ms": median(samples) * 1000,
                            "p95_ms": percentile(samples, 95) * 1000,
                            "recall_at_10": recall(found, truth_ids),
                        }
                    )
                    print(rows[-1], flush=True)
        service.catalog.close()
    out["rows"] = rows
    print(f"results: {write_result(f'scale-{args.data}-{args.size}', out)}")


if __name__ == "__main__":
    main()
