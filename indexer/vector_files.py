"""Catalogs embedded elsewhere: Parquet files of (id, embedding, metadata) in and out, no model loaded
(a ``.npy`` matrix with an ids file comes in too, and a folder of Parquet shards, ``add --out DIR``).

Import reads the file in batches; each row is validated (id, dimension, finite values, not zero, not a
later repeat of an id) and normalised; bad rows are reported by row number and skipped. Consecutive
rows of one id are one product's images, in order (as ``export`` writes them). Each batch is one
transaction, so an interrupted import keeps its finished batches, and the next run skips rows whose
stored vector and metadata are already the same (resumable like ``add``). What to write is decided by
``plan_write``, as for ``add`` and the API: an imported vector equal to a stored one keeps its image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer import interrupts
from indexer.summary import RowIssue, RunSummary
from search.catalog import Catalog, ImageRecord
from search.catalog.plan import RESERVED_FIELDS, ProductDraft, check_external_id
from search.catalog.records import ProductRecord
from search.catalog.service import ProductService
from search.catalog.writer import Committed
from search.errors import BadInput, VitrineError
from search.model.vectors import normalise_rows

EMBEDDING_COLUMN = "embedding"


def read_batches(path: Path, batch_size: int, ids: Path | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches with at least ``id`` and ``embedding``: from Parquet, or from a ``.npy`` matrix
    and ``ids`` (a text file, one product id per line, in the matrix's row order)."""
    if path.suffix == ".npy":
        matrix, names = _npy_with_ids(path, ids)
        for start in range(0, len(matrix), batch_size):
            chunk = np.asarray(matrix[start : start + batch_size], dtype=np.float32)
            flat = pa.array(chunk.reshape(-1))
            embedding = pa.FixedSizeListArray.from_arrays(flat, chunk.shape[1]).cast(pa.list_(pa.float32()))
            column = pa.array(names[start : start + batch_size], pa.string())
            yield pa.RecordBatch.from_arrays([column, embedding], names=["id", EMBEDDING_COLUMN])
        return
    if path.is_dir():  # the shards of ``--out DIR``, in order
        for shard in parquet_shards(path):
            yield from read_batches(shard, batch_size)
        return
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


def _npy_with_ids(path: Path, ids: Path | None) -> tuple[np.ndarray, list[str]]:
    if ids is None:
        raise BadInput(f"{path} is a .npy matrix: name its ids file too (--ids FILE, one id per line)")
    try:
        matrix = np.load(path, mmap_mode="r")  # read batch by batch, never whole
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable .npy file: {exc}") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise BadInput(f"{path} must hold a 2-d matrix of numbers (one embedding per row)")
    try:
        names = ids.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{ids} is not a readable UTF-8 text file: {exc}") from None
    if len(names) != len(matrix):
        raise BadInput(f"{ids} has {len(names)} ids but {path} has {len(matrix)} rows")
    return matrix, names


def parquet_shards(folder: Path) -> list[Path]:
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        raise BadInput(f"{folder} holds no .parquet files")
    return shards


def row_count(path: Path, ids: Path | None = None) -> int:
    if path.suffix == ".npy":
        return len(_npy_with_ids(path, ids)[0])
    if path.is_dir():
        return sum(row_count(shard) for shard in parquet_shards(path))
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise BadInput(f"{path} is not a readable Parquet file: {exc}") from None


