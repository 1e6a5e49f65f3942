"""What a fresh Python process pays before its first embedding or its first test: the floor under every
process the suite starts (pytest workers, Ray actors, ``python -m api`` children), in CPU seconds.

Each step runs in a new interpreter, ``--runs`` times; its CPU time (user + system, from the children's
rusage) and wall time are the medians. The baseline in the same run is a bare ``python -c pass``.

    .venv/bin/python bench/bench_process_floor.py
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from _common import ROOT, ensure_model, median, write_result

STEPS = {
    "python": "pass",
    "import torch": "import torch",
    "import torch + transformers SigLIP": (
        "import torch\nfrom transformers import AutoConfig, AutoProcessor, SiglipModel"
    ),
    "load the tiny encoder (search.wiring.load_encoder)": (
        "from pathlib import Path\n"
        "from search.settings import Settings\n"
        "from search.wiring import load_encoder\n"
        "load_encoder(Settings(model='{model}', data_dir=Path('{scratch}'), device='cpu', dtype='float32', "
        "runtime='torch', cache_dir=Path('{scratch}')))"
    ),
    "import ray + ray.data + the Ray engine": "import ray, ray.data\nimport indexer.engines.ray",
}


def cost(code: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one new interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def collection_cost() -> tuple[float, float]:
    """The whole suite's ``pytest --collect-only``: what each xdist worker does before its first test."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = ensure_model("tiny")
    scratch = ROOT / "bench" / "results" / "process-floor-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    import importlib.util

    steps = dict(STEPS)
    if importlib.util.find_spec("ray") is None:
        steps.pop("import ray + ray.data + the Ray engine")
    result: dict[str, object] = {"load_average_start": os.getloadavg(), "runs": args.runs}
    rows: dict[str, dict[str, float]] = {}
    for name, code in steps.items():
        samples = [cost(code.format(model=model, scratch=scratch)) for _ in range(args.runs)]
        rows[name] = {
            "cpu_s": round(median([cpu for cpu, _ in samples]), 2),
            "wall_s": round(median([wall for _, wall in samples]), 2),
        }
        print(f"{name:55s} {rows[name]['cpu_s']:6.2f} CPU-s {rows[name]['wall_s']:6.2f} s", flush=True)
    samples = [collection_cost() for _ in range(args.runs)]
    rows["pytest --collect-only (the whole suite)"] = {
        "cpu_s": round(median([cpu for cpu, _ in samples]), 2),
        "wall_s": round(median([wall for _, wall in samples]), 2),
    }
    print(
        f"{'pytest --collect-only (the whole suite)':55s} {rows['pytest --collect-only (the whole suite)']['cpu_s']:6.2f} CPU-s"
    )
    result["steps"] = rows
    result["load_average_end"] = os.getloadavg()
    write_result("process_floor", result)


if __name__ == "__main__":
    main()
