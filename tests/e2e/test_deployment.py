"""Deployment files: the compose profiles, the images' build context, the handler's requirements."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from tests.support.paths import REPO_ROOT


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower()


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed (.ci/run installs it)"
)
@pytest.mark.parametrize("profile", ["cpu", "gpu", "scale"])
def test_docker_compose_accepts_each_profile_without_an_engine(profile):
    result = subprocess.run(
        ["docker-compose", "--profile", profile, "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_each_profile_starts_its_own_services():
    profiles: dict[str, set[str]] = {}
    for name, service in _compose()["services"].items():
        for profile in service["profiles"]:
            profiles.setdefault(profile, set()).add(name)
    assert profiles == {
        "cpu": {"vitrine"},
        "gpu": {"vitrine-gpu"},
        "scale": {"vitrine-scale-a", "vitrine-scale-b", "balancer", "postgres"},
    }


def test_every_service_is_in_a_profile_and_mounts_the_model_volume():
    services = _compose()["services"]
    assert all(service.get("profiles") for service in services.values())
    for name in ("vitrine", "vitrine-gpu", "vitrine-scale-a", "vitrine-scale-b"):
        assert "./models:/models" in services[name]["volumes"], name
        assert services[name]["environment"]["HF_HOME"] == "/models/hf-cache"


def test_gpu_profile_builds_the_cuda_image_and_reserves_a_gpu():
    gpu = _compose()["services"]["vitrine-gpu"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.cuda"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["VITRINE_DEVICE"] == "cuda"


def test_scale_profile_puts_both_replicas_on_one_postgres_behind_the_balancer():
    services = _compose()["services"]
    a, b = services["vitrine-scale-a"], services["vitrine-scale-b"]
    url = a["environment"]["VITRINE_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    assert b["environment"]["VITRINE_DATABASE_URL"] == url  # one catalog
    # Images live in the shared database, not in a replica's own folder (a PUT on A is served by B).
    assert a["environment"]["VITRINE_IMAGE_STORE"] == b["environment"]["VITRINE_IMAGE_STORE"] == "database"
    assert a["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert b["depends_on"]["vitrine-scale-a"]["condition"] == "service_healthy"  # A migrates first
    # Either vector backend: the database has the extension pgvector needs from its first start.
    assert b["environment"]["VITRINE_VECTOR_BACKEND"] == "${VITRINE_VECTOR_BACKEND:-faiss}"
    assert any(
        "postgres-vector.sql:/docker-entrypoint-initdb.d/" in v for v in services["postgres"]["volumes"]
    )
    assert (
        "CREATE EXTENSION IF NOT EXISTS vector" in (REPO_ROOT / "deploy" / "postgres-vector.sql").read_text()
    )
    balancer = services["balancer"]
    assert set(balancer["depends_on"]) == {"vitrine-scale-a", "vitrine-scale-b"}
    assert all(port.startswith("127.0.0.1:") for port in balancer["ports"])


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_images_copy_only_files_that_exist_and_never_the_heavy_folders(dockerfile):
    text = (REPO_ROOT / dockerfile).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source}"
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".venv", "models", "data", ".git"} <= ignored


def test_handler_requirements_are_the_project_dependencies_without_torch():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(dep): dep for dep in project["dependencies"] if _name(dep) != "torch"}
    wanted["faiss-cpu"] = next(dep for dep in project["optional-dependencies"]["cpu"])
    lines = [
        line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"
    ]
    assert {_name(line): line for line in lines} == wanted
