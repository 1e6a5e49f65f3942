"""A throwaway PostgreSQL primary with a streaming standby on loopback, for the read-routing tests.

The standby is made as a real one is: ``pg_basebackup -R`` from the running primary (it writes
``standby.signal`` and ``primary_conninfo``), then started on its own port in hot-standby mode. The
server binaries are Debian's (``.ci/with-postgres`` installs them in CI); as root the clusters run as
the ``postgres`` user, since PostgreSQL refuses to run as root. Both are stopped and deleted at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.api_process import free_port


def server_bin() -> Path | None:
    """The server binaries .ci/with-postgres found (VITRINE_TEST_POSTGRES_BIN), else Debian's newest, else
    None (the standby tests skip; under .ci/with-postgres they always run)."""
    given = os.environ.get("VITRINE_TEST_POSTGRES_BIN")
    if given:
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found else None


@dataclass
class PrimaryWithStandby:
    primary_url: str
    standby_url: str


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(*command: str | Path) -> None:
    subprocess.run([*_as_owner(), *map(str, command)], check=True, capture_output=True, timeout=120)


def _start(bin_dir: Path, data: Path, port: int, socket_dir: Path, log: Path) -> None:
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={socket_dir} -c fsync=off"
    )
    _run(bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-o", options, "start")


@contextmanager
def primary_with_standby(bin_dir: Path) -> Iterator[PrimaryWithStandby]:
    root = Path(tempfile.mkdtemp(prefix="vitrine-standby."))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    primary, standby = root / "primary", root / "standby"
    primary_port, standby_port = free_port(), free_port()
    started: list[Path] = []
    try:
        _run(bin_dir / "initdb", "-D", primary, "-U", "vitrine", "-A", "trust", "--no-sync")
        _start(bin_dir, primary, primary_port, root, root / "primary.log")
        started.append(primary)
        _run(
            bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(primary_port), "-U", "vitrine", "vitrine_test"
        )
        _run(
            bin_dir / "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary_port), "-U", "vitrine"),
            *("-D", standby, "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"),
        )
        _start(bin_dir, standby, standby_port, root, root / "standby.log")
        started.append(standby)
        url = "postgresql+psycopg://vitrine@127.0.0.1:{}/vitrine_test"
        yield PrimaryWithStandby(url.format(primary_port), url.format(standby_port))
    finally:
        for data in reversed(started):
            subprocess.run(
                [*_as_owner(), str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def wait_for(condition: object, timeout_s: float = 10.0) -> float:
    """Poll ``condition()`` until true; the seconds it took (AssertionError past ``timeout_s``)."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.005)
    return time.monotonic() - started
