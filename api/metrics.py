"""Prometheus metrics in the text exposition format, with no extra dependency.

Requests are counted by route template (``/products/{product_id}``, never the raw path: ids would
make the series unbounded), method and status; latency goes into a histogram per route.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search.model.batching import QueueStats

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sums: dict[str, float] = defaultdict(float)

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            self._buckets[route][bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[route] += seconds

    def render(self, gauges: dict[str, tuple[str, float]], info: dict[str, str]) -> str:
        """The exposition text; ``gauges`` maps a name to (help, value), ``info`` labels vitrine_info."""
        lines = [
            "# HELP vitrine_requests_total HTTP requests by route template, method and status.",
            "# TYPE vitrine_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), count in sorted(self._requests.items()):
                lines.append(
                    f'vitrine_requests_total{{route="{_esc(route)}",method="{method}",status="{status}"}} {count}'
                )
            lines += [
                "# HELP vitrine_request_seconds Request latency by route template.",
                "# TYPE vitrine_request_seconds histogram",
            ]
            for route, counts in sorted(self._buckets.items()):
                label = f'route="{_esc(route)}"'
                cumulative = 0
                for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'vitrine_request_seconds_bucket{{{label},le="{le}"}} {cumulative}')
                lines.append(f"vitrine_request_seconds_sum{{{label}}} {self._sums[route]:.6f}")
                lines.append(f"vitrine_request_seconds_count{{{label}}} {cumulative}")
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        labels = ",".join(f'{key}="{_esc(value)}"' for key, value in info.items())
        lines += [
            "# HELP vitrine_info The model being served.",
            "# TYPE vitrine_info gauge",
            f"vitrine_info{{{labels}}} 1",
        ]
        return "\n".join(lines) + "\n"


def queue_gauges(tower: str, stats: QueueStats) -> dict[str, tuple[str, float]]:
    """A scheduler queue's totals: mean batch size is rows / batches, utilisation busy seconds / uptime."""
    prefix = f"vitrine_{tower}_"
    return {
        prefix + "batches": (f"Forward passes of the {tower} tower.", float(stats.batches)),
        prefix + "rows": (f"{tower.capitalize()}s computed by those passes.", float(stats.rows)),
        prefix + "busy_seconds": (f"Seconds inside {tower} forward passes.", round(stats.busy_seconds, 6)),
        prefix + "dropped_rows": (
            f"{tower.capitalize()}s of cancelled requests never computed.",
            float(stats.dropped_rows),
        ),
        prefix + "rejected": (
            f"{tower.capitalize()} submissions answered 429 (queue full).",
            float(stats.rejected),
        ),
    }


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """ASGI middleware: times every HTTP request and records it under its route template."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record(template, scope["method"], status, self.clock() - started)
