"""Exported models on disk, keyed by the checkpoint's content, written atomically, verified on load.

Layout: ``<cache>/<checkpoint export key[:16]>/<runtime>-<precision>/`` holding the model files and a
``manifest.json`` written last, with each file's size and sha256, the checkpoint hash, the accuracy
check's cosines and its verdict. An export is built in a temporary folder beside its final place and
renamed into it, so a crash leaves either nothing or a whole export; on load every file is checked
against the manifest, and anything missing, truncated or altered is rebuilt, never served. The
temporary folder's name carries the builder's process id, so whoever kills a builder removes what it
left (``remove_partial``), and one found with no live builder is swept on the next build.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search.model.weights import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MIN_COSINE = 0.999  # an export must be this close to the float32 reference on every probe
# Raised whenever the accuracy check changes (probes, threshold): older verdicts are not trusted.
CHECK_VERSION = 3  # 3: OpenVINO IR converted from torch tower by tower, reference kept


@dataclass
class Export:
    """A verified export: its folder and manifest."""

    folder: Path
    manifest: dict

    @property
    def accepted(self) -> bool:
        return bool(self.manifest.get("accepted"))

    def path(self, name: str) -> Path:
        return self.folder / name


def verify(folder: Path) -> dict | None:
    """The manifest of a complete, unaltered export, or None (missing, partial, truncated, altered)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        for name, expected in files.items():
            path = folder / name
            if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
                log.warning("export %s: %s does not match its manifest; rebuilding", folder, name)
                return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if (folder / MANIFEST).exists() or folder.exists():
            log.warning("export %s is unreadable (%s); rebuilding", folder, exc)
        return None
    return manifest


class ExportMissing(Exception):
    """No verified export yet, and the caller asked not to build one here."""


def is_built(root: Path, checkpoint: str, variant: str) -> bool:
    """Whether a complete, verified export of ``variant`` is cached (accepted or refused)."""
    return _current(root / checkpoint[:16] / variant, checkpoint) is not None


def _current(final: Path, checkpoint: str) -> dict | None:
    manifest = verify(final)
    if (
        manifest is not None
        and manifest.get("checkpoint") == checkpoint
        and manifest.get("check_version") == CHECK_VERSION
    ):
        return manifest
    return None


def _temp_name(variant: str, pid: int) -> str:
    return f".tmp-{variant}-{pid}-{uuid.uuid4().hex[:8]}"


def remove_partial(root: Path, pid: int) -> list[Path]:
    """Remove the temporary folders a (killed) builder process ``pid`` left anywhere under ``root``."""
    removed = []
    for temp in root.glob(f"*/.tmp-*-{pid}-*"):
        shutil.rmtree(temp, ignore_errors=True)
        removed.append(temp)
    return removed


def _sweep_orphans(folder: Path) -> None:
    """Temporary folders whose builder is gone (killed by SIGKILL, a power cut): never an export."""
    for temp in folder.glob(".tmp-*"):
        parts = temp.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            shutil.rmtree(temp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Builder = Callable[[Path], dict]
"""Writes the model files into a folder and returns the manifest's extra facts (cosines, accepted, ...)."""


def load_or_build(
    root: Path, checkpoint: str, variant: str, build: Builder, *, allow_build: bool = True
) -> Export:
    """The verified export ``variant`` of ``checkpoint`` under ``root``, built first where missing or broken
    (``allow_build`` False: ``ExportMissing`` instead)."""
    final = root / checkpoint[:16] / variant
    manifest = _current(final, checkpoint)
    if manifest is not None:
        return Export(final, manifest)
    if not allow_build:
        raise ExportMissing(f"no {variant} export of checkpoint {checkpoint[:16]} in {root} yet")
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_orphans(final.parent)
    temp = final.parent / _temp_name(variant, os.getpid())
    temp.mkdir()
    try:
        log.info("building %s export of checkpoint %s (once; cached in %s)", variant, checkpoint[:16], final)
        facts = build(temp)
        files = {}
        for path in sorted(temp.iterdir()):
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
            files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = {
            "checkpoint": checkpoint,
            "variant": variant,
            "check_version": CHECK_VERSION,
            "files": files,
            **facts,
        }
        manifest_path = temp / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        with manifest_path.open("rb") as handle:
            os.fsync(handle.fileno())
        if final.exists():
            # A broken export: moved aside first, so the rename below is atomic.
            stale = final.parent / f".stale-{variant}-{uuid.uuid4().hex[:8]}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        temp.rename(final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return Export(final, manifest)
