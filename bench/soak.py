"""Load and soak test: mixed traffic from many concurrent clients against a real `python -m api` server.

Loopback only and bounded (``--minutes``, ``--clients``). The server runs the tiny random model on a
fresh data folder; images come from a local image server. Traffic mix per client request:
  zero-shot on an image URL 30%, text search 30%, PUT (new image or metadata only) 20%,
  similar products 10%, hostile 10% (a PNG declaring 40 M pixels, a JPEG declaring 6000x6000, an origin
  that dribbles header bytes, NaN / huge integer / lone surrogate bodies, 1,200 filter keys, a template
  of 10,000 placeholders, an 8 MB text, a 70 KB path).
A separate process asks /health and /ready every second; a sampler reads the server's resident memory
(before traffic, after one warm-up request of each kind, at peak, and after the traffic stops).
Reports answers by status, p50/p99 per route, peak and final RSS, the slowest probe, and writes
bench/results/soak.json.

    .venv/bin/python bench/soak.py --minutes 10 --clients 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from _common import RESULTS, ROOT, ensure_model, percentile
from PIL import Image

from devtools.hostile_images import (  # importable: _common puts the repo root on sys.path
    plain_jpeg,
    png_declaring,
)


def photo(seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 40, y + 30))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


class ImageOrigin:
    """Local image server: /img/N.jpg are photos; /dribble.jpg sends one header byte every 0.5 s."""

    def __init__(self, images: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/dribble.jpg":
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        for _ in range(240):
                            self.wfile.write(b"a")
                            self.wfile.flush()
                            time.sleep(0.5)
                    except OSError:
                        pass
                    return
                body = images.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.errors: Counter = Counter()
        self.bad_shapes: list[str] = []

    def record(self, route: str, status: int, seconds: float, response: httpx.Response | None) -> None:
        self.latencies[route].append(seconds)
        self.statuses[route][status] += 1
        if response is not None and status >= 400:
            try:
                body = response.json()
                if list(body) != ["error"] or not isinstance(body["error"], str):
                    self.bad_shapes.append(f"{route} {status}: {response.text[:120]}")
            except ValueError:
                self.bad_shapes.append(f"{route} {status}: not JSON: {response.text[:120]}")


async def client_loop(client: httpx.AsyncClient, rec: Recorder, stop: float, ctx: dict, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop:
        roll = rng.random()
        if roll < 0.30:
            route, method, path = "POST / zero_shot", "POST", "/"
            body = {
                "inputs": rng.choice(ctx["image_urls"]),
                "parameters": {"candidate_labels": ["ceramic tile", "oak plank", "heat pump", "marble"]},
            }
        elif roll < 0.60:
            route, method, path = "POST /search text", "POST", "/search"
            body = {
                "text": rng.choice(["beige matte tile", "oak floor", "grey stone", "white wall"]),
                "k": 10,
            }
        elif roll < 0.80:
            route, method = "PUT /products/{id}", "PUT"
            path = f"/products/soak-{rng.randrange(200)}"
            if rng.random() < 0.5:
                body = {
                    "image": rng.choice(ctx["image_b64"]),
                    "title": f"t{rng.randrange(1000)}",
                    "color": "red",
                }
            else:
                body = {"title": f"t{rng.randrange(1000)}", "color": rng.choice(["red", "blue"])}
        elif roll < 0.90:
            route, method = "GET /products/{id}/similar", "GET"
            path, body = f"/products/seed-{rng.randrange(20)}/similar?k=5", None
        else:
            await hostile(client, rec, rng, ctx)
            continue
        await send(client, rec, route, method, path, body)


async def send(client, rec, route, method, path, body=None, content=None) -> None:
    started = time.perf_counter()
    try:
        if content is not None:
            response = await client.request(
                method, path, content=content, headers={"Content-Type": "application/json"}
            )
        else:
            response = await client.request(method, path, json=body)
        rec.record(route, response.status_code, time.perf_counter() - started, response)
    except httpx.HTTPError as exc:
        rec.errors[f"{route}: {type(exc).__name__}"] += 1
        rec.record(route, 0, time.perf_counter() - started, None)


def hostile_requests(ctx: dict) -> dict[str, tuple[str, str, dict | None, bytes | None]]:
    """kind -> (method, path, JSON body, raw body) of each hostile request the soak sends (built once)."""
    image = {"parameters": {"mode": "image_embedding"}}
    template = {"candidate_labels": ["a" * 1000, "b" * 1000], "hypothesis_template": "{}" * 10_000}
    return {
        "png-bomb": ("POST", "/", {"inputs": [ctx["png_bomb"]] * 8, **image}, None),
        "jpeg-6000": ("POST", "/", {"inputs": [ctx["jpeg_6000"]] * 4, **image}, None),
        "dribble": ("POST", "/", {"inputs": ctx["dribble_url"], **image}, None),
        "nan": ("PUT", "/products/seed-1", None, b'{"size": NaN}'),
        "huge-int": ("POST", "/search", None, b'{"text": "x", "k": ' + b"9" * 5000 + b"}"),
        "surrogate": ("PUT", "/products/seed-2", None, b'{"title": "\\ud800"}'),
        "filters": (
            "POST",
            "/search",
            {"text": "tile", "filters": {f"k{i}": "v" for i in range(1200)}},
            None,
        ),
        "template": ("POST", "/", {"inputs": ctx["image_urls"][0], "parameters": template}, None),
        "8mb-text": (
            "POST",
            "/",
            {"inputs": "tile " * 1_600_000, "parameters": {"mode": "text_embedding"}},
            None,
        ),
    }


async def hostile(client: httpx.AsyncClient, rec: Recorder, rng: random.Random, ctx: dict) -> None:
    requests = ctx["hostile"]
    kind = rng.choice([*requests, "70kb-path"])
    route = f"hostile {kind}"
    if kind == "70kb-path":
        await raw_long_path(ctx["port"], rec, route)
        return
    method, path, body, content = requests[kind]
    await send(client, rec, route, method, path, body, content)


async def raw_long_path(port: int, rec: Recorder, route: str) -> None:
    """A 70 KB path over a raw socket (HTTP clients refuse to send one)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    except (OSError, TimeoutError):
        rec.record(route, 0, time.perf_counter() - started, None)
        return
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    rec.record(route, status, time.perf_counter() - started, httpx.Response(status, content=body))


