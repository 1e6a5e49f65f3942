"""Progress of long indexer work: a bar on a terminal, a log line every few seconds everywhere else
(logs, CI, containers), both with done/total, rate and ETA."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("indexer.progress")


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(
        self,
        total: int,
        *,
        unit: str = "rows",
        enabled: bool = True,
        every: float = 5.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        stream = stream or sys.stderr
        self.total = total
        self.unit = unit
        self.every = every
        self.done = 0
        self.counts: dict[str, int] = {}
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        terminal = enabled and stream.isatty()
        self._bar = tqdm(total=total, unit=unit, file=stream, dynamic_ncols=True) if terminal else None
        self._log_lines = enabled and not terminal

    def update(self, n: int, **counts: int) -> None:
        self.done += n
        self.counts.update(counts)
        if self._bar is not None:
            self._bar.update(n)
            if counts:
                self._bar.set_postfix(counts)
        elif self._log_lines and self._clock() - self._last_line >= self.every:
            self._last_line = self._clock()
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        counts = ", ".join(f"{key} {value}" for key, value in self.counts.items())
        return (
            f"{self.done}/{self.total} {self.unit} ({percent:.1f}%), {rate:.2f} {self.unit}/s, ETA {eta}"
            + (f" ({counts})" if counts else "")
        )

    def close(self, *, interrupted: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._log_lines and self.done:
            ended = "interrupted after" if interrupted else "finished in"
            log.info("%s, %s %s", self.line(), ended, format_duration(self._clock() - self._started))