def first_embedding_length(path: Path, ids: Path | None = None) -> int:
    """The dimension of a new catalog: the first non-empty embedding of the file."""
    for batch in read_batches(path, 1000, ids):
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
    """Imported rows become drafts with their vectors, written through the catalog's one writer."""

    def __init__(
        self,
        service: ProductService,
        dim: int,
        *,
        batch_size: int = 1000,
        on_batch: Callable[[RunSummary], None] | None = None,
    ) -> None:
        self.service = service
        self.writer = service.writer
        self.catalog: Catalog = service.catalog
        self.dim = dim
        self.batch_size = batch_size
        self.on_batch = on_batch  # progress after each committed batch
        self._last_id: str | None = None  # the previous good row's id: a repeat adds an image

    def run(self, path: Path, ids: Path | None = None) -> RunSummary:
        summary = RunSummary("import")
        started = time.perf_counter()
        try:
            # A folder of shards (``add --out``) replays the commits in order: a product written again
            # by a later run is in a later shard, and updates the earlier one's rows.
            for part in parquet_shards(path) if path.is_dir() else [path]:
                self._import_file(part, ids, summary)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.seconds = time.perf_counter() - started
            self.service.checkpoint()
        return summary

    def _import_file(self, path: Path, ids: Path | None, summary: RunSummary) -> None:
        seen: set[str] = set()
        carried: _Candidate | None = None
        self._last_id = None
        batches = read_batches(path, self.batch_size, ids)
        batch = next(batches, None)
        while batch is not None:
            interrupts.check()
            following = next(batches, None)
            next_id = (
                following.column("id")[0].as_py() if following is not None and following.num_rows else None
            )
            carried = self._import_batch(batch, summary.total, seen, summary, carried, next_id)
            summary.total += batch.num_rows
            batch = following
            if self.on_batch is not None:
                self.on_batch(summary)

    def _import_batch(
        self,
        batch: pa.RecordBatch,
        first_row: int,
        seen: set[str],
        summary: RunSummary,
        carried: _Candidate | None,
        next_id: object,
    ) -> _Candidate | None:
        """Import one batch; returns its last product when the next batch goes on with its images."""
        vectors, reasons = _embedding_matrix(batch.column(EMBEDDING_COLUMN), self.dim)
        unit, bad_values = normalise_rows(vectors)
        records = batch.drop_columns([EMBEDDING_COLUMN]).to_pylist()
        candidates: list[_Candidate] = [carried] if carried is not None else []
        limits = self.writer.limits
        for offset, record in enumerate(records):
            row = first_row + offset + 1
            external_id = record.get("id")
            previous, self._last_id = self._last_id, None  # only the row right before continues
            try:
                external_id = check_external_id(external_id, limits)
                if external_id in seen and external_id != previous:
                    raise BadInput(f"id {external_id!r} appeared in an earlier row (duplicate id)")
                reason = reasons[offset] or bad_values[offset]
                if reason:
                    raise BadInput(reason)
                image = record.get("image")
                if image is not None and not isinstance(image, str):
                    raise BadInput("image must be a string (a URL) or empty")
                fields = {key: value for key, value in record.items() if value is not None and key != "image"}
                draft = ProductDraft.from_fields(
                    external_id, fields, limits
                )  # the writer's limits, as for PUT
            except VitrineError as exc:
                shown = external_id if isinstance(external_id, str) else None
                summary.failed.append(RowIssue(f"row {row}", shown, exc.message))
                continue
            if external_id == previous and candidates and candidates[-1].draft.external_id == external_id:
                candidates[-1].add(image or "", unit[offset])
            else:
                draft.images = []
                candidates.append(_Candidate(draft))
                candidates[-1].add(image or "", unit[offset])
            seen.add(external_id)
            self._last_id = external_id
        carry = None
        if candidates and self._last_id is not None and next_id == self._last_id:
            carry = candidates.pop()  # its images go on in the next batch: written with them
        self._commit(candidates, summary)
        return carry

    def _commit(self, candidates: list[_Candidate], summary: RunSummary) -> None:
        """One transaction; unchanged rows are skipped and metadata-only changes keep the vectors."""
        if not candidates:
            return
        stored = self.catalog.get_many(candidate.draft.external_id for candidate in candidates)
        prepared = []
        for candidate in candidates:
            write = self.writer.plan_with_vectors(
                candidate.draft, stored.get(candidate.draft.external_id), candidate.vectors
            )
            summary.count(write.plan.kind)
            if write.plan.kind != "unchanged":
                prepared.append(write)
        if prepared:
            self.writer.commit(prepared)


@dataclass
class _Candidate:
    """One product being imported: its draft and the imported vector of each of its images."""

    draft: ProductDraft
    vectors: list[np.ndarray] = field(default_factory=list)

    def add(self, ref: str, vector: np.ndarray) -> None:
        self.draft.images.append(ref)  # type: ignore[union-attr]
        self.vectors.append(vector)


def export_vectors(catalog: Catalog, model: str, path: Path, batch_size: int = 10_000) -> int:
    """Every product of ``model`` to a Parquet file (written atomically), one row per image in order
    (rows of one id follow each other); returns the row count.

        Attribute columns are the union over the catalog; a column whose values mix types is JSON text.
    """
    kinds: dict[str, set[type]] = {}
    for rows in catalog.iter_products(model, batch_size):
        _attribute_kinds(rows, kinds)
    return _write_products(path, kinds, lambda: catalog.iter_products(model, batch_size))


ProductRows = list[tuple[ProductRecord, ImageRecord, bytes]]


def _attribute_kinds(rows: ProductRows, kinds: dict[str, set[type]]) -> None:
    for record, _, _ in rows:
        for key, value in record.attributes.items():
            if key not in RESERVED_FIELDS and key != EMBEDDING_COLUMN:
                kinds.setdefault(key, set()).update({type(value)} if value is not None else set())


def _write_products(
    path: Path, kinds: dict[str, set[type]], batches: Callable[[], Iterable[ProductRows]]
) -> int:
    """(product, image, vector) rows to a Parquet file, written atomically; the row count."""
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
            for rows in batches():
                columns = [
                    [record.external_id for record, _, _ in rows],
                    [np.frombuffer(blob, dtype="<f4") for _, _, blob in rows],
                    [record.title for record, _, _ in rows],
                    [record.category for record, _, _ in rows],
                    [image.image_ref or None for _, image, _ in rows],
                ]
                for key, arrow_type in types.items():
                    values = [record.attributes.get(key) for record, _, _ in rows]
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


class ShardWriter:
    """``--out DIR`` of ``indexer add|reembed``: after each commit, the products it wrote (every image
    with its vector, as ``export`` writes them) as one more Parquet shard in DIR, which ``indexer
    import DIR`` reads on any machine. Shards are numbered on from those already there, so a rerun adds
    to them; a shard appears whole or not at all (written aside, then renamed)."""

    def __init__(self, folder: Path, catalog: Catalog, model: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.catalog = catalog
        self.model = model
        self.next = max((int(p.stem.split("-")[1]) + 1 for p in folder.glob("part-*.parquet")), default=0)

    def __call__(self, committed: Committed) -> None:
        records = [record for record in committed.records if record.images]
        if not records:
            return
        blobs = self.catalog.vector_bytes([record.id for record in records])
        rows = [
            (record, image, blobs[image.id])
            for record in records
            for image in record.images
            if image.embedding_model == self.model and image.id in blobs
        ]
        kinds: dict[str, set[type]] = {}
        _attribute_kinds(rows, kinds)
        _write_products(self.folder / f"part-{self.next:06d}.parquet", kinds, lambda: [rows])
        self.next += 1


_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