def probe_process(base: str, stop_in: float, results: multiprocessing.Queue) -> None:
    """Ask /health and /ready every second from a process of its own, as a load balancer would: probes
    timed in the load generator's event loop would also count that loop's own lag behind 64 clients."""
    probes: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    stop = time.monotonic() + stop_in
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < stop:
            for path in ("/health", "/ready"):
                started = time.perf_counter()
                try:
                    response = client.get(path)
                    key = f"{path} {response.status_code}"
                    if response.status_code >= 400:  # which "not ready": busy, database, loading
                        key += f" {response.json().get('error', '')[:40]}"
                    statuses[key] += 1
                except httpx.HTTPError as exc:
                    statuses[f"{path} {type(exc).__name__}"] += 1
                probes[path].append(time.perf_counter() - started)
            time.sleep(1)
    results.put((dict(probes), dict(statuses)))


async def warm_up(client: httpx.AsyncClient, ctx: dict) -> None:
    """One request of each kind before the start is measured: first-use allocations (tokenizer and
    kernel caches, thread pools, connection pools) are start-up cost, not what the soak asks about."""
    for _ in range(3):
        await client.post(
            "/", json={"inputs": ctx["image_urls"][0], "parameters": {"candidate_labels": ["a", "b"]}}
        )
        await client.post("/search", json={"text": "warm up", "k": 10})
        await client.get("/products/seed-0/similar?k=5")
        await client.put("/products/seed-0", json={"image": ctx["image_b64"][0], "title": "seed 0"})
    await asyncio.sleep(6)  # the idle heap trim (api/memory.py) runs


