"""Near-duplicate products at scale: the whole-catalog pass (time, peak memory, planted pairs found),
``/products/{id}/duplicates`` against a plain ``similar`` (p50, same run, same process), and what
collapsing costs a search.

    nice -n 10 .venv/bin/python bench/bench_duplicates.py --size 100000
    nice -n 10 .venv/bin/python bench/bench_duplicates.py --size 1000000 --skip-latency

Data: bench/modality_gap-style image vectors (``devtools.modality_gap``: two images of a cluster ~0.8,
any two ~0.6), 768-d, one image per product, bulk-inserted into SQLite as bench_scale.py does (the
importer's own speed is bench_indexer.py's subject). Every 100th product is a re-listing of the one
before it: its vector at cosine 0.975-0.995 from it (a re-encoded or resized copy); every 1000th is a
byte copy (same content hash and vector). The pass runs as ``python -m indexer duplicates --json`` in a
child process under /usr/bin/time (its peak RSS is the command's own); the index is built and saved
before, as a server would have it. Latencies are ProductService calls (the routes' work minus HTTP).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, median, percentile, write_result

from devtools.modality_gap import GapModel

MODEL = "bench-duplicates"
EVERY = 100  # a re-listing per this many products
COPY_EVERY = 1000  # a byte copy per this many


def planted(size: int) -> list[tuple[int, int]]:
    return [(i - 1, i) for i in range(EVERY, size + 1, EVERY)]


def fill(url: str, size: int, dim: int) -> float:
    """Products p1..pN (row id = image id = N), with planted re-listings and byte copies."""
    from sqlalchemy import insert, update

    from search.catalog import Catalog, vector_to_bytes
    from search.catalog.schema import CatalogState, Product, ProductImage, search_document, utcnow

    catalog = Catalog.open(url)
    started = time.perf_counter()
    now = utcnow()
    rng = np.random.default_rng(7)
    with catalog.engine.begin() as connection:
        connection.execute(update(CatalogState).where(CatalogState.id == 1).values(revision=1))
    row_id = 0
    previous: np.ndarray | None = None
    for vectors, _ in GapModel(dim=dim).images(size, seed=1, chunk=20_000):
        products, images = [], []
        for vector in vectors:
            row_id += 1
            sha = None
            if row_id % COPY_EVERY == 0 and previous is not None:
                vector, sha = previous, f"{row_id:064x}"
            elif row_id % EVERY == 0 and previous is not None:
                cosine = rng.uniform(0.975, 0.995)
                noise = rng.standard_normal(dim).astype(np.float32)
                noise -= (noise @ previous) * previous
                noise /= np.linalg.norm(noise)
                vector = (cosine * previous + np.sqrt(1 - cosine**2) * noise).astype(np.float32)
            category = f"c{row_id % 100:02d}"
            products.append(
                {
                    "id": row_id,
                    "external_id": f"p{row_id}",
                    "title": None,
                    "category": category,
                    "attributes": {},
                    "search_text": search_document(f"p{row_id}", None, category, {}),
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
                    "image_sha256": sha,
                    "embedding": vector_to_bytes(vector),
                    "embedding_dim": dim,
                    "embedding_model": MODEL,
                    "revision": 1,
                }
            )
            if sha is not None:  # the copied one holds the same content
                images[-2 if len(images) > 1 else -1]["image_sha256"] = sha
            previous = vector
        with catalog.engine.begin() as connection:
            connection.execute(insert(Product), products)
            connection.execute(insert(ProductImage), images)
    catalog.close()
    return time.perf_counter() - started


def run_pass(data_dir: Path, url: str, nlist: int = 0) -> dict[str, object]:
    """``python -m indexer duplicates --json`` in a child process: wall time and peak RSS."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VITRINE_DATA_DIR": str(data_dir),
        "VITRINE_DATABASE_URL": url,
        "VITRINE_MODEL": MODEL,
        "VITRINE_LOG_LEVEL": "WARNING",
        "VITRINE_IVF_NLIST": str(nlist),
    }
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "indexer", "duplicates", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    measured = dict(line.strip().split(": ", 1) for line in done.stderr.splitlines() if ": " in line)
    answer = json.loads(done.stdout)
    return {
        "wall_s": round(wall, 1),
        "pass_s": answer["seconds"],
        # CPU seconds of the whole command (start-up and index load included): what a shared machine's
        # load does not inflate the way it inflates wall time.
        "cpu_s": round(float(measured["User time (seconds)"]) + float(measured["System time (seconds)"]), 1),
        "peak_rss_mib": round(int(measured["Maximum resident set size (kbytes)"]) / 1024),
        **answer,
    }


