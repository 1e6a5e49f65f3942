"""Index files on disk: written atomically (temp file, fsync, rename), checked before FAISS reads them.

The state file (``products.faiss``) is a header (JSON) plus binary sections and a SHA-256 trailer. Large
immutable parts of an IVF index (its FAISS file and its float32 rows) live in files named by a
generation token; the state file names them with their checksums, so the rename of the state file is
the one commit point: a crash before it leaves the previous state file and its parts in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.files import atomic_write
from search.index.errors import IndexFileError

MAGIC = b"VITRINE-INDEX-1\n"
_CHUNK = 16 * 1024 * 1024


def write_state(path: Path, meta: dict[str, Any], sections: list[bytes]) -> None:
    meta = {**meta, "sections": [len(section) for section in sections]}
    header = json.dumps(meta, sort_keys=True).encode()
    body = b"".join([MAGIC, struct.pack("<Q", len(header)), header, *sections])
    atomic_write(path, [body, hashlib.sha256(body).digest()])


def read_state(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexFileError(f"no index file at {path}") from None
    except OSError as exc:
        raise IndexFileError(f"cannot read {path}: {exc}") from None
    body, digest = data[:-32], data[-32:]
    if len(data) < len(MAGIC) + 40 or not body.startswith(MAGIC):
        raise IndexFileError(f"{path} is not a vitrine index file")
    if hashlib.sha256(body).digest() != digest:
        raise IndexFileError(f"{path} is damaged (checksum mismatch)")
    (header_len,) = struct.unpack("<Q", body[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    meta = json.loads(body[start : start + header_len])
    sections, offset = [], start + header_len
    for length in meta.get("sections", [len(body) - offset]):
        sections.append(body[offset : offset + length])
        offset += length
    return meta, sections


def write_part(path: Path, write: Callable[[Path], None]) -> str:
    """Let ``write`` fill a temp file beside ``path``, fsync and rename it; returns its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        digest = file_sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_part(path: Path, expected: str) -> None:
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise IndexFileError(f"index part {path.name} is missing") from None
    except OSError as exc:
        raise IndexFileError(f"cannot read {path}: {exc}") from None
    if actual != expected:
        raise IndexFileError(f"index part {path.name} is damaged (checksum mismatch)")
