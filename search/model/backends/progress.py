"""How far an export has got: the builders call ``report`` at each step; whoever runs them listens.

In-process (the indexer's ``export-model``) a step is a log line. In the export's child process
(``export_job``) each step is one line on stdout that the server reads, so /ready, /info and /metrics
can say "building openvino-int8, 40%".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Reporter = Callable[[int, str], None]


def _log_step(percent: int, step: str) -> None:
    log.info("export: %d%% %s", percent, step)


_reporter: Reporter = _log_step


def report(percent: int, step: str) -> None:
    """Step ``step`` starts; ``percent`` of the whole export is done."""
    _reporter(percent, step)


def listen(reporter: Reporter) -> None:
    """Send every later step to ``reporter`` (one per process: the export job's stdout)."""
    global _reporter
    _reporter = reporter
