"""``indexer add --engine ray`` against the local engine on the same catalog, in the same run.

    nice -n 10 .venv/bin/python bench/bench_ray.py --size base-512 --count 48
    .venv/bin/python bench/bench_ray.py --size tiny --count 200        # the engine's own overhead

Each engine runs as the CLI a user runs (``python -m indexer add MANIFEST --json``, a process of its
own, model on CPU in float32 through torch), into a fresh data folder. Three rates per engine:
- steady: products committed per second between the first and the last commit (from the rows'
  ``created_at``): the rate a long job runs at, start-up left out;
- job: the run's own summary (embedded images / seconds of the job; Ray's includes starting its
  actors and loading the model in them);
- command: images / wall time of the whole command (interpreter, imports, Ray start, model load).
The local engine's model loads before its job starts; the Ray engine's loads in its actors.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import ROOT, ensure_model, write_result


def steady_rate(db: Path) -> float:
    """Products per second between the first and the last committed batch."""
    with sqlite3.connect(db) as conn:
        stamps = sorted(
            datetime.fromisoformat(row[0]) for row in conn.execute("SELECT created_at FROM products")
        )
    first = stamps[0]
    after_first = [s for s in stamps if s > first]
    if not after_first:
        return float("nan")
    return len(after_first) / (stamps[-1] - first).total_seconds()


def run_engine(engine: str, manifest: Path, data_dir: Path, model: Path, batch_size: int) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(
        VITRINE_MODEL=str(model),
        VITRINE_DATA_DIR=str(data_dir),
        VITRINE_DEVICE="cpu",
        VITRINE_RUNTIME="torch",
        VITRINE_DTYPE="float32",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "indexer", "add", str(manifest), "--engine", engine]
    command += ["--batch-size", str(batch_size), "--json", "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {
        "engine": engine,
        "images": summary["embedded"],
        "steady_images_per_s": steady_rate(data_dir / "vitrine.db"),
        "job_images_per_s": summary["images_per_second"],
        "job_s": summary["seconds"],
        "command_s": wall,
        "command_images_per_s": summary["embedded"] / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--image-px", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4, help="images per transaction")
    args = parser.parse_args()

    from devtools.sample_catalog import write_sample_catalog

    model = ensure_model(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_sample_catalog(root / "catalog", args.count, size=args.image_px)
        rows = [
            run_engine(engine, manifest, root / f"data-{engine}", model, args.batch_size)
            for engine in ("local", "ray")
        ]
    local = rows[0]
    print(f"model {args.size} (torch float32, CPU), {args.count} generated {args.image_px}px images")
    print("| engine | steady images/s | job images/s | command images/s | job s | command s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['engine']} | {row['steady_images_per_s']:.3f} | {row['job_images_per_s']:.3f} "
            f"| {row['command_images_per_s']:.3f} | {row['job_s']:.1f} | {row['command_s']:.1f} |"
        )
    for key in ("steady_images_per_s", "job_images_per_s", "command_images_per_s"):
        print(f"ray / local, {key}: {rows[1][key] / local[key]:.2f}")
    data = {"size": args.size, "count": args.count, "image_px": args.image_px, "rows": rows}
    print(f"results: {write_result('ray-' + args.size, data)}")


if __name__ == "__main__":
    main()
