"""The indexer CLI in-process (the default) or as a process of its own (signals, kills, races)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from search.model.encoder import Encoder
from search.settings import Settings
from tests.support.paths import REPO_ROOT


def run_indexer_in_process(
    settings: Settings, *args: object, encoder: Encoder | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m indexer ARGS`` as a call (``indexer.__main__.run``): stdout, stderr (log lines
    included, formatted as the CLI's own) and the exit code, as a subprocess run would give them. The
    ``encoder``, when given, is used instead of loading ``settings.model`` again."""
    from indexer.__main__ import run

    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = run(argv, settings, encoder)
            except SystemExit as exited:  # argparse: a usage error (2) or --help (0)
                code = exited.code if isinstance(exited.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["indexer", *argv], code, stdout.getvalue(), stderr.getvalue())


def indexer_env(model_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment of an indexer subprocess: the settings of ``indexer_settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(
        VITRINE_MODEL=str(model_dir),
        VITRINE_DATA_DIR=str(data_dir),
        VITRINE_DEVICE="cpu",
        VITRINE_DTYPE="float32",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def indexer_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "indexer", *(str(arg) for arg in args)]


def start_indexer(
    model_dir: Path, data_dir: Path, *args: object, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``python -m indexer`` as a process of its own, in the background: only for what a call cannot
    show (signals, a killed run, a second process writing at the same time). A run is mostly start-up
    (importing torch and transformers, about 5 s). ``env``: more variables (settings)."""
    return subprocess.Popen(
        indexer_command(*args),
        cwd=REPO_ROOT,
        env=indexer_env(model_dir, data_dir) | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_indexer(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def summary_of(result: subprocess.CompletedProcess[str]) -> str:
    """An indexer run's output, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-3000:]}"


def product_count(db: Path) -> int:
    """Products a run has committed to the SQLite catalog ``db``, or 0 while the database or its tables
    do not exist yet (a run watched from outside, to be killed in the middle)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM products").fetchone()[0])
    except sqlite3.DatabaseError:  # created but not migrated yet
        return 0
