"""devtools.cpu_by_process: the CPU a command's processes used, by kind, as the suite's speed notes
quote it (README, Testing)."""

from __future__ import annotations

import sys

import pytest

from devtools.cpu_by_process import kind_of, main

BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"


def test_a_kind_is_the_first_words_without_their_folders() -> None:
    assert kind_of("/usr/lib/chromium/chromium --headless --no-sandbox --x y") == (
        "chromium --headless --no-sandbox --x"
    )
    assert kind_of("ray::MapWorker(MapBatches(_EmbedActor))") == "ray::MapWorker(MapBatches(_EmbedActor))"


def test_a_child_s_cpu_is_attributed_to_its_kind_and_its_exit_code_passed_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--every", "0.05", "--", sys.executable, "-c", BURN + "raise SystemExit(3)"])
    assert code == 3
    report = capsys.readouterr().err
    python = sys.executable.rsplit("/", 1)[-1]
    rows = [line.split(None, 2) for line in report.splitlines()[3:] if line.strip()]
    burned = [
        (float(seconds), int(count))
        for seconds, count, kind in rows
        if kind.startswith(f"{python} -c import time")
    ]
    assert burned and burned[0][0] >= 0.4 and burned[0][1] == 1, report
