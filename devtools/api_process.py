"""``python -m api`` as a process of its own, on 127.0.0.1: for the tests of start-up, exit and a server's
own memory, and for the benchmarks that run replicas."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on (closed again when the socket is: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Exports that test and benchmark processes build (keyed by the checkpoint's content, so sharing them is safe): never
# in the user's own cache folder.
TEST_EXPORTS = Path(tempfile.gettempdir()) / "vitrine-test-exports"


def clean_env(*prefixes: str) -> dict[str, str]:
    """This process's environment without the variables that start with ``prefixes`` (VITRINE_ always),
    with the export cache in a temporary folder (a test that needs its own sets VITRINE_CACHE_DIR)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VITRINE_", *prefixes))}
    env["VITRINE_CACHE_DIR"] = str(TEST_EXPORTS)
    return env


def start_api(
    env: dict[str, str], port: int, *, output: int | IO[str] = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``python -m api --host 127.0.0.1 --port PORT`` with exactly ``env``, from the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=output,
        stderr=output,
        text=True,
    )
