"""Indexer progress: log lines with done/total, rate and ETA outside a terminal; --json summaries."""

from __future__ import annotations

import io
import json
import logging

import pytest

from indexer.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outside_a_terminal_a_line_every_few_seconds_with_done_total_rate_and_eta(caplog):
    clock = Clock()
    progress = Progress(100, every=5, stream=io.StringIO(), clock=clock)
    with caplog.at_level(logging.INFO, logger="indexer.progress"):
        clock.now += 2
        progress.update(10)  # 2 s after the start: too early for a line
        clock.now += 3
        progress.update(10, added=20, failed=0)  # 5 s: 20 done at 4 rows/s, 80 left -> 20 s
        clock.now += 1
        progress.update(10)  # 1 s after the last line: nothing
        progress.close()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "20/100 rows (20.0%), 4.00 rows/s, ETA 20s (added 20, failed 0)"
    assert len(lines) == 2 and lines[1].startswith("30/100 rows (30.0%)") and "finished in 6s" in lines[1]


def test_no_progress_means_no_lines(caplog):
    progress = Progress(10, enabled=False, every=0, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="indexer.progress"):
        progress.update(10)
        progress.close()
    assert caplog.records == []


def test_durations_read_naturally():
    assert [format_duration(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


@pytest.fixture
def run_cli(indexer_cli, tmp_path):
    """``python -m indexer ARGV`` (in-process) on the test's data folder: its exit code and stdout."""

    def run(*argv: str) -> tuple[int, str]:
        result = indexer_cli(tmp_path / "data", *argv)
        return result.returncode, result.stdout

    return run


def test_add_logs_progress_and_prints_its_summary_as_json(run_cli, tmp_path, caplog):
    code, _ = run_cli("sample", str(tmp_path / "catalog"), "--count", "12", "--size", "32")
    assert code == 0
    manifest = str(tmp_path / "catalog" / "manifest.csv")
    with caplog.at_level(logging.INFO, logger="indexer.progress"):
        code, out = run_cli("add", manifest, "--json", "--batch-size", "4", "--progress-every", "0")
    assert code == 0
    summary = json.loads(out)
    assert summary["added"] == 12 and summary["failed"] == 0 and summary["failures"] == []
    lines = [record.getMessage() for record in caplog.records if record.name == "indexer.progress"]
    assert lines and all("/12 rows" in line and "rows/s, ETA" in line for line in lines)
    assert lines[-1].startswith("12/12 rows (100.0%)")


def test_maintenance_commands_answer_in_json_too(run_cli, tmp_path):
    run_cli("sample", str(tmp_path / "catalog"), "--count", "3", "--size", "32")
    run_cli("add", str(tmp_path / "catalog" / "manifest.csv"), "--no-progress")
    assert json.loads(run_cli("rebuild", "--json")[1]) == {"index_vectors": 3}
    removed = json.loads(run_cli("remove", "sku-00000", "nope", "--json")[1])
    assert removed == {"removed": ["sku-00000"], "not_found": ["nope"]}


def test_an_interrupted_summary_says_interrupted_after_never_finished_in() -> None:
    from indexer.summary import RunSummary

    for command in ("add", "import", "reembed"):
        interrupted = "\n".join(RunSummary(command, total=9, interrupted=True, seconds=3.2).lines())
        finished = "\n".join(RunSummary(command, total=9, seconds=3.2).lines())
        assert "interrupted after 3.2 s" in interrupted and "INTERRUPTED" in interrupted
        assert "finished in" not in interrupted and " in 3.2 s" not in interrupted
        assert "in 3.2 s" in finished and "interrupted" not in finished.lower()
