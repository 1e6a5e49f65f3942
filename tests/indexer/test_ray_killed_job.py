"""``indexer add --engine ray`` killed mid-run: no Ray process is left behind (the job's own Ray, which
the job runs as a process of its own starts, is ended by its reaper), and a rerun completes the job
with nothing lost or repeated, and leaves no Ray either.

A file of its own, apart from test_ray_engine.py (whose two-node cluster it does not use): under
``--dist loadfile`` the two may run on different test workers at the same time."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.catalogs import SAMPLE_PRODUCTS
from tests.support.indexer import finish_indexer, product_count, start_indexer, summary_of
from tests.support.ray_jobs import RAY_TESTS

pytestmark = RAY_TESTS

Indexer = Callable[..., subprocess.CompletedProcess[str]]


def process_group(pgid: int) -> list[int]:
    """The live processes (not zombies) of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def ray_head_of(driver: int) -> int | None:
    """The pid of the ``ray start --head`` a driver started (its Ray's process group), if any yet."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == driver and b"ray.scripts.scripts start --head" in command:
            return int(entry.name)
    return None


def ray_environ_of(head: int) -> list[bytes]:
    """The environment a job's Ray head started with (``NAME=value`` entries): its driver has the same."""
    return Path(f"/proc/{head}/environ").read_bytes().split(b"\0")


def ray_token_of(environ: list[bytes]) -> bytes:
    """The ``RAY_AUTH_TOKEN=...`` entry of a job's Ray: every process of that Ray carries it."""
    return next(entry for entry in environ if entry.startswith(b"RAY_AUTH_TOKEN="))


def live_processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_ray_gone(group: int, token: bytes, within: float = 20.0) -> None:
    """No process of the job's Ray is left: neither in its head's group nor any with its token (Ray's
    workers run in sessions of their own)."""
    deadline = time.monotonic() + within
    while (process_group(group) or live_processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [
        Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
        for pid in {*process_group(group), *live_processes_with(token)}
    ]
    assert not left, f"Ray processes left behind: {left}"


def test_a_killed_ray_job_leaves_no_ray_and_its_rerun_loses_and_repeats_nothing(
    slow_url_manifest: Path, tiny_model_dir: Path, tmp_path: Path, indexer_cli: Indexer
) -> None:
    data_dir = tmp_path / "data"
    db = data_dir / "vitrine.db"
    args = ("add", slow_url_manifest, "--engine", "ray", "--batch-size", 2, "--no-progress", "--json")
    env = {"VITRINE_URL_ALLOW_HOSTS": "127.0.0.1"}
    job = start_indexer(tiny_model_dir, data_dir, *args, env=env)
    group = None
    try:
        deadline = time.monotonic() + 240
        while product_count(db) == 0:
            if group is None and (group := ray_head_of(job.pid)) is not None:
                environ = ray_environ_of(group)
                token = ray_token_of(environ)
            assert job.poll() is None, summary_of(finish_indexer(job))
            assert time.monotonic() < deadline, "the Ray job committed nothing in 240 s"
            time.sleep(0.01)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            job.kill()
        killed = finish_indexer(job)
    assert killed.returncode == -signal.SIGKILL
    committed = product_count(db)
    assert 0 < committed < SAMPLE_PRODUCTS, "the job must be killed in the middle"
    assert group is not None
    assert_ray_gone(group, token)  # the reaper ended the dead job's Ray
    # Usage stats off for the job's Ray and its driver: no Ray Data usage actor (a process) per job.
    assert b"RAY_USAGE_STATS_ENABLED=0" in environ

    rerun = start_indexer(tiny_model_dir, data_dir, *args, env=env)
    group = None
    while rerun.poll() is None and group is None:
        if (group := ray_head_of(rerun.pid)) is not None:
            token = ray_token_of(ray_environ_of(group))
        time.sleep(0.05)
    finished = finish_indexer(rerun)
    assert finished.returncode == 0, summary_of(finished)
    summary = json.loads(finished.stdout)
    assert (summary["added"], summary["skipped"], summary["failed"]) == (
        SAMPLE_PRODUCTS - committed,
        committed,
        0,
    )
    assert group is not None
    assert_ray_gone(group, token, within=5)  # a job that ends normally leaves no Ray either
    with sqlite3.connect(db) as conn:
        products = [row[0] for row in conn.execute("SELECT external_id FROM products")]
        images = conn.execute("SELECT count(*) FROM product_images").fetchone()[0]
    assert len(products) == len(set(products)) == SAMPLE_PRODUCTS and images == SAMPLE_PRODUCTS
    verify = indexer_cli(data_dir, "verify")
    assert verify.returncode == 0, summary_of(verify)
