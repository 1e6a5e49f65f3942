"""``python -m indexer.engines.reaper PGID``: ends a job's own Ray when the job ends, however it ends.

The driver starts it with a pipe on its stdin and keeps the other end open for the job's life. When
the pipe closes (the driver finished, or was killed with SIGKILL and the kernel closed it), every
process of the Ray head's process group gets SIGKILL, and so does every process that carries this
job's Ray token in its environment: Ray starts its workers in sessions of their own, out of the group.
No raylet, GCS, agent or worker outlives the job.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def processes_with(marker: bytes) -> list[int]:
    """This user's processes whose environment holds ``marker`` (a ``NAME=value`` entry)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or another user's
                continue
    return found


def main() -> None:
    group = int(sys.argv[1])
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    sys.stdin.buffer.read()  # until the driver's end closes
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass
    if token:
        for pid in processes_with(f"RAY_AUTH_TOKEN={token}".encode()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
