"""``python -m indexer.engines.reaper PGID``: ends a job's own Ray when the job ends, however it ends.

The driver starts it with a pipe on its stdin and keeps the other end open for the job's life. When
the pipe closes (the driver finished, or was killed with SIGKILL and the kernel closed it), every
process of the Ray's process group gets SIGKILL: no raylet, GCS, agent or worker outlives the job.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    group = int(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    sys.stdin.buffer.read()  # until the driver's end closes
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


if __name__ == "__main__":
    main()
