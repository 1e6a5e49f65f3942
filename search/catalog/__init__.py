"""The product catalog: store (rows, images, revisions), the one write path, index synchronisation,
search composition (filters, lexical + vector fusion, images grouped into products), verification."""

from search.catalog.records import (
    Changes,
    ChangesPruned,
    ImageRecord,
    ImageWrite,
    ProductRecord,
    ProductWrite,
    bytes_to_vector,
    vector_to_bytes,
)
from search.catalog.store import Catalog

__all__ = [
    "Catalog",
    "Changes",
    "ChangesPruned",
    "ImageRecord",
    "ImageWrite",
    "ProductRecord",
    "ProductWrite",
    "bytes_to_vector",
    "vector_to_bytes",
]
