"""/health while the worst legal JSON body is read: 58 MB of 29 million tiny values, under the 64 MiB
request limit. Two real servers (``python -m api``, tiny model, torch float32) in the same run:

- "before": VITRINE_MAX_JSON_VALUES raised past the body's count, so the server parses all of it, as
  every server did before the values were counted (json.loads holds the interpreter lock for the whole
  parse, and the event loop with it);
- "after": the default limit (200,000 values): the bytes are counted first and the body refused (413)
  without being built.

    .venv/bin/python bench/bench_body_stall.py [--runs 3]

A prober thread asks /health every 20 ms while the body is sent and answered; reported: the worst and
the p99 /health latency, and the time until the big request's answer.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from _common import ensure_model, percentile, write_result
from bench_serving import start_server, wait_until_ready

BODY = b'{"text": [' + b"0," * 29_000_000 + b"0]}"


def measure(url: str) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    answer: dict[str, object] = {}

    def big() -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            started = time.monotonic()
            response = client.post("/search", content=BODY)
            answer.update(status=response.status_code, seconds=time.monotonic() - started)

    thread = threading.Thread(target=big)
    with httpx.Client(base_url=url, timeout=600) as probe:
        thread.start()
        while thread.is_alive():
            started = time.monotonic()
            probe.get("/health")
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
    thread.join()
    return {
        "health_worst_s": round(max(latencies), 3),
        "health_p99_s": round(percentile(latencies, 99), 3),
        "probes": len(latencies),
        "big_status": answer["status"],
        "big_seconds": round(answer["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import httpx

    model_dir = ensure_model("tiny")
    configs = {
        "before (every value parsed)": ["VITRINE_MAX_JSON_VALUES=100000000"],
        "after (counted first, default limit)": [],
    }
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in configs.items():
            process, url = start_server(
                model_dir, Path(tmp) / label[:6], ["VITRINE_RUNTIME=torch", "VITRINE_DTYPE=float32", *env]
            )
            try:
                with httpx.Client(base_url=url, timeout=600) as client:
                    wait_until_ready(process, client)
                rows[label] = [measure(url) for _ in range(args.runs)]
            finally:
                process.terminate()
                process.wait(60)
            print(label, rows[label], flush=True)
    print(f"\n/health while a {len(BODY) / 1e6:.0f} MB body of 29 million values is read ({args.runs} runs)")
    print("| server | /health worst (s) | /health p99 (s) | answer | answer after (s) |")
    print("|---|---|---|---|---|")
    for label, runs in rows.items():
        worst = max(run["health_worst_s"] for run in runs)
        p99 = max(run["health_p99_s"] for run in runs)
        seconds = max(run["big_seconds"] for run in runs)
        print(f"| {label} | {worst} | {p99} | {runs[0]['big_status']} | {seconds} |")
    print(f"results: {write_result('body-stall', {'rows': rows})}")


if __name__ == "__main__":
    main()