def latencies(data_dir: Path, url: str, size: int, runs: int) -> dict[str, object]:
    """p50/p95 of one product's duplicates against its plain ``similar``, and a search with and without
    collapse, interleaved in one process."""
    from search.catalog import Catalog
    from search.catalog.query import Example, SearchQuery
    from search.images.store import ImageStore
    from search.wiring import build_products

    service = build_products(
        Catalog.open(url),
        model=MODEL,
        index_path=data_dir / "index" / "products.faiss",
        image_store=ImageStore(data_dir / "images"),
    )
    rng = np.random.default_rng(3)
    ids = [f"p{int(i)}" for i in rng.integers(1, size + 1, runs)]
    samples: dict[str, list[float]] = {"duplicates": [], "similar": [], "search": [], "search_collapsed": []}
    service.duplicates.of_product(ids[0], None, 10)  # warm-up (and groups caught up)
    service.search(SearchQuery([Example(product_id=ids[0])], k=10, collapse="duplicates"))

    def calls(external_id: str) -> dict[str, object]:
        product = [Example(product_id=external_id)]
        return {
            "duplicates": lambda: service.duplicates.of_product(external_id, None, 10),
            "similar": lambda: service.search(SearchQuery(product, k=10)),
            "search": lambda: service.search(SearchQuery(product, k=10, facets=["category"])),
            "search_collapsed": lambda: service.search(
                SearchQuery(product, k=10, facets=["category"], collapse="duplicates")
            ),
        }

    for external_id in ids:
        for name, work in calls(external_id).items():
            started = time.perf_counter()
            work()  # type: ignore[operator]
            samples[name].append((time.perf_counter() - started) * 1000)
    service.catalog.close()
    return {
        name: {"p50_ms": round(median(values), 2), "p95_ms": round(percentile(values, 95), 2)}
        for name, values in samples.items()
    } | {
        "duplicates_over_similar_p50": round(median(samples["duplicates"]) / median(samples["similar"]), 2),
        "collapse_over_plain_p50": round(median(samples["search_collapsed"]) / median(samples["search"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where the work folder goes (default /tmp)")
    parser.add_argument(
        "--nlist",
        type=int,
        default=0,
        help="IVF lists (default about 4 sqrt(N)); 400 at 100k gives the lists a 1M catalog has (~250)",
    )
    parser.add_argument("--keep", type=Path, help="work folder to keep, and to reuse when it holds a catalog")
    args = parser.parse_args()
    from search.catalog import Catalog
    from search.catalog.db import migrate
    from search.images.store import ImageStore
    from search.index.spec import IndexSpec
    from search.wiring import build_products

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data_dir = (args.keep or Path(tmp)) / "data"
        url = f"sqlite:///{data_dir / 'vitrine.db'}"
        fill_s = 0.0
        if not (data_dir / "vitrine.db").exists():
            data_dir.mkdir(parents=True)
            migrate(url)
            fill_s = fill(url, args.size, args.dim)
            print(f"filled {args.size} products in {fill_s:.0f} s", flush=True)
        started = time.perf_counter()
        service = build_products(
            Catalog.open(url),
            model=MODEL,
            index_path=data_dir / "index" / "products.faiss",
            image_store=ImageStore(data_dir / "images"),
            index_spec=IndexSpec(ivf_nlist=args.nlist),
        )
        service.save_index()
        build_s = time.perf_counter() - started
        kind = service.index.kind
        service.catalog.close()
        del service
        print(f"index ({kind}) built and saved in {build_s:.0f} s", flush=True)
        result = run_pass(data_dir, url, args.nlist)
        groups = [set(g["products"]) for g in result.pop("groups")]
        grouped = {p: i for i, g in enumerate(groups) for p in g}
        truth = planted(args.size)
        found = sum(
            1 for a, b in truth if f"p{a}" in grouped and grouped.get(f"p{a}") == grouped.get(f"p{b}")
        )
        result |= {
            "groups": len(groups),
            "planted_pairs": len(truth),
            "planted_pairs_grouped": found,
            "largest_group": max((len(g) for g in groups), default=0),
        }
        print(json.dumps(result, indent=2), flush=True)
        out: dict[str, object] = {
            "size": args.size,
            "dim": args.dim,
            "index_kind": kind,
            "fill_s": round(fill_s, 1),
            "index_build_s": round(build_s, 1),
            "pass": result,
        }
        if not args.skip_latency:
            out["latency"] = latencies(data_dir, url, args.size, args.runs)
            print(json.dumps(out["latency"], indent=2), flush=True)
        path = write_result(f"duplicates-{args.size}", out)
        print(f"written {path}")


if __name__ == "__main__":
    main()
