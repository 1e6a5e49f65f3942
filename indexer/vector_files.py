"""Catalogs embedded elsewhere: Parquet files of (id, embedding, metadata) in and out, no model loaded.

Import reads the file in batches; each row is validated (id, dimension, finite values, not zero, not a
second row of the same id) and normalised; bad rows are reported by row number and skipped. Each batch
is one transaction, so an interrupted import keeps its finished batches, and the next run skips rows
whose stored vector and metadata are already the same (resumable like ``add``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from search.catalog import Catalog, ProductWrite, vector_to_bytes
from search.errors import BadInput, VitrineError
from search.products import RESERVED_FIELDS, ProductService, parse_product_fields, validate_external_id
from search.vectors import normalise_rows

EMBEDDING_COLUMN = "embedding"


@dataclass
class RowIssue:
    row: int  # 1-based position in the file
    external_id: str | None
    message: str

    def __str__(self) -> str:
        return (
            f"row {self.row}" + (f" ({self.external_id})" if self.external_id else "") + f": {self.message}"
        )


@dataclass
class ImportSummary:
    total: int = 0
    added: int = 0
    updated: int = 0
    metadata_updated: int = 0
    skipped: int = 0
    failed: list[RowIssue] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.total} rows: {self.added} added, {self.updated} new vectors, "
            f"{self.metadata_updated} metadata updated, {self.skipped} unchanged, {len(self.failed)} failed "
            f"({self.seconds:.1f} s)"
        ]
        if self.interrupted:
            out.append("INTERRUPTED: finished batches are saved; run the same command again to continue")
        out += [f"  failed {issue}" for issue in self.failed[:50]]
        if len(self.failed) > 50:
            out.append(f"  ... and {len(self.failed) - 50} more")
        return out


def read_batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise BadInput(f"{path} is not a readable Parquet file: {exc}") from None
    names = parquet.schema_arrow.names
    missing = [name for name in ("id", EMBEDDING_COLUMN) if name not in names]
    if missing:
        raise BadInput(f"{path} lacks the column(s) {', '.join(missing)} (needs id and embedding)")
    yield from parquet.iter_batches(batch_size=batch_size)


def read_query_vectors(path: Path) -> np.ndarray:
    """Text-side vectors for tuning: a .npy matrix or a Parquet file's embedding column, normalised."""
    if path.suffix == ".npy":
        try:
            matrix = np.load(path)
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path} is not a readable .npy file: {exc}") from None
    else:
        rows = [
            value
            for batch in read_batches(path, 10_000)
            for value in batch.column(EMBEDDING_COLUMN).to_pylist()
        ]
        matrix = np.asarray([row for row in rows if row], dtype=np.float32)
    if matrix.ndim != 2 or not len(matrix):
        raise BadInput(f"{path} holds no vectors")
    unit, reasons = normalise_rows(matrix)
    return unit[[reason is None for reason in reasons]]


