"""Indexer progress: log lines with done/total, rate and ETA outside a terminal; --json summaries."""

from __future__ import annotations

import io
import json
import logging

import pytest

from indexer.__main__ import main as indexer_main
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


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        indexer_main(list(argv))
    return exited.value.code or 0, capsys.readouterr().out


@pytest.fixture
def indexer_env(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("VITRINE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VITRINE_DEVICE", "cpu")
    monkeypatch.setenv("VITRINE_DTYPE", "float32")
    return tmp_path


def test_add_logs_progress_and_prints_its_summary_as_json(indexer_env, capsys, caplog):
    code, _ = run_cli(capsys, "sample", str(indexer_env / "catalog"), "--count", "12", "--size", "32")
    assert code == 0
    manifest = str(indexer_env / "catalog" / "manifest.csv")
    with caplog.at_level(logging.INFO, logger="indexer.progress"):
        code, out = run_cli(capsys, "add", manifest, "--json", "--batch-size", "4", "--progress-every", "0")
    assert code == 0
    summary = json.loads(out)
    assert summary["added"] == 12 and summary["failed"] == 0 and summary["failures"] == []
    lines = [record.getMessage() for record in caplog.records if record.name == "indexer.progress"]
    assert lines and all("/12 rows" in line and "rows/s, ETA" in line for line in lines)
    assert lines[-1].startswith("12/12 rows (100.0%)")


def test_maintenance_commands_answer_in_json_too(indexer_env, capsys):
    run_cli(capsys, "sample", str(indexer_env / "catalog"), "--count", "3", "--size", "32")
    run_cli(capsys, "add", str(indexer_env / "catalog" / "manifest.csv"), "--no-progress")
    assert json.loads(run_cli(capsys, "rebuild", "--json")[1]) == {"index_vectors": 3}
    removed = json.loads(run_cli(capsys, "remove", "sku-00000", "nope", "--json")[1])
    assert removed == {"removed": ["sku-00000"], "not_found": ["nope"]}
