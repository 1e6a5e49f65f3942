"""Where a model's weights come from: a local folder, the hub cache, or the hub itself.

Offline, transformers retries the hub for half a minute before failing. vitrine asks first, with one
short connection attempt, and then either loads from the local cache only or fails at once with the
ways forward.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from search.errors import ModelLoadError

HUB_PROBE_SECONDS = 2.0
DOWNLOAD_EXAMPLE = "google/siglip2-base-patch16-512"


@dataclass(frozen=True)
class WeightsSource:
    """How to hand ``model_id`` to transformers: ``local_files_only`` when the hub must not be asked."""

    model_id: str
    local_files_only: bool


def looks_like_folder(model_id: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else was meant as a local folder.
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def ways_forward(model_id: str) -> str:
    """The three ways to get a model onto this machine, for every load failure message."""
    name = (
        model_id.rstrip("/").rsplit("/", 1)[-1]
        if not looks_like_folder(model_id)
        else DOWNLOAD_EXAMPLE.rsplit("/", 1)[-1]
    )
    hub_id = model_id if not looks_like_folder(model_id) else DOWNLOAD_EXAMPLE
    return (
        "Three ways forward:\n"
        f"  1. a local copy of the checkpoint: VITRINE_MODEL=/path/to/{name} make serve\n"
        "  2. everything offline with a random tiny model and a sample catalog: make demo\n"
        f"  3. download the weights where the hub is reachable: make weights (or `{download_command(hub_id, name)}`), "
        f"copy models/{name} here and set VITRINE_MODEL=models/{name}"
    )


def download_command(hub_id: str, name: str) -> str:
    """The hub's download command as it works when pasted: by this interpreter's path (``hf`` alone is
    on PATH only inside the virtual environment)."""
    python = shlex.quote(sys.executable)
    return f"{python} -m huggingface_hub.cli.hf download {hub_id} --local-dir models/{name}"


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """One TCP connection to the hub, bounded in time including the DNS lookup (which has no timeout)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="vitrine-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def in_hub_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def locate_weights(model_id: str) -> WeightsSource:
    """Decide where ``model_id`` loads from, failing in seconds (not after retries) when it cannot."""
    if looks_like_folder(model_id) or Path(model_id).is_dir():
        if not Path(model_id).is_dir():
            raise ModelLoadError(
                f"Could not load the model {model_id!r}: no such folder.\n{ways_forward(model_id)}"
            )
        return WeightsSource(model_id, local_files_only=True)
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and hub_reachable(constants.ENDPOINT):
        return WeightsSource(model_id, local_files_only=False)
    if in_hub_cache(model_id):
        return WeightsSource(model_id, local_files_only=True)
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
    raise ModelLoadError(
        f"Could not load the model {model_id!r}: {why} and the model is not in the local hub cache.\n"
        f"{ways_forward(model_id)}"
    )


# What a checkpoint holds, hashed once ----------------------------------------------------------------

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content, read in 8 MB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    target = path.resolve()
    # The hub cache names each large (LFS) file's blob by the sha256 of its content: no need to read it.
    if _SHA256_NAME.fullmatch(target.name):
        return target.name
    return sha256_file(target)


def checkpoint_folder(model_id: str) -> Path:
    """The folder the weights were loaded from: the local folder, or the hub cache's snapshot."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_id, local_files_only=True))


class Checkpoint:
    """A checkpoint folder whose files are hashed at most once per process (1.5 GB take seconds).

    Two keys derive from the same digests: ``fingerprint``, the embedding space of the vectors the weights
    make (weights only: a hub id and a local copy are one space), and ``export_key``, under which converted
    models are cached (weights and configuration: either changed means a new conversion).
    """

    def __init__(self, folder: Path | str, *, export_key: str | None = None) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._digests: dict[str, str] | None = None
        self._export_key = export_key  # known already (an export's child process: its parent hashed)

    def digests(self) -> dict[str, str]:
        """sha256 by relative path: weight files at any depth, top-level configuration files."""
        with self._lock:
            if self._digests is None:
                self._digests = {
                    path.relative_to(self.folder).as_posix(): file_sha256(path)
                    for path in sorted(self.folder.rglob("*"))
                    if _hashed(path.relative_to(self.folder)) and path.is_file()
                }
            return self._digests

    @property
    def fingerprint(self) -> str:
        """``sha256:...`` of the weight files' content, wherever they live."""
        weights = sorted(
            digest for name, digest in self.digests().items() if Path(name).suffix in WEIGHT_SUFFIXES
        )
        if not weights:
            raise ModelLoadError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {self.folder}")
        return "sha256:" + hashlib.sha256("\n".join(weights).encode()).hexdigest()[:32]

    @property
    def export_key(self) -> str:
        """sha256 over the top-level weight and configuration files, by name."""
        if self._export_key is not None:
            return self._export_key
        digest = hashlib.sha256()
        for name, file_digest in sorted(self.digests().items()):
            if "/" not in name:
                digest.update(name.encode() + b"\0" + file_digest.encode() + b"\0")
        return digest.hexdigest()


def _hashed(relative: Path) -> bool:
    if any(part.startswith(".") for part in relative.parts):
        return False
    return relative.suffix in WEIGHT_SUFFIXES or (relative.suffix == ".json" and len(relative.parts) == 1)
