"""One export step in a process of its own: ``python -m search.model.backends.export_job``.

A server builds its faster runtime's export here, never in its own process: a child can be killed at
once (Ctrl-C, SIGTERM) where a conversion running in a thread of the server could not, and the memory
a conversion peaks at (several times the checkpoint) goes back to the system when the child ends.
Each step is one child: the float conversion and its int8 compression run one after the other, so
their peaks never add up.

Progress goes to stdout, one line per step: ``@progress PERCENT STEP``; logs go to stderr. Exit 0: the
export is built (accepted or refused: its manifest says), 1: the build failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from search.heap import limit_malloc_arenas

PROGRESS_PREFIX = "@progress "


def _print_progress(percent: int, step: str) -> None:
    print(f"{PROGRESS_PREFIX}{percent} {step}", flush=True)


def parse_progress(line: str) -> tuple[int, str] | None:
    """(percent, step) of a progress line of the child's stdout, or None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    percent, _, step = line[len(PROGRESS_PREFIX) :].strip().partition(" ")
    try:
        return int(percent), step
    except ValueError:
        return None


def command(model: str, cache_dir: Path, runtime: str, precision: str, key: str) -> list[str]:
    """The child's command line (this interpreter)."""
    return [
        sys.executable,
        "-m",
        "search.model.backends.export_job",
        "--model",
        model,
        "--cache-dir",
        str(cache_dir),
        "--runtime",
        runtime,
        "--precision",
        precision,
        "--key",
        key,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.model.backends.export_job")
    parser.add_argument("--model", required=True, help="local checkpoint folder")
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--runtime", required=True, choices=["onnx", "openvino"])
    parser.add_argument("--precision", required=True)
    parser.add_argument("--key", required=True, help="the checkpoint's export key (hashed by the parent)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    os.nice(10)  # the server's requests come first on a shared CPU
    limit_malloc_arenas(2)  # before OpenVINO's threads: freed graphs go back to the OS (search/heap.py)

    from search.logs import configure_logging, quiet_libraries

    configure_logging(args.log_level)
    quiet_libraries(args.log_level)
    import transformers

    from search.model.backends import progress
    from search.model.backends.base import BackendUnavailable, RuntimeChoice
    from search.model.weights import Checkpoint

    transformers.utils.logging.set_verbosity_error()  # loading one tower lists the other's weights
    transformers.utils.logging.disable_progress_bar()
    progress.listen(_print_progress)
    checkpoint = Checkpoint(args.model, export_key=args.key)  # hashed once, by the parent
    choice = RuntimeChoice(args.runtime, args.precision)
    if args.runtime == "openvino":
        from search.model.backends.openvino_backend import ensure_export
    else:
        from search.model.backends.onnx_backend import ensure_export
    try:
        ensure_export(args.model, choice, args.cache_dir, checkpoint=checkpoint)
    except BackendUnavailable as exc:  # built, but refused by its accuracy check
        logging.getLogger(__name__).info("%s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
