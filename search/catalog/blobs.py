"""``DatabaseImageStore``: stored images as blobs in the catalog's database (VITRINE_IMAGE_STORE=database).

The bytes travel with the write: ``CatalogWriter.commit`` hands them to the transaction that writes the
rows naming them (``transactions.upsert``), and a write that drops the last image naming a blob drops the
blob in the same transaction. So every process on the database serves the same images, a failed write
leaves no blob, and a standby replicates them with everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

from search.catalog.store import Catalog
from search.images.store import image_name, is_stored_name, media_type


class DatabaseImageStore:
    kind: ClassVar[str] = "database"
    in_transaction: ClassVar[bool] = True

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @staticmethod
    def name_for(data: bytes) -> str:
        return image_name(data)

    @contextmanager
    def stored(self, data: bytes, still_used: Callable[[str], bool]) -> Iterator[str]:
        # Nothing to write beside the transaction: the blob is part of it.
        yield self.name_for(data)

    def locate(self, name: str) -> bytes | None:
        return self.read(name)

    def read(self, name: str) -> bytes | None:
        if not is_stored_name(name):
            return None
        return self.catalog.image_blob(name)

    def missing(self, names: list[str]) -> list[str]:
        found = self.catalog.blob_names(names)
        return [name for name in names if name not in found]

    @staticmethod
    def media_type(name: str) -> str:
        return media_type(name)
