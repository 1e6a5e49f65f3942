"""Stored copies of local and uploaded product images, named by content hash under one folder.

Names are generated here (sha256 + a known extension) and checked again on the way out, so no name
from a database row or a request can reach a file outside the folder.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from search.files import atomic_write

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
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

    def put(self, data: bytes) -> str:
        """Store image bytes (decoded once already, so known to be an image); returns the stored name."""
        with Image.open(io.BytesIO(data), formats=list(_EXTENSIONS)) as image:
            extension = _EXTENSIONS[image.format]
        name = f"{sha256_hex(data)}.{extension}"
        path = self.root / name
        if path.exists():
            return name
        atomic_write(path, [data])
        return name

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