async def memory_loop(pid: int, stop: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < stop:
        samples.append((time.monotonic() - start, rss(pid)))
        await asyncio.sleep(1)


async def run(args: argparse.Namespace) -> dict:
    model = ensure_model("tiny")
    photos = {f"/img/{i}.jpg": photo(i) for i in range(16)}
    origin = ImageOrigin(photos)
    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-soak-"))
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(
        HF_HUB_OFFLINE="1",
        VITRINE_MODEL=str(model),
        VITRINE_DATA_DIR=str(data_dir),
        VITRINE_DEVICE="cpu",
        VITRINE_DTYPE="float32",
        VITRINE_URL_ALLOW_HOSTS="127.0.0.1",
        VITRINE_LOG_LEVEL="ERROR",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for _ in range(600):
                try:
                    if (await client.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            ctx = {
                "image_urls": [origin.url(path) for path in photos],
                "image_b64": [base64.b64encode(photo(100 + i)).decode() for i in range(8)],
                "png_bomb": base64.b64encode(png_declaring(1, 40_000_000)).decode(),
                "jpeg_6000": base64.b64encode(plain_jpeg(6000)).decode(),
                "dribble_url": origin.url("/dribble.jpg"),
                "port": port,
            }
            ctx["hostile"] = hostile_requests(ctx)
            for i in range(20):  # a small catalog to search and to ask for similar products
                body = {"image": base64.b64encode(photo(200 + i)).decode(), "title": f"seed {i}"}
                await client.put(f"/products/seed-{i}", json=body)
            cold_rss = rss(server.pid)
            await warm_up(client, ctx)
            start_rss = rss(server.pid)
            rec = Recorder()
            memory: list[tuple[float, int]] = []
            began = time.monotonic()
            stop = began + args.minutes * 60
            spawn = multiprocessing.get_context("spawn")
            probe_results = spawn.Queue()
            prober = spawn.Process(target=probe_process, args=(base, args.minutes * 60, probe_results))
            prober.start()
            # Keep-alive: the client lets an idle connection go before the server does (uvicorn closes
            # after 5 s), so a request never races the server's close on a reused connection.
            limits = httpx.Limits(
                max_connections=args.clients + 8, max_keepalive_connections=args.clients, keepalive_expiry=2.0
            )
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as load:
                await asyncio.gather(
                    *(client_loop(load, rec, stop, ctx, seed) for seed in range(args.clients)),
                    memory_loop(server.pid, stop, memory),
                )
            probes, probe_statuses = await asyncio.to_thread(probe_results.get, True, 120)
            prober.join(timeout=30)
            elapsed = time.monotonic() - began
            await asyncio.sleep(args.settle)  # in-flight work ends, memory goes back
            final_rss = rss(server.pid)
            final_ready = (await client.get("/ready")).status_code
    finally:
        server.terminate()
        server.wait(timeout=30)
    routes = {}
    for route in sorted(rec.latencies):
        samples = rec.latencies[route]
        routes[route] = {
            "count": len(samples),
            "statuses": dict(sorted(rec.statuses[route].items())),
            "p50_ms": round(percentile(samples, 50) * 1000, 1),
            "p99_ms": round(percentile(samples, 99) * 1000, 1),
        }
    totals: Counter = Counter()
    for counter in rec.statuses.values():
        totals.update(counter)
    return {
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "requests": sum(totals.values()),
        "statuses": dict(sorted(totals.items())),
        "server_5xx": sum(n for status, n in totals.items() if status >= 500),
        "transport_errors": dict(rec.errors),
        "non_json_errors": rec.bad_shapes[:20],
        "routes": routes,
        "rss_mb": {
            "cold": round(cold_rss / 2**20),
            "start": round(start_rss / 2**20),
            "peak": round(max(value for _, value in memory) / 2**20),
            "final": round(final_rss / 2**20),
        },
        "probes_max_ms": {path: round(max(samples) * 1000, 1) for path, samples in probes.items()},
        "probes_p99_ms": {path: round(percentile(samples, 99) * 1000, 1) for path, samples in probes.items()},
        "probe_statuses": dict(probe_statuses),
        "ready_after": final_ready,
    }


def markdown(result: dict) -> str:
    lines = [
        f"{result['clients']} clients, {result['seconds']} s, {result['requests']} requests; "
        f"statuses {result['statuses']}; 5xx: {result['server_5xx']}; transport errors: {result['transport_errors'] or 0}",
        "",
        "| route | requests | statuses | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for route, row in result["routes"].items():
        lines.append(f"| {route} | {row['count']} | {row['statuses']} | {row['p50_ms']} | {row['p99_ms']} |")
    rss_mb = result["rss_mb"]
    lines += [
        "",
        f"server RSS: cold {rss_mb['cold']} MB, after warm-up (start) {rss_mb['start']} MB, peak {rss_mb['peak']} MB, final {rss_mb['final']} MB",
        f"probes (every 1 s): max {result['probes_max_ms']} ms, p99 {result['probes_p99_ms']} ms; {result['probe_statuses']}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before the final RSS")
    args = parser.parse_args()
    if not 0 < args.minutes <= 60 or not 0 < args.clients <= 256:
        parser.error("bounded: --minutes in (0, 60], --clients in (0, 256]")
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
