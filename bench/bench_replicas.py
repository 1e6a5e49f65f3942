"""Replicas on one PostgreSQL: how stale one replica is after a write on another, and search throughput
of one replica against two, with real `python -m api` processes on 127.0.0.1.

    .ci/with-postgres nice -n 10 .venv/bin/python bench/bench_replicas.py   # VITRINE_TEST_POSTGRES_URL

1. Staleness: N products PUT on replica A (an uploaded image each, images in the database); after each
   201, replica B is asked by vector (the image's embedding, fetched from A before the PUT) until the
   product is its top hit. Staleness = B's first answer with it minus A's answer to the PUT (p50/p99),
   i.e. one revision check + change-log catch-up on B's next search, plus the polling interval (2 ms).
2. Throughput: a catalog of --products random vectors written straight into the database, then
   --clients concurrent clients sending vector searches (k=10) for --seconds, all to A, then split
   over A and B round-robin; searches/s and latency p50/p99 of each.

The machine has 2 cores, shared with PostgreSQL, the load generator and other work: read the ratio as
what two replicas give on this machine, not as scaling.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from _common import ensure_model, median, percentile, write_result


def start_replica(model: Path, data_dir: Path, url: str) -> tuple[subprocess.Popen, httpx.Client]:
    from devtools.api_process import clean_env, free_port, start_api

    port = free_port()
    env = clean_env()
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        VITRINE_MODEL=str(model),
        VITRINE_DATA_DIR=str(data_dir),
        VITRINE_DATABASE_URL=url,
        VITRINE_IMAGE_STORE="database",
        VITRINE_DEVICE="cpu",
        VITRINE_DTYPE="float32",
        VITRINE_TORCH_THREADS="1",
        VITRINE_LOG_LEVEL="WARNING",
    )
    process = start_api(env, port, output=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise SystemExit("a replica exited at start")
        try:
            if client.get("/ready").status_code == 200:
                return process, client
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("a replica did not become ready")
        time.sleep(0.2)


def png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def staleness(a: httpx.Client, b: httpx.Client, writes: int) -> dict[str, float]:
    samples, polls, search_s = [], [], []
    for i in range(writes):
        image = base64.b64encode(png(10_000 + i)).decode()
        embedded = a.post("/v1/embeddings", json={"input": [image], "modality": "image"}).json()
        vector = embedded["data"][0]["embedding"]
        pid = f"stale-{i}"
        assert a.put(f"/products/{pid}", json={"image": image}).status_code == 201
        acknowledged = time.perf_counter()
        for poll in itertools.count(1):
            asked = time.perf_counter()
            found = b.post("/search", json={"vector": vector, "k": 1}).json()["results"]
            answered = time.perf_counter()
            search_s.append(answered - asked)
            if found and found[0]["id"] == pid:
                samples.append(answered - acknowledged)
                polls.append(poll)
                break
            time.sleep(0.002)
    return {
        "writes": writes,
        "p50_ms": round(1000 * median(samples), 2),
        "p99_ms": round(1000 * percentile(samples, 99), 2),
        "max_ms": round(1000 * max(samples), 2),
        # Staleness is at least one search of B: its latency and how many searches it took.
        "search_p50_ms": round(1000 * median(search_s), 2),
        "first_search_found_share": round(polls.count(1) / len(polls), 3),
        "polls_max": max(polls),
    }


def seed_catalog(url: str, products: int, seed: int = 0) -> int:
    from search.catalog import Catalog, ImageWrite, ProductWrite

    catalog = Catalog.open(url)
    try:
        key, _, dim = catalog.recorded_space()
        rng = np.random.default_rng(seed)
        for start in range(0, products, 1000):
            vectors = rng.standard_normal((min(1000, products - start), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            catalog.upsert(
                [
                    ProductWrite(
                        f"load-{start + j}",
                        f"product {start + j}",
                        f"c{(start + j) % 20}",
                        {},
                        images=[
                            ImageWrite(
                                f"https://img.example/{start + j}.jpg", embedding=v, embedding_model=key
                            )
                        ],
                    )
                    for j, v in enumerate(vectors)
                ]
            )
        return dim
    finally:
        catalog.close()


def throughput(clients: list[httpx.Client], concurrency: int, seconds: float, dim: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((256, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    bodies = [{"vector": q.tolist(), "k": 10} for q in queries]
    latencies: list[float] = []
    lock = threading.Lock()
    turn = itertools.count()
    stop = time.perf_counter() + seconds

    def worker(w: int) -> None:
        own = []
        i = w
        while time.perf_counter() < stop:
            client = clients[next(turn) % len(clients)]
            started = time.perf_counter()
            response = client.post("/search", json=bodies[i % len(bodies)])
            own.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            i += concurrency
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {
        "searches": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * median(latencies), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("VITRINE_TEST_POSTGRES_URL"))
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20, help="per round and setup")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.url:
        raise SystemExit("give --url or run under .ci/with-postgres (VITRINE_TEST_POSTGRES_URL)")
    import tempfile

    model = ensure_model("tiny")
    root = Path(tempfile.mkdtemp(prefix="bench-replicas."))
    started = []
    try:
        started.append(start_replica(model, root / "a", args.url))  # migrates, records the space
        started.append(start_replica(model, root / "b", args.url))
        (_, a), (_, b) = started
        stale = staleness(a, b, args.writes) if args.writes else None
        print("staleness A -> B:", stale, flush=True)
        dim = seed_catalog(args.url, args.products)
        for client in (a, b):  # both catch up before anything is timed
            client.post("/search", json={"vector": [1.0] + [0.0] * (dim - 1), "k": 1})
        # Alternating rounds: a neighbour's burst on this shared machine slows both setups alike.
        rounds: dict[str, list[dict[str, float]]] = {"one_replica": [], "two_replicas": []}
        for _ in range(args.rounds):
            rounds["one_replica"].append(throughput([a], args.clients, args.seconds, dim))
            rounds["two_replicas"].append(throughput([a, b], args.clients, args.seconds, dim))
            print(rounds["one_replica"][-1], rounds["two_replicas"][-1], flush=True)
        per_s = {name: median([r["per_s"] for r in runs]) for name, runs in rounds.items()}
        result = {
            "staleness": stale,
            "throughput": {**rounds, "ratio": round(per_s["two_replicas"] / per_s["one_replica"], 2)},
            "products": args.products,
            "clients": args.clients,
            "seconds": args.seconds,
            "model": "tiny random SigLIP (32-d)",
        }
        print("ratio two/one (medians of the rounds):", result["throughput"]["ratio"])
        print(write_result("replicas", result))
    finally:
        for process, client in started:
            client.close()
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
