"""The server's memory per runtime: a real ``python -m api`` on base-512, after it is ready and has
answered one image and one text, then after 8 concurrent images.

    .venv/bin/python bench/bench_server_memory.py                       # default, openvino bf16, torch fp32
    .venv/bin/python bench/bench_server_memory.py --configs auto/auto   # one configuration

Each configuration runs in its own server process, one after another, with the export cache of
``bench_serving`` (conversions built first where missing). Reported from /proc: resident memory (RSS)
and its peak (VmHWM), in MiB.
"""

from __future__ import annotations

import argparse
import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, ensure_model, write_result
from bench_serving import photo_jpeg, start_server, wait_until_ready


def memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="base-512", choices=["tiny", "base-512"])
    parser.add_argument("--configs", nargs="+", default=["auto/auto", "openvino/bfloat16", "torch/float32"])
    parser.add_argument("--data-dir", default=str(ROOT / "models" / "bench-data"))
    args = parser.parse_args()

    import httpx

    model_dir = ensure_model(args.size)
    image = base64.b64encode(photo_jpeg()).decode()
    rows = []
    for config in args.configs:
        runtime, dtype = config.split("/")
        env = [f"VITRINE_RUNTIME={runtime}", f"VITRINE_DTYPE={dtype}"]
        process, url = start_server(model_dir, Path(args.data_dir), env)
        client = httpx.Client(base_url=url, timeout=600)
        try:
            wait_until_ready(process, client)
            info = client.get("/info").json()
            served = f"{info.get('runtime')} {info.get('dtype')}"
            ready = memory_mib(process.pid)
            body = {"inputs": image, "parameters": {"mode": "image_embedding"}}
            assert client.post("/", json=body).status_code == 200
            text = {"inputs": ["beige matte ceramic floor tile"], "parameters": {"mode": "text_embedding"}}
            assert client.post("/", json=text).status_code == 200
            answered = memory_mib(process.pid)
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(client.post, "/", json=body) for _ in range(8)]
                statuses = [future.result().status_code for future in futures]
            assert statuses == [200] * 8, statuses
            loaded = memory_mib(process.pid)
        finally:
            client.close()
            process.terminate()
            process.wait(60)
        row = {
            "config": config,
            "served": served,
            "ready": ready,
            "answered": answered,
            "eight_images": loaded,
        }
        rows.append(row)
        print(row, flush=True)
    print(f"\nserver memory, {args.size} (random weights), MiB")
    print(
        "| settings | served by | RSS ready | RSS after 1 image + 1 text | RSS after 8 concurrent images | peak |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['config']} | {row['served']} | {row['ready']['rss']:.0f} | {row['answered']['rss']:.0f} "
            f"| {row['eight_images']['rss']:.0f} | {row['eight_images']['peak']:.0f} |"
        )
    print(f"results: {write_result('server-memory-' + args.size, {'size': args.size, 'rows': rows})}")


if __name__ == "__main__":
    main()
