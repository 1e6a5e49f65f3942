"""``python -m api`` as a process of its own, on 127.0.0.1: for start-up, exit and a server's own memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.support.paths import REPO_ROOT


def free_port() -> int:
    """A loopback port nothing listens on (closed again when the socket is: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(*prefixes: str) -> dict[str, str]:
    """This process's environment without the variables that start with ``prefixes`` (VITRINE_ always)."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("VITRINE_", *prefixes))}


def start_api(env: dict[str, str], port: int, *, output: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """``python -m api --host 127.0.0.1 --port PORT`` with exactly ``env``, from the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=output,
        stderr=output,
        text=True,
    )