def row_count(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise BadInput(f"{path} is not a readable Parquet file: {exc}") from None


def first_embedding_length(path: Path) -> int:
    """The dimension of a new catalog: the first non-empty embedding of the file."""
    for batch in read_batches(path, 1000):
        for value in batch.column(EMBEDDING_COLUMN).to_pylist():
            if value:
                return len(value)
    raise BadInput(f"{path} holds no embedding")


def _embedding_matrix(column: pa.Array, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """The embedding column as an (n, dim) float32 matrix, and per row why it cannot be used."""
    values = column.to_pylist()
    matrix = np.zeros((len(values), dim), np.float32)
    reasons: list[str | None] = [None] * len(values)
    for row, value in enumerate(values):
        if value is None:
            reasons[row] = "embedding is missing"
        elif len(value) != dim:
            reasons[row] = f"embedding has {len(value)} values; the model's dimension is {dim}"
        else:
            try:
                matrix[row] = np.asarray([np.nan if v is None else v for v in value], dtype=np.float32)
            except (TypeError, ValueError):
                reasons[row] = "embedding must be a list of numbers"
    return matrix, reasons


class VectorImporter:
    def __init__(
        self,
        service: ProductService,
        dim: int,
        *,
        batch_size: int = 1000,
        on_batch: Callable[[ImportSummary], None] | None = None,
    ) -> None:
        self.service = service
        self.catalog: Catalog = service.catalog
        self.model = service.model
        self.dim = dim
        self.batch_size = batch_size
        self.on_batch = on_batch  # progress after each committed batch

    def run(self, path: Path) -> ImportSummary:
        summary = ImportSummary()
        started = time.perf_counter()
        seen: set[str] = set()
        try:
            for batch in read_batches(path, self.batch_size):
                self._import_batch(batch, summary.total, seen, summary)
                summary.total += batch.num_rows
                if self.on_batch is not None:
                    self.on_batch(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.seconds = time.perf_counter() - started
            self.service.checkpoint()
        return summary

    def _import_batch(
        self, batch: pa.RecordBatch, first_row: int, seen: set[str], summary: ImportSummary
    ) -> None:
        vectors, reasons = _embedding_matrix(batch.column(EMBEDDING_COLUMN), self.dim)
        unit, bad_values = normalise_rows(vectors)
        records = batch.drop_columns([EMBEDDING_COLUMN]).to_pylist()
        candidates: list[tuple[int, ProductWrite]] = []
        for offset, record in enumerate(records):
            row = first_row + offset + 1
            external_id = record.get("id")
            try:
                external_id = validate_external_id(external_id)
                if external_id in seen:
                    raise BadInput(f"id {external_id!r} appeared in an earlier row (duplicate id)")
                reason = reasons[offset] or bad_values[offset]
                if reason:
                    raise BadInput(reason)
                write = self._write(external_id, record, unit[offset])
            except VitrineError as exc:
                shown = external_id if isinstance(external_id, str) else None
                summary.failed.append(RowIssue(row, shown, exc.message))
                continue
            seen.add(external_id)
            candidates.append((row, write))
        self._commit([write for _, write in candidates], summary)

    def _write(self, external_id: str, record: dict[str, Any], vector: np.ndarray) -> ProductWrite:
        fields = parse_product_fields({key: value for key, value in record.items() if value is not None})
        image = record.get("image")
        if image is not None and not isinstance(image, str):
            raise BadInput("image must be a string (a URL) or empty")
        return ProductWrite(
            external_id=external_id,
            image_ref=image or "",
            embedding=vector,
            embedding_model=self.model,
            **fields,
        )

    def _commit(self, writes: list[ProductWrite], summary: ImportSummary) -> None:
        """One transaction; unchanged rows are skipped and metadata-only changes keep the vector."""
        if not writes:
            return
        ids = [write.external_id for write in writes]
        known = self.catalog.fingerprints(ids)
        stored = self.catalog.embeddings_of(ids, self.model)
        to_write = []
        for write in writes:
            existing = known.get(write.external_id)
            same_vector = stored.get(write.external_id) == vector_to_bytes(write.embedding)
            if existing is None:
                summary.added += 1
            elif not same_vector:
                summary.updated += 1
            elif existing.same_metadata(write):
                summary.skipped += 1
                continue
            else:
                write.embedding = None  # metadata only: the index keeps the vector it has
                summary.metadata_updated += 1
            if existing is not None and existing.image_ref == write.image_ref:
                write.image_file, write.image_sha256 = existing.image_file, existing.image_sha256
            to_write.append(write)
        if to_write:
            self.catalog.upsert(to_write)


def export_vectors(catalog: Catalog, model: str, path: Path, batch_size: int = 10_000) -> int:
    """Every product of ``model`` to a Parquet file (written atomically); returns the row count.

    Attribute columns are the union over the catalog; a column whose values mix types is JSON text.
    """
    kinds: dict[str, set[type]] = {}
    for rows in catalog.iter_products(model, batch_size):
        for record, _ in rows:
            for key, value in record.attributes.items():
                if key not in RESERVED_FIELDS and key != EMBEDDING_COLUMN:
                    kinds.setdefault(key, set()).update({type(value)} if value is not None else set())
    types = {
        key: _ARROW_TYPES.get(next(iter(found))) if len(found) == 1 else None for key, found in kinds.items()
    }
    schema = pa.schema(
        [
            ("id", pa.string()),
            (EMBEDDING_COLUMN, pa.list_(pa.float32())),
            ("title", pa.string()),
            ("category", pa.string()),
            ("image", pa.string()),
            *((key, arrow_type or pa.string()) for key, arrow_type in types.items()),
        ]
    )
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for rows in catalog.iter_products(model, batch_size):
                columns = [
                    [record.external_id for record, _ in rows],
                    [np.frombuffer(blob, dtype="<f4") for _, blob in rows],
                    [record.title for record, _ in rows],
                    [record.category for record, _ in rows],
                    [record.image_ref or None for record, _ in rows],
                ]
                for key, arrow_type in types.items():
                    values = [record.attributes.get(key) for record, _ in rows]
                    if arrow_type is None:  # mixed or nested values: JSON text
                        values = [None if value is None else json.dumps(value) for value in values]
                    columns.append(values)
                writer.write_table(
                    pa.table(
                        [pa.array(values, field.type) for values, field in zip(columns, schema, strict=True)],
                        schema=schema,
                    )
                )
                count += len(rows)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
