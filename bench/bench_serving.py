"""The service as a user meets it: a real server (``python -m api``, default settings unless told
otherwise) against plain transformers float32 at batch 1, in the same run.

    .venv/bin/python bench/bench_serving.py                    # base-512 random model (exact shapes)
    .venv/bin/python bench/bench_serving.py --env VITRINE_RUNTIME=torch VITRINE_DTYPE=float32  # old default

Measures, interleaving server and baseline samples so a busy neighbour slows both alike:
1. one 1024x768 JPEG (base64) over HTTP, image_embedding: median vs the baseline (PIL decode, the
   checkpoint's processor, get_image_features), and the cosine between the two embeddings;
2. one text query over HTTP (a new string each time: the text cache never answers) vs the baseline;
3. images/s with 8 concurrent clients sending one image each per request, against the bare runtime's
   best batch throughput (the same runtime the server chose, batches of 1/2/4/8, no HTTP), in
   alternating rounds, each phase with the CPU other processes used meanwhile (a busy neighbour shows);
4. text latency p50/p99 while those 8 clients keep the image tower busy.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, ensure_model, median, percentile, write_result


def photo_jpeg(seed: int = 0, size: tuple[int, int] = (1024, 768)) -> bytes:
    """A camera-like JPEG: gradients, hard-edged shapes, fine noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    base = np.stack([200 * x + 30 * y, 120 + 80 * np.sin(6 * x + 3 * y + seed), 90 + 120 * y * x], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 6, base.shape)
    picture = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((200 + seed * 7, 150, 620, 500), fill=(235, 225, 205), outline=(40, 40, 40), width=6)
    draw.ellipse((650, 300, 950, 700), fill=(30, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, data_dir: Path, env_overrides: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(VITRINE_MODEL=str(model_dir), VITRINE_DATA_DIR=str(data_dir), VITRINE_LOG_LEVEL="WARNING")
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    for item in env_overrides:
        key, _, value = item.partition("=")
        env[key] = value
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    return process, f"http://127.0.0.1:{port}"


def wait_until_ready(process: subprocess.Popen, client, seconds: float = 1800) -> None:
    """Until /ready is 200 (a first start converts the model: minutes), or exit if the server died."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.5)


class CpuAccount:
    """CPU seconds (Linux /proc) used by the given processes and by everything else during a phase: a
    neighbour's load shows up as "other" CPU instead of silently slowing one side of a comparison."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy(self) -> float:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / self.tick

    def _process(self, pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def measure(self, work) -> dict:
        busy, own = self._busy(), [self._process(pid) for pid in self.pids]
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        own = [self._process(pid) - before for pid, before in zip(self.pids, own, strict=True)]
        return {"seconds": seconds, "own_cpu": own, "other_cpu": max(0.0, self._busy() - busy - sum(own))}


def image_tower_totals(client) -> dict[str, float]:
    """The server's image-queue totals from /metrics: batches, rows, busy_seconds."""
    totals = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("vitrine_image_"):
            name, value = line.split()
            totals[name.removeprefix("vitrine_image_")] = float(value)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--text-runs", type=int, default=15)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=3, help="images each client sends")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / served throughput rounds")
    parser.add_argument(
        "--data-dir", default=str(ROOT / "models" / "bench-data"), help="holds the export cache"
    )
    parser.add_argument("--env", nargs="*", default=[], help="VITRINE_X=value settings for the server")
    args = parser.parse_args()

    import httpx
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor, SiglipModel

    from search.model.backends.base import normalise

    model_dir = ensure_model(args.size)
    process, url = start_server(model_dir, Path(args.data_dir), args.env)
    client = httpx.Client(base_url=url, timeout=600)
    try:
        wait_until_ready(process, client)
        info = client.get("/info").json()
        print(
            f"server: runtime {info.get('runtime')} {info.get('dtype')} on {info.get('device')}", flush=True
        )

        # The baseline in this process: plain transformers, float32, batch 1.
        model = SiglipModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(str(model_dir))
        jpeg = photo_jpeg()
        payload = base64.b64encode(jpeg).decode()

        def baseline_image() -> np.ndarray:
            picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
            pixels = processor.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                return normalise(model.get_image_features(pixel_values=pixels).pooler_output.numpy())[0]

        def baseline_text(text: str) -> np.ndarray:
            ids = processor.tokenizer(
                [text.lower()], padding="max_length", max_length=64, truncation=True, return_tensors="pt"
            )["input_ids"]
            with torch.inference_mode():
                return normalise(model.get_text_features(input_ids=ids).pooler_output.numpy())[0]

        def served_image(body: str = payload) -> np.ndarray:
            response = client.post("/", json={"inputs": body, "parameters": {"mode": "image_embedding"}})
            response.raise_for_status()
            return np.asarray(response.json()[0]["embedding"])

        def served_text(text: str) -> float:
            started = time.perf_counter()
            response = client.post("/", json={"inputs": [text], "parameters": {"mode": "text_embedding"}})
            response.raise_for_status()
            return time.perf_counter() - started

        def clock(work, *a):
            started = time.perf_counter()
            result = work(*a)
            return time.perf_counter() - started, result

        served_image(), baseline_image(), served_text("warm up"), baseline_text("warm up")  # warm-up
        image_s, base_image_s = [], []
        for _ in range(args.runs):
            seconds, served_vector = clock(served_image)
            image_s.append(seconds)
            seconds, base_vector = clock(baseline_image)
            base_image_s.append(seconds)
        cosine = float(served_vector @ base_vector)
        text_s, base_text_s = [], []
        for i in range(args.text_runs):
            text_s.append(served_text(f"beige matte ceramic floor tile 60x60 number {i}"))
            base_text_s.append(clock(baseline_text, f"oak laminate plank variant {i}")[0])
        print(
            f"1. one image over HTTP: {median(image_s) * 1000:.0f} ms vs baseline {median(base_image_s) * 1000:.0f} ms "
            f"= x{median(base_image_s) / median(image_s):.2f}; cosine to float32 {cosine:.6f}",
            flush=True,
        )
        print(
            f"2. one text over HTTP: median {median(text_s) * 1000:.1f} ms, p90 {percentile(text_s, 90) * 1000:.1f} ms "
            f"vs baseline {median(base_text_s) * 1000:.1f} ms",
            flush=True,
        )

        # 3. Throughput under concurrent clients against the bare runtime's best batch, in alternating
        # rounds (bare burst, served burst) so that a neighbour's load hits both sides alike.
        from search.model.backends import load_backend

        runtime = load_backend(
            str(model_dir),
            runtime=info.get("runtime", "torch"),
            dtype=info.get("dtype", "float32"),
            cache_dir=Path(args.data_dir) / "models",
        )
        picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
        pixels = processor.image_processor(images=[picture], return_tensors="np")["pixel_values"]
        bare = {}
        for batch in (1, 2, 4, 8):
            rows = np.repeat(pixels, batch, axis=0)
            runtime.image_features(rows)
            bare[batch] = batch / clock(runtime.image_features, rows)[0]
        best_batch = max(bare, key=bare.get)
        print(f"   bare runtime images/s by batch: { {b: round(v, 2) for b, v in bare.items()} }", flush=True)

        bodies = [base64.b64encode(photo_jpeg(seed)).decode() for seed in range(args.clients)]
        stop_text = threading.Event()
        under_load: list[float] = []

        def text_while_busy() -> None:
            time.sleep(1.0)  # let the image queue fill first
            i = 0
            while not stop_text.is_set():
                under_load.append(served_text(f"grey slate tile under load {i}"))
                i += 1
                time.sleep(0.25)  # an interactive trickle, not a second bulk load

        def one_client(index: int) -> None:
            with httpx.Client(base_url=url, timeout=600) as own:
                for _ in range(args.per_client):
                    response = own.post(
                        "/", json={"inputs": bodies[index], "parameters": {"mode": "image_embedding"}}
                    )
                    response.raise_for_status()

        images = args.clients * args.per_client
        best_rows = np.repeat(pixels, best_batch, axis=0)

        def bare_burst() -> None:
            for _ in range(max(1, images // best_batch)):
                runtime.image_features(best_rows)

        def served_burst() -> None:
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one_client, range(args.clients)))

        cpu = CpuAccount([process.pid, os.getpid()])
        rounds = []
        for _ in range(args.rounds):
            bare_phase = cpu.measure(bare_burst)
            before = image_tower_totals(client)
            served_phase = cpu.measure(served_burst)
            after = image_tower_totals(client)
            tower = {name: after[name] - before.get(name, 0.0) for name in after}
            bare_rate = max(1, images // best_batch) * best_batch / bare_phase["seconds"]
            served_rate = images / served_phase["seconds"]
            rounds.append(
                {"bare": bare_phase, "served": served_phase, "tower": tower, "ratio": served_rate / bare_rate}
            )
            print(
                f"   round: bare {bare_rate:.2f} images/s (batch {best_batch}; other processes "
                f"{bare_phase['other_cpu']:.1f} s CPU), served {served_rate:.2f} images/s (other processes "
                f"{served_phase['other_cpu']:.1f} s CPU; image tower busy "
                f"{tower['busy_seconds'] / served_phase['seconds']:.0%}, {tower['rows']:.0f} images in "
                f"{tower['batches']:.0f} passes, {tower['busy_seconds'] / max(tower['rows'], 1) * 1000:.0f} ms "
                f"of forward per image; client {served_phase['own_cpu'][1]:.1f} s CPU) = {served_rate / bare_rate:.2f}",
                flush=True,
            )
        print(
            f"3. {args.clients} concurrent clients, served / bare best batch: median "
            f"{median([r['ratio'] for r in rounds]):.2f} over {len(rounds)} rounds",
            flush=True,
        )
        # 4. A trickle of interactive text queries while the same image load runs again.
        watcher = threading.Thread(target=text_while_busy)
        watcher.start()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one_client, range(args.clients)))
        stop_text.set()
        watcher.join()
        print(
            f"4. text while the image tower is busy: p50 {percentile(under_load, 50) * 1000:.0f} ms, "
            f"p99 {percentile(under_load, 99) * 1000:.0f} ms over {len(under_load)} queries",
            flush=True,
        )
        result = {
            "size": args.size,
            "server": info,
            "env": args.env,
            "image_s": image_s,
            "baseline_image_s": base_image_s,
            "cosine": cosine,
            "text_s": text_s,
            "baseline_text_s": base_text_s,
            "bare_images_per_s": bare,
            "throughput_rounds": rounds,
            "text_under_load_s": under_load,
        }
        print(f"results: {write_result('serving-' + args.size, result)}")
    finally:
        client.close()
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
