"""Stored copies of local and uploaded product images, named by content hash under one folder.

Names are generated here (sha256 + a known extension) and checked again on the way out, so no name
from a database row or a request can reach a file outside the folder.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from search.files import atomic_write

# MPO: a camera's multi-picture JPEG; its first picture is a plain JPEG, so it is stored and served as one.
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
_OPENED = ["JPEG", "PNG", "GIF", "WEBP", "BMP"]  # the JPEG opener also reads MPO files
MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
}
_NAME = re.compile(r"^[0-9a-f]{64}\.(jpg|png|gif|webp|bmp)$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Names being written by a unit of work that has not committed yet (with how many).
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        """Store image bytes (decoded once already, so known to be an image); returns the stored name."""
        name = self.name_for(data)
        self._write(name, data)
        return name

    @staticmethod
    def name_for(data: bytes) -> str:
        with Image.open(io.BytesIO(data), formats=_OPENED) as image:
            extension = _EXTENSIONS[image.format]
        return f"{sha256_hex(data)}.{extension}"

    def _write(self, name: str, data: bytes) -> bool:
        """Write the file unless it is there; whether this call created it."""
        path = self.root / name
        if path.exists():
            return False
        atomic_write(path, [data])
        return True

    @contextmanager
    def stored(self, data: bytes, still_used: Callable[[str], bool]) -> Iterator[str]:
        """The file written for a unit of work (a database commit) that may still fail.

        If the work fails, a file this unit created is removed again unless another unit in flight
        wrote the same content or a committed row (``still_used``) refers to it: a failed write
        leaves no orphan, and never takes a file that someone else needs.
        """
        name = self.name_for(data)
        with self._lock:  # counted before the file is looked at: a removal below sees every sharer
            self._pending[name] = self._pending.get(name, 0) + 1
        created = False
        try:
            created = self._write(name, data)
            yield name
        except BaseException:
            with self._lock:
                if created and self._pending[name] == 1 and not still_used(name):
                    (self.root / name).unlink(missing_ok=True)
            raise
        finally:
            with self._lock:
                self._pending[name] -= 1
                if not self._pending[name]:
                    del self._pending[name]

    def path(self, name: str) -> Path | None:
        """The file for a stored name, or None when the name is not one of ours or the file is gone."""
        if not _NAME.match(name or ""):
            return None
        root = self.root.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    @staticmethod
    def media_type(name: str) -> str:
        return MEDIA_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
