"""Offline start-up: no half-minute of hub retries, one message with the three ways forward."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from devtools.api_process import clean_env, free_port, start_api
from search.errors import ModelLoadError
from search.model.weights import hub_reachable, locate_weights


def start_offline(tmp_path: Path, **env_overrides: str) -> subprocess.Popen[str]:
    """``python -m api`` on the hub id with an empty hub cache, in the background."""
    env = clean_env("HF_")
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),  # an empty hub cache
        VITRINE_MODEL="google/siglip2-base-patch16-512",
        VITRINE_DATA_DIR=str(tmp_path / "data"),
        **env_overrides,
    )
    return start_api(env, free_port())


@pytest.fixture(scope="module")
def offline_starts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Both offline start-ups, run at the same time (each is mostly importing torch and transformers):
    "unreachable" with a hub endpoint nobody listens on, "offline" with HF_HUB_OFFLINE=1."""
    overrides = {
        "unreachable": {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        "offline": {"HF_HUB_OFFLINE": "1"},
    }
    started = {name: start_offline(tmp_path_factory.mktemp(name), **env) for name, env in overrides.items()}
    finished = {}
    try:
        for name, process in started.items():
            stdout, stderr = process.communicate(timeout=120)
            finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        for process in started.values():
            process.kill()
    return finished


def assert_one_message_with_the_ways_forward(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert output.count("vitrine could not start") == 1
    assert output.count("Three ways forward") == 1
    assert "VITRINE_MODEL=" in result.stderr
    assert "make demo" in result.stderr
    assert "hf download google/siglip2-base-patch16-512 --local-dir models/siglip2-base-patch16-512" in (
        result.stderr
    )
    assert_the_download_command_runs_as_pasted(result.stderr)
    assert "Retrying" not in output and "retry" not in output.lower()


def assert_the_download_command_runs_as_pasted(message: str) -> None:
    """The command between backticks, pasted into a shell with a bare PATH, starts (its --help: the
    download itself needs the hub)."""
    command = re.search(r"`([^`]*hf download[^`]*)`", message).group(1)
    words = shlex.split(command)
    assert words[-4:] == [
        "download",
        "google/siglip2-base-patch16-512",
        "--local-dir",
        "models/siglip2-base-patch16-512",
    ]
    result = subprocess.run(
        [*words[:-3], "--help"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--local-dir" in result.stdout


def test_unreachable_hub_fails_at_once_with_the_three_ways_forward(offline_starts):
    result = offline_starts["unreachable"]
    assert_one_message_with_the_ways_forward(result)
    assert "cannot be reached" in result.stderr


def test_hf_hub_offline_without_the_model_in_the_cache_fails_with_the_same_message(offline_starts):
    result = offline_starts["offline"]
    assert_one_message_with_the_ways_forward(result)
    assert "HF_HUB_OFFLINE is set" in result.stderr


def test_hub_probe_sees_a_listening_server_and_a_free_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert hub_reachable(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=2)
    assert not hub_reachable(f"http://127.0.0.1:{free_port()}", timeout=2)


def test_a_local_folder_loads_without_asking_the_hub(tiny_model_dir):
    assert locate_weights(str(tiny_model_dir)).local_files_only


def test_a_missing_local_folder_names_the_ways_forward(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder") as caught:
        locate_weights(str(tmp_path / "nowhere"))
    assert "make demo" in str(caught.value)
