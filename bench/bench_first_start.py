"""First start on a fresh data folder and an empty export cache: time to /ready, time until the faster
runtime serves, and the peak memory of the whole process tree (the server and any export child).

    make models/base-512
    git worktree add /tmp/old-21 main                       # the code before, for a same-run baseline
    nice -n 10 .venv/bin/python bench/bench_first_start.py --model models/base-512 --before /tmp/old-21

Each tree (``--before`` and this checkout) starts ``python -m api`` with its own code on PYTHONPATH, both
at the same moment (a same-run baseline on a shared machine: each gets a like share of the CPU), and is
sampled every 0.2 s until its faster runtime serves (or ``--timeout``), then stopped with SIGINT (the
seconds it takes to exit are recorded too). Heavy: run it once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """(summed RSS, summed PSS) of the process and its descendants. A forked child's copy-on-write pages
    count once per process in the RSS sum; the PSS sum splits them, so it is what the tree holds (what
    a container's memory limit sees, page cache aside)."""
    rss = pss = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            info = member.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
    return rss, pss


def first_start(name: str, code: Path, model: Path, timeout: float, results: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"first-start-{name}-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env |= {
        "PYTHONPATH": str(code),
        "HF_HUB_OFFLINE": "1",
        "VITRINE_MODEL": str(model.resolve()),
        "VITRINE_DEVICE": "cpu",
        "VITRINE_DATA_DIR": str(work / "data"),
        "VITRINE_CACHE_DIR": str(work / "cache"),  # the code before keeps exports in the data folder
    }
    port = free_port()
    log = (work / "server.log").open("w")
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=code,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    watched = psutil.Process(server.pid)
    facts: dict[str, object] = {"code": str(code), "log": str(work / "server.log")}
    peak = peak_until_ready = peak_pss = peak_pss_until_ready = 0
    ready_at = faster_at = None
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    last_probe = 0.0
    while time.monotonic() - started < timeout and server.poll() is None:
        rss, pss = tree_memory(watched)
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        if ready_at is None:
            peak_until_ready, peak_pss_until_ready = peak, peak_pss
        now = time.monotonic()
        if now - last_probe >= 1.0:
            last_probe = now
            try:
                if ready_at is None and client.get("/ready").status_code == 200:
                    ready_at = now - started
                    facts["runtime_at_ready"] = client.get("/info").json()["runtime"]
                if ready_at is not None:
                    info = client.get("/info").json()
                    if info["runtime"] != "torch":
                        faster_at = now - started
                        facts["faster_runtime"] = f"{info['runtime']}-{info['dtype']}"
                        break
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    server.send_signal(signal.SIGINT)
    stop_started = time.monotonic()
    try:
        server.wait(60)
        facts["stop_s"] = round(time.monotonic() - stop_started, 2)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        facts["stop_s"] = "over 60 s (killed)"
    facts |= {
        "ready_s": None if ready_at is None else round(ready_at, 1),
        "faster_path_serves_s": None if faster_at is None else round(faster_at, 1),
        "peak_tree_rss_gb": round(peak / 1e9, 2),
        "peak_tree_rss_until_ready_gb": round(peak_until_ready / 1e9, 2),
        "peak_tree_pss_gb": round(peak_pss / 1e9, 2),
        "peak_tree_pss_until_ready_gb": round(peak_pss_until_ready / 1e9, 2),
    }
    results[name] = facts
    print(name, json.dumps(facts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "base-512")
    parser.add_argument(
        "--before", type=Path, help="a checkout of the code before (git worktree add ... main)"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "first_start.json")
    args = parser.parse_args()
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": args.before.resolve(), **trees}
    results: dict[str, dict] = {}
    runs = [
        threading.Thread(target=first_start, args=(name, code, args.model, args.timeout, results))
        for name, code in trees.items()
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model), "results": results}, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
