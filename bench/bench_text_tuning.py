"""Recall out of the box (issue 17): text recall@10 of a freshly built IVF tuned on far proxies (what an
index built without the model gets) against the same index re-tuned on text-side queries (what a server
with the model loaded does before its first query: the text tower on the catalog's titles).

    nice -n 10 .venv/bin/python bench/bench_text_tuning.py --size 200000

Data (devtools/modality_gap.py, `hard` images): two text geometries on the same catalog and index,
`hard` (bench_scale's) and `harder` (texts vaguer still: spread 6, weight 0.05 on their subject). No
model is loaded here, so the text tower's queries are stood in for by text-like queries of the same
geometry (another seed); recall is measured on held-out text-like queries, never the tuning ones, against
exact search over the same float32 vectors. One build, tuned three ways, in one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import median, write_result

from devtools.modality_gap import GapModel
from search.index import IndexSpec, VectorIndex
from search.index.tuning import exact_top_k, recall_at_k

GEOMETRIES = {"hard": {}, "harder": {"text_spread": 6.0, "text_weight": 0.05}}


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    found, times = [], []
    for query in queries:
        start = time.perf_counter()
        hits = index.search(query, 10)
        times.append(time.perf_counter() - start)
        found.append(np.array([hit.id for hit in hits]))
    return {"recall_at_10": round(recall_at_k(found, truth), 4), "p50_ms": round(1000 * median(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    base = GapModel(dim=args.dim, hard=True)
    folder = Path(tempfile.mkdtemp(prefix="vitrine-text-tuning-"))
    try:

        def batches():
            first = 1
            for vectors, _ in base.images(args.size, seed=1):
                yield np.arange(first, first + len(vectors)), vectors
                first += len(vectors)

        start = time.perf_counter()
        spec = IndexSpec(kind="ivf", recall_target=0.95)
        index = VectorIndex.build(args.dim, "m", 1, spec, batches(), count=args.size, path=folder / "i.faiss")
        build_s = time.perf_counter() - start
        images = base.image_queries(args.queries, seed=7)
        result: dict[str, object] = {
            "size": args.size,
            "build_s": round(build_s, 1),
            "nlist": index.describe()["nlist"],
            "far_proxies": {
                "nprobe": index.describe()["nprobe"],
                **index.describe()["measured_recall_at_10"],
            },
        }
        image_truth = exact_top_k(batches(), images, 10)
        result["image_like_far_proxies"] = measure(index, images, image_truth)
        for name, extra in GEOMETRIES.items():
            model = GapModel(dim=args.dim, hard=True, **extra)
            held_out = model.texts(args.queries, seed=99)
            truth = exact_top_k(batches(), held_out, 10)
            index.tune(None, "far proxies")  # the state an import without the model leaves
            before = {"nprobe": index.describe()["nprobe"], **measure(index, held_out, truth)}
            start = time.perf_counter()
            index.tune(model.texts(args.queries, seed=5), "text-side stand-in")
            tune_s = time.perf_counter() - start
            after = {
                "nprobe": index.describe()["nprobe"],
                "tuning_measured": index.describe()["measured_recall_at_10"],
                "tune_s": round(tune_s, 1),
                **measure(index, held_out, truth),
            }
            result[name] = {"before_far_proxies": before, "after_text_queries": after}
            result[f"image_like_{name}_tuned"] = measure(index, images, image_truth)
            print(name, result[name], flush=True)
        print(result)
        print(write_result("text_tuning", result))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
