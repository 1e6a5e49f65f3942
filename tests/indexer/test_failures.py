"""The indexer's failure paths (the second review's class 5): a bad row is a row issue, an unreadable file
is one clean error line, Ctrl-C at any moment is exit 130 with one line, and ``--json`` leaves stdout to
the JSON alone. Also the limits every write path shares: a manifest row, an imported row and a PUT over
VITRINE_MAX_TITLE_CHARS are refused with the same message."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.indexer import indexer_command, indexer_env, summary_of
from tests.support.paths import REPO_ROOT


def picture(folder: Path, name: str, seed: int) -> str:
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    (folder / "pics" / name).write_bytes(encode_png(patterned_image(seed)))
    return f"pics/{name}"


def test_a_csv_cell_over_131072_characters_is_a_row_issue_and_the_rest_is_indexed(indexer_cli, tmp_path):
    folder = tmp_path / "catalog"
    good, long_row = picture(folder, "a.png", 1), picture(folder, "b.png", 2)
    manifest = folder / "m.csv"
    manifest.write_text(f"id,image,title,notes\na,{good},A,short\nb,{long_row},B,{'x' * 140_000}\n")
    result = indexer_cli(tmp_path / "data", "add", manifest, "--json", "--no-progress")
    summary = json.loads(result.stdout)
    assert result.returncode == 2, summary_of(result)
    assert summary["added"] == 1 and summary["failed"] == 1
    [failure] = summary["failures"]
    assert (
        failure["where"] == "line 3"
        and failure["id"] == "b"
        and "VITRINE_MAX_ATTRIBUTE_CHARS" in failure["error"]
    )
    assert "Traceback" not in result.stderr


def test_a_jsonl_line_nested_5000_deep_is_a_row_issue(indexer_cli, tmp_path):
    folder = tmp_path / "catalog"
    good = picture(folder, "a.png", 3)
    manifest = folder / "m.jsonl"
    deep = '{"id": "deep", "image": "x.png", "tags": ' + "[" * 5000 + "]" * 5000 + "}"
    manifest.write_text(json.dumps({"id": "a", "image": good}) + "\n" + deep + "\n")
    result = indexer_cli(tmp_path / "data", "add", manifest, "--json", "--no-progress")
    summary = json.loads(result.stdout)
    assert result.returncode == 2 and summary["added"] == 1, summary_of(result)
    assert (
        summary["failures"][0]["where"] == "line 2" and "nested too deeply" in summary["failures"][0]["error"]
    )


def test_a_manifest_that_is_not_utf8_is_one_clean_error_line(indexer_cli, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"id,image,title\na,a.png,caf\xe9\n")  # Latin-1
    result = indexer_cli(tmp_path / "data", "add", manifest)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and "is not UTF-8 text" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def interrupt_a_run(tiny_model_dir: Path, tmp_path: Path, delay: float) -> None:
    folder = tmp_path / "catalog"
    if not (folder / "m.csv").exists():
        rows = [f"p{i},{picture(folder, f'p{i}.png', 10 + i)}" for i in range(40)]
        (folder / "m.csv").write_text("id,image\n" + "\n".join(rows) + "\n")
    process = subprocess.Popen(
        indexer_command("add", folder / "m.csv", "--no-progress"),
        cwd=REPO_ROOT,
        env=indexer_env(tiny_model_dir, tmp_path / f"data-{delay}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        return  # finished before the signal came: nothing to interrupt
    assert process.returncode == 130, (delay, stderr[-2000:])
    assert "Traceback" not in stderr, (delay, stderr[-3000:])
    errors = [line for line in stderr.splitlines() if "INFO" not in line and "WARNING" not in line]
    # Before the job starts the one line is on stderr; once rows run, the run's summary (on stdout,
    # where its report goes) says it was interrupted.
    assert len(errors) <= 2 and "interrupted" in (stdout + stderr).lower(), (delay, stdout, stderr[-2000:])


@pytest.mark.e2e  # signals to an indexer process of its own
def test_ctrl_c_at_any_moment_of_a_run_is_exit_130_with_one_line(tiny_model_dir, tmp_path):
    """SIGINT while Python imports, while torch loads, while the model loads, while rows run, and while
    a finished run's interpreter tears down (once seen ending the process by SIGINT, -2, with no line)."""
    for delay in (0.2, 1.0, 2.5, 4.5):
        interrupt_a_run(tiny_model_dir, tmp_path, delay)


def test_add_json_prints_only_json_on_stdout_while_a_first_model_conversion_runs(
    indexer_cli, tiny_model_dir, tmp_path, capfd
):
    """A first start converts the model for OpenVINO int8, and NNCF prints its tables on stdout."""
    from indexer.__main__ import run
    from tests.support.settings import indexer_settings

    folder = tmp_path / "catalog"
    manifest = folder / "m.csv"
    manifest.write_text(f"id,image\na,{picture(folder, 'a.png', 60)}\n")
    settings = indexer_settings(tiny_model_dir, tmp_path / "data", runtime="openvino", dtype="int8")
    code = run(["add", str(manifest), "--json", "--no-progress"], settings)
    captured = capfd.readouterr()
    assert code == 0, captured.err[-2000:]
    summary = json.loads(captured.out)  # the whole of stdout is the one JSON object
    assert summary["added"] == 1


def test_a_title_over_the_limit_is_refused_alike_by_manifest_import_and_put(
    indexer_cli, start_server, tmp_path
):
    title = "t" * 31
    expected = "title is 31 characters; the limit is 30 (VITRINE_MAX_TITLE_CHARS)"
    folder = tmp_path / "catalog"
    manifest = folder / "m.csv"
    manifest.write_text(f"id,image,title\na,{picture(folder, 'a.png', 70)},{title}\n")
    added = indexer_cli(tmp_path / "data-add", "add", manifest, "--json", "--no-progress", max_title_chars=30)
    assert json.loads(added.stdout)["failures"][0]["error"] == expected

    table = pa.table({"id": ["a"], "embedding": [[1.0] + [0.0] * 31], "title": [title]})
    pq.write_table(table, tmp_path / "v.parquet")
    imported = indexer_cli(
        tmp_path / "data-import",
        "import",
        tmp_path / "v.parquet",
        "--json",
        "--no-progress",
        max_title_chars=30,
    )
    assert json.loads(imported.stdout)["failures"][0]["error"] == expected

    server = start_server(max_title_chars=30)
    response = server.client.put(
        "/products/a", json={"image": b64(encode_png(patterned_image(71))), "title": title}
    )
    assert assert_error(response, 400) == expected
