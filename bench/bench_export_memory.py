"""Where the export's memory goes: the peak RSS of the export child (``search.model.backends.export_job``,
what a first start runs in the background) during each of its steps, for a checkpoint given.

    nice -n 10 .venv/bin/python bench/bench_export_memory.py --model models/base-512   # make models/base-512

Runs the child as a first start does (a fresh cache folder of its own, OpenVINO int8: the float
conversion first, then its compression and check), samples the RSS of the child and its own children
every 0.1 s (RSS and PSS), and attributes each sample to the step the child last announced on its progress lines.
Issue 21's goal is a first start within 4 GB with the export on; this says which step to shrink.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _common import write_result

from search.model.backends.export_job import command, parse_progress
from search.model.weights import Checkpoint


def tree_memory(process: psutil.Process) -> tuple[int, int, int]:
    """(summed RSS, summed PSS, processes) of ``process`` and its descendants. PSS splits pages shared
    between processes (a forked child's copy-on-write pages) among them, so the summed PSS is what the
    tree holds; summed RSS counts a shared page once per process."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = alive = 0
    for member in members:
        try:
            info = member.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += info.pss
        alive += 1
    return rss, pss, alive


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a local checkpoint folder")
    parser.add_argument("--precision", default="int8", choices=["int8", "bfloat16", "float32"])
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="vitrine-export-memory-"))
    checkpoint = Checkpoint(args.model)
    steps: list[dict[str, object]] = []
    fresh = {"peak_rss_mib": 0.0, "peak_pss_mib": 0.0, "most_processes": 0}
    current = {"step": "starting", "percent": 0, **fresh, "started": time.perf_counter()}
    lock = threading.Lock()
    try:
        started = time.perf_counter()
        child = subprocess.Popen(
            command(args.model, cache, "openvino", args.precision, checkpoint.export_key),
            stdout=subprocess.PIPE,
            text=True,
        )
        watched = psutil.Process(child.pid)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss, pss, alive = tree_memory(watched)
                with lock:
                    current["peak_rss_mib"] = max(float(current["peak_rss_mib"]), rss / 2**20)
                    current["peak_pss_mib"] = max(float(current["peak_pss_mib"]), pss / 2**20)
                    current["most_processes"] = max(int(current["most_processes"]), alive)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert child.stdout is not None
        for line in child.stdout:
            parsed = parse_progress(line)
            if parsed is None:
                continue
            with lock:
                current["seconds"] = round(time.perf_counter() - float(current.pop("started")), 1)
                steps.append(dict(current))
                print(steps[-1], flush=True)
                current.clear()
                current.update(step=parsed[1], percent=parsed[0], **fresh, started=time.perf_counter())
        child.wait()
        done.set()
        sampler.join()
        current["seconds"] = round(time.perf_counter() - float(current.pop("started")), 1)
        steps.append(dict(current))
        print(steps[-1], flush=True)
        result = {
            "model": args.model,
            "precision": args.precision,
            "exit": child.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": max(float(step["peak_rss_mib"]) for step in steps),
            "peak_pss_mib": max(float(step["peak_pss_mib"]) for step in steps),
            "steps": steps,
        }
        print(
            f"whole export: {result['seconds']} s, peak RSS (summed) {result['peak_rss_mib']:.0f} MiB, "
            f"peak PSS (summed) {result['peak_pss_mib']:.0f} MiB",
            flush=True,
        )
        print(f"results: {write_result('export-memory', result)}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
