"""The client installs alone: its package (client/) depends on httpx only and imports nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.support.paths import REPO_ROOT

# What a server install pulls and a client install must not.
SERVER_ONLY = ("torch", "transformers", "numpy", "fastapi", "pydantic", "sqlalchemy", "PIL", "faiss")


def test_the_client_wheel_requires_httpx_only_and_holds_the_client(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            "./client",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("vitrine_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(name).decode() for name in names if name.endswith("METADATA"))
    requires = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    assert requires == ["httpx>=0.27"]
    assert "vitrine/client.py" in names
    assert not [name for name in names if name.split("/")[0] in ("search", "api", "indexer")]


def test_the_client_imports_with_every_server_dependency_missing():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in SERVER_ONLY)
    code = f"import sys; {blocked}; from vitrine import Client; print(Client.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Client"
