"""The README's "Using it" examples, run as pasted (bash, curl) against a demo catalog.

Each command runs from a folder laid out as the repository after ``make demo`` (``data/sample-catalog``),
with ``localhost:8000`` pointed at a live server. Every answer must be JSON without an error, and every
key of the answer the README shows must be in the real one: a field the server no longer gives, a
filter that finds nothing, or a command that needs editing fails here. Commands with a ``<PLACEHOLDER>``
are skipped (the README marks them so).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.app import create_app
from devtools.sample_catalog import write_sample_catalog
from indexer.__main__ import run as run_indexer
from tests.support.paths import REPO_ROOT
from tests.support.servers import LiveServer
from tests.support.settings import indexer_settings, settings_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")

DEMO_PRODUCTS = 80  # the examples name products up to sku-00071


@dataclass
class Example:
    command: str
    answer: str  # the README's answer comment, "" where it shows none


def readme_examples() -> list[Example]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    block = section[section.index("```bash\n") + 8 :]
    block = block[: block.index("```")]
    examples: list[Example] = []
    command: list[str] = []
    answer: list[str] = []

    def flush() -> None:
        if command:
            examples.append(Example("\n".join(command), "\n".join(answer)))
        command.clear()
        answer.clear()

    for line in block.splitlines():
        if line.startswith(("# {", "# [", "#  ")):
            answer.append(line[2:])
        elif line.startswith("#") or not line.strip():
            flush()
        elif line.startswith(("curl ", "{ printf")) and (answer or not command or _complete(command)):
            flush()
            command.append(line)
        else:
            command.append(line)
    flush()
    return [example for example in examples if "curl" in example.command]


def _complete(lines: list[str]) -> bool:
    """Whether the command so far ends a request (a body file written and sent, or a curl call)."""
    return lines[-1].startswith("curl ") or "--data-binary" in lines[-1] or lines[-1].rstrip().endswith("'")


def shown_keys(answer: str) -> set[str]:
    return set(re.findall(r'"([A-Za-z_][A-Za-z0-9_.]*)":', answer))


def all_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in all_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in all_keys(item)}
    return set()


@pytest.fixture(scope="module")
def demo(tiny_model_dir: Path, encoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LiveServer]:
    root = tmp_path_factory.mktemp("demo")
    manifest = write_sample_catalog(root / "data" / "sample-catalog", DEMO_PRODUCTS, size=48)
    data = root / "data"
    assert (
        run_indexer(["add", str(manifest)], settings=indexer_settings(tiny_model_dir, data), encoder=encoder)
        == 0
    )
    server = LiveServer(create_app(settings_for(tiny_model_dir, data), encoder=encoder)).start()
    yield root, server
    server.stop()


EXAMPLES = readme_examples()


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) >= 14
    assert any("TX-4471" in example.command for example in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{i:02d}" for i in range(len(EXAMPLES))])
def test_a_readme_example_answers_as_shown(demo, example: Example):
    root, server = demo
    if re.search(r"<[A-Z0-9 _:,-]+>", example.command):
        pytest.skip("a marked placeholder")
    command = example.command.replace("localhost:8000", server.base_url.removeprefix("http://"))
    result = subprocess.run(["bash", "-c", command], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert not (isinstance(answer, dict) and "error" in answer), (example.command, answer)
    if isinstance(answer, dict) and "results" in answer:
        assert answer["results"], f"found nothing: {example.command}"
    missing = shown_keys(example.answer) - all_keys(answer)
    assert not missing, (example.command, missing, result.stdout[:2000])
    if "TX-4471" in example.command:
        assert answer["results"][0]["id"] == "sku-00071"
