"""Shared bits of the benchmark scripts: random checkpoints on demand, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = ROOT / "bench" / "results"


def ensure_model(size: str, folder: Path | None = None) -> Path:
    """The random checkpoint of ``size`` under models/, written once (base-512 takes a minute)."""
    from devtools.random_model import write_random_model
    from search.wiring import quiet_transformers

    quiet_transformers()
    folder = folder or ROOT / "models" / size
    if not (folder / "config.json").exists():
        print(f"writing random {size} checkpoint to {folder} ...", flush=True)
        write_random_model(size, folder)
    return folder


def timed(work: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        work()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def machine() -> dict[str, object]:
    import torch

    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def write_result(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path
