"""Stored copies of local and uploaded product images, named by content hash (sha256 + a known extension).

``ImageStorage`` is what the writer, the image routes, ``verify`` and ``reembed`` use. Two stores
implement it (VITRINE_IMAGE_STORE): ``ImageStore``, files under one folder of this machine (the default),
and ``search.catalog.blobs.DatabaseImageStore``, blobs in the catalog's database written in the row's
own transaction (``in_transaction``), which every replica on that database shares.

An S3-compatible bucket would be a third ``ImageStorage`` with ``in_transaction = False``, used like the
folder: ``stored`` PUTs the object (key = the name) before the database commit and DELETEs it again
when the commit fails and no committed row names it; ``locate`` answers its bytes (or the route
redirects to a presigned URL); ``missing`` lists keys with HEAD or ListObjectsV2. Content-addressed
keys make the PUT idempotent, so a retried write or two replicas writing one picture never conflict.

Names are generated here and checked again on the way out, so no name from a database row or a request
can reach a file outside the folder.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar, Protocol

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


def is_stored_name(name: str | None) -> bool:
    """Whether ``name`` is one this module generates (so it can name no file outside the folder)."""
    return bool(_NAME.match(name or ""))


def image_name(data: bytes) -> str:
    """The stored name of image bytes (decoded once already, so known to be an image)."""
    with Image.open(io.BytesIO(data), formats=_OPENED) as image:
        extension = _EXTENSIONS[image.format]
    return f"{sha256_hex(data)}.{extension}"


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")


class ImageStorage(Protocol):
    """Where stored images live (see the module's text)."""

    kind: ClassVar[str]
    # True: the bytes go into the catalog's write transaction (``CatalogWriter.commit`` hands them over);
    # False: ``stored`` writes them beside the transaction and takes them back if it fails.
    in_transaction: ClassVar[bool]

    def name_for(self, data: bytes) -> str: ...

    def stored(self, data: bytes, still_used: Callable[[str], bool]) -> AbstractContextManager[str]: ...

    def locate(self, name: str) -> Path | bytes | None:
        """A stored image's file, or its bytes where it has no file; None when it is missing."""
        ...

    def read(self, name: str) -> bytes | None: ...

    def missing(self, names: list[str]) -> list[str]:
        """Those of ``names`` that are not stored (``verify``)."""
        ...

    def media_type(self, name: str) -> str: ...


class ImageStore:
    """Stored images as files under one folder of this machine (VITRINE_IMAGE_STORE=folder)."""

    kind: ClassVar[str] = "folder"
    in_transaction: ClassVar[bool] = False

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
        return image_name(data)

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
        if not is_stored_name(name):
            return None
        root = self.root.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    def locate(self, name: str) -> Path | None:
        return self.path(name)

    def read(self, name: str) -> bytes | None:
        path = self.path(name)
        return path.read_bytes() if path is not None else None

    def missing(self, names: list[str]) -> list[str]:
        return [name for name in names if self.path(name) is None]

    @staticmethod
    def media_type(name: str) -> str:
        return media_type(name)
