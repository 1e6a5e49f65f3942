"""The pgvector backend's table: ``image_vectors``, one ``halfvec(D)`` per image of the served embedding
space, written by the one writer in the transaction of its image row (``VectorRows``, called from
``transactions.upsert``) and removed with it (``ON DELETE CASCADE``).

The backend creates the table (idempotently, under an advisory lock), not an Alembic migration: its
column type needs D, the model's dimension, which is a runtime fact (the catalog's recorded embedding
space, or the first vectors written), and a catalog on SQLite or served by FAISS never has the table.
A migration would either have to guess D or create an untyped column that no index accepts.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    TextClause,
    bindparam,
    cast,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import UserDefinedType

from search.errors import VectorBackendError

log = logging.getLogger(__name__)

TABLE = "image_vectors"
ANN_INDEX = "ix_image_vectors_embedding"
# pg_advisory_xact_lock key: one process creates the table or its index at a time ("vitr").
_LOCK_KEY = 0x76697472
_BUILD_KEY = _LOCK_KEY + 1  # pg_try_advisory_lock: one process builds the vector index at a time
# halfvec keeps 11 significant bits: a stored component differs from its float32 by at most this much
# (unit vectors), and a cosine read from halfvecs by at most about ``SCORE_SLACK``.
COMPONENT_TOLERANCE = 2e-3
SCORE_SLACK = 5e-3
# maintenance_work_mem of the index build. IVFFlat's k-means needs more on a big catalog (its bounds are
# samples x lists floats, samples = 50 x lists: about 3.4 GB for 4,000 lists at 1M vectors, against
# ~0.4 GB for 1,264 lists at 100k) and pgvector refuses to start below what it needs, saying how much:
# the build is then retried with that much (bench/RESULTS.md, the pgvector backend at 1M).
BUILD_MEMORY = "512MB"
# The breadth served before one is measured (no model loaded, or while another replica measures):
# IVFFlat probes, raised to scan at least MIN_SCANNED vectors (pgvector/index.py), and HNSW ef_search.
# Text recall@10 0.990 at 100k with 1264 lists at 64 probes; HNSW 0.967 at 400 (bench/RESULTS.md).
GUESSED_PROBES = 32
GUESSED_EF_SEARCH = 400


class HalfVec(UserDefinedType):
    """pgvector's ``halfvec(D)``: bound as its text form ``[x,y,...]`` and cast in SQL."""

    cache_ok = True

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def get_col_spec(self, **_: object) -> str:
        return f"halfvec({self.dim})"


# Not in the models' metadata: Alembic's schema comparisons never see it (it is the backend's).
VECTORS = Table(
    TABLE,
    MetaData(),
    Column("image_id", Integer, primary_key=True),
    Column("product_id", Integer),
    Column("embedding"),
)


@dataclass(frozen=True)
class PgVectorSpec:
    """The pgvector index and its search breadth (VITRINE_PGVECTOR_*)."""

    index: str = "ivfflat"  # ivfflat | hnsw
    index_min_rows: int = 10_000  # ivfflat: trained on the rows present, so built once there are these
    lists: int = 0  # ivfflat; 0: about 4 * sqrt(rows)
    probes: int = 0  # ivfflat; 0: measured (pgvector/tuning.py), GUESSED_PROBES or more until then
    ef_search: int = 0  # hnsw; 0: measured, GUESSED_EF_SEARCH until then
    recall_target: float = 0.95  # recall@10 the measured breadth reaches
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    exact_limit: int = 20_000  # a filter allowing at most this many products is searched exactly

    @property
    def configured_breadth(self) -> int:
        """The breadth the settings fix (ivfflat probes, hnsw ef_search), 0 where it is measured."""
        return self.ef_search if self.index == "hnsw" else self.probes

    def lists_for(self, rows: int) -> int:
        return self.lists or max(16, int(4 * math.sqrt(max(rows, 1))))

    def describe(self, kind: str = "pgvector") -> str:
        if self.index == "hnsw":
            return (
                f"pgvector HNSW on halfvec (m {self.hnsw_m}, ef_construction {self.hnsw_ef_construction}, "
                f"ef_search {self.ef_search or 'measured'}); exact under filters allowing <= "
                f"{self.exact_limit} products"
            )
        return (
            f"pgvector IVFFlat on halfvec (lists {self.lists or '4 * sqrt(vectors)'}, probes {self.probes or 'measured'}, "
            f"built from {self.index_min_rows} vectors, exact below); exact under filters allowing "
            f"<= {self.exact_limit} products"
        )


def vector_text(vector: np.ndarray) -> str:
    """pgvector's text form of a vector (float32 digits: halfvec rounds it on input)."""
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32).ravel()) + "]"


def parse_vector(value: str) -> np.ndarray:
    return np.array(value.strip("[]").split(","), dtype=np.float32)


def query_param(vector: np.ndarray, dim: int) -> object:
    """The query vector as a bound ``halfvec(D)``."""
    return cast(bindparam("q", vector_text(vector)), HalfVec(dim))


def distance(query: object) -> object:
    """Cosine distance (1 - cosine) of each stored vector to the query: what the index orders by."""
    return VECTORS.c.embedding.op("<=>", return_type=Float)(query)


# Start-up checks --------------------------------------------------------------------------------------


def check_available(engine: Engine) -> None:
    """The catalog's database can hold the vectors: PostgreSQL with the vector extension installed."""
    if engine.dialect.name != "postgresql":
        raise VectorBackendError(
            "VITRINE_VECTOR_BACKEND=pgvector needs the catalog in PostgreSQL with the vector extension "
            f"(CREATE EXTENSION vector); the catalog's database is {engine.dialect.name}"
        )
    with engine.connect() as connection:
        version = connection.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        if version is None:
            available = connection.scalar(
                text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            )
    if version is None:
        where = (
            f"it is available ({available}): run CREATE EXTENSION vector; in the catalog's database as "
            "its owner or a superuser"
            if available
            else "the server does not have it: install pgvector (e.g. postgresql-16-pgvector, the "
            "pgvector/pgvector image) and run CREATE EXTENSION vector; in the catalog's database"
        )
        raise VectorBackendError(
            f"VITRINE_VECTOR_BACKEND=pgvector, but the vector extension is not installed in the "
            f"catalog's database: {where}"
        )
    major, minor = (int(part) for part in str(version).split(".")[:2])
    if (major, minor) < (0, 8):
        raise VectorBackendError(
            f"VITRINE_VECTOR_BACKEND=pgvector needs pgvector 0.8 or later (iterative index scans); the "
            f"catalog's database has {version}: ALTER EXTENSION vector UPDATE"
        )


def table_dim(connection: Connection) -> int | None:
    """The dimension of the stored vectors' column, or None when the table does not exist."""
    return connection.scalar(
        text(
            "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = to_regclass(:table) "
            "AND a.attname = 'embedding'"
        ),
        {"table": TABLE},
    )


def table_exists(engine: Engine) -> bool:
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        return connection.scalar(text("SELECT to_regclass(:table)"), {"table": TABLE}) is not None


def ensure_table(connection: Connection, dim: int) -> None:
    """Create ``image_vectors`` for ``dim``-d vectors if it is missing (in the caller's transaction)."""
    existing = table_dim(connection)
    if existing is None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        existing = table_dim(connection)  # another process may have created it meanwhile
    if existing is None:
        connection.execute(
            text(
                f"CREATE TABLE {TABLE} ("
                " image_id integer PRIMARY KEY REFERENCES product_images (id) ON DELETE CASCADE,"
                " product_id integer NOT NULL REFERENCES products (id) ON DELETE CASCADE,"
                f" embedding halfvec({int(dim)}) NOT NULL)"
            )
        )
        connection.execute(text(f"CREATE INDEX ix_{TABLE}_product ON {TABLE} (product_id)"))
        log.info("created %s for %d-d vectors", TABLE, dim)
    elif existing != dim and connection.scalar(text(f"SELECT count(*) FROM {TABLE}")) == 0:
        # Every vector left with a move to another model (indexer reembed): the table follows it.
        connection.execute(text(f"DROP TABLE {TABLE}"))
        log.info("%s: recreated for %d-d vectors (it held %d-d ones)", TABLE, dim, existing)
        ensure_table(connection, dim)
    elif existing != dim:
        raise VectorBackendError(
            f"{TABLE} holds {existing}-d vectors but the catalog's embedding space has {dim}: the served "
            f"model changed. DROP TABLE {TABLE}; and start again: it is filled from the stored vectors"
        )


# The index ----------------------------------------------------------------------------------------------


def ann_index(connection: Connection) -> str | None:
    """The definition of the vector index, or None when there is none yet."""
    return connection.scalar(
        text("SELECT indexdef FROM pg_indexes WHERE tablename = :table AND indexname = :index"),
        {"table": TABLE, "index": ANN_INDEX},
    )


def index_due(spec: PgVectorSpec, rows: int) -> bool:
    return spec.index == "hnsw" or rows >= spec.index_min_rows


def create_index(engine: Engine, spec: PgVectorSpec, *, replace: bool = False) -> str | None:
    """Build the vector index if it is due (HNSW always; IVFFlat once there are rows to train its lists
    on) and missing, or with ``replace`` build it again (IVFFlat lists fitted to today's rows). Returns
    its definition. Built while writes go on; searches are exact until it is there."""
    with engine.connect() as connection:
        rows = int(connection.scalar(text(f"SELECT count(*) FROM {TABLE}")) or 0)
        current = ann_index(connection)
    if (current is not None and not replace) or not index_due(spec, rows):
        return current
    if spec.index == "hnsw":
        using = (
            f"hnsw (embedding halfvec_cosine_ops) WITH (m = {spec.hnsw_m}, "
            f"ef_construction = {spec.hnsw_ef_construction})"
        )
    else:
        using = f"ivfflat (embedding halfvec_cosine_ops) WITH (lists = {spec.lists_for(rows)})"
    building = ANN_INDEX + "_new"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # One builder at a time (replicas starting together): the others go on, exact until it is there.
        if not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": _BUILD_KEY}):
            log.info("another process is building the vector index; searches are exact until it is done")
            return current
        try:
            connection.execute(text(f"DROP INDEX IF EXISTS {building}"))
            connection.execute(text(f"SET maintenance_work_mem = '{BUILD_MEMORY}'"))
            try:
                connection.execute(text(f"CREATE INDEX CONCURRENTLY {building} ON {TABLE} USING {using}"))
            except DBAPIError as exc:
                needed = re.search(r"memory required is (\d+) MB", str(exc.orig))
                if needed is None:
                    raise
                log.warning(
                    "the vector index build needs %s MB of maintenance_work_mem (over %s); building with it",
                    needed.group(1),
                    BUILD_MEMORY,
                )
                connection.execute(text(f"DROP INDEX IF EXISTS {building}"))  # left invalid by the failure
                connection.execute(text(f"SET maintenance_work_mem = '{int(needed.group(1)) + 16}MB'"))
                connection.execute(text(f"CREATE INDEX CONCURRENTLY {building} ON {TABLE} USING {using}"))
            with engine.begin() as swap:  # in one transaction: searches see one index or the other
                swap.execute(text(f"DROP INDEX IF EXISTS {ANN_INDEX}"))
                swap.execute(text(f"ALTER INDEX {building} RENAME TO {ANN_INDEX}"))
            connection.execute(text(f"ANALYZE {TABLE}"))
            definition = ann_index(connection)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _BUILD_KEY})
    log.info("built the vector index over %d vectors: %s", rows, definition)
    return definition


# Writes -------------------------------------------------------------------------------------------------


@dataclass
class VectorRow:
    """One image's vector as a write leaves it (``model``: the embedding space that made it)."""

    image_id: int
    product_id: int
    vector: np.ndarray
    model: str


class VectorRows:
    """Keeps ``image_vectors`` in step with the image rows of each write, in the write's transaction:
    a vector of the served space is inserted or replaced; one of another space (an image re-embedded
    for a model switch) leaves the table. Removed images take their rows with them (the foreign key)."""

    def __init__(self, model: str, dim: int | None) -> None:
        self.model = model
        self.dim = dim
        self._ready = False  # the table is known to exist for self.dim

    def write(self, connection: Connection, rows: Sequence[VectorRow]) -> None:
        if not rows:
            return
        served = [row for row in rows if row.model == self.model]
        if served and not self._ready:
            # The first vectors of a new catalog fix the dimension; the table is created in this write.
            self.dim = self.dim or int(served[0].vector.shape[-1])
            ensure_table(connection, self.dim)
            self._ready = True
        for row in served:
            if row.vector.shape[-1] != self.dim:
                raise VectorBackendError(
                    f"a {row.vector.shape[-1]}-d vector for the {self.dim}-d {TABLE} of {self.model}"
                )
        if served:
            connection.execute(_upsert(self.dim), [_values(row) for row in served])
        elsewhere = [row.image_id for row in rows if row.model != self.model]
        if elsewhere and (self._ready or table_dim(connection) is not None):
            connection.execute(text(f"DELETE FROM {TABLE} WHERE image_id = ANY(:ids)"), {"ids": elsewhere})


def _upsert(dim: int) -> TextClause:
    return text(
        f"INSERT INTO {TABLE} (image_id, product_id, embedding) "
        f"VALUES (:image_id, :product_id, CAST(:embedding AS halfvec({int(dim)}))) "
        "ON CONFLICT (image_id) DO UPDATE SET embedding = EXCLUDED.embedding, product_id = EXCLUDED.product_id"
    )


def _values(row: VectorRow) -> dict[str, object]:
    return {"image_id": row.image_id, "product_id": row.product_id, "embedding": vector_text(row.vector)}


def fill_missing(engine: Engine, model: str, dim: int, batch: int = 5_000) -> int:
    """Vector rows for the images of ``model`` that have none: a catalog that was served by FAISS, or
    written by a process without this backend. Each batch locks its image rows against removal (FOR KEY
    SHARE), arrives by a binary COPY into a temporary table (no text formatting of floats: a tenth of
    the time) and leaves rows a concurrent write made alone (ON CONFLICT DO NOTHING). Returns how many."""
    select_missing = text(
        f"SELECT i.id, i.product_id, i.embedding FROM product_images i "
        f"LEFT JOIN {TABLE} v ON v.image_id = i.id "
        "WHERE v.image_id IS NULL AND i.embedding_model = :model AND i.embedding_dim = :dim "
        "ORDER BY i.id LIMIT :n FOR KEY SHARE OF i"
    )
    total = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(select_missing, {"model": model, "dim": dim, "n": batch}).all()
            if not rows:
                return total
            connection.execute(
                text(
                    "CREATE TEMP TABLE vitrine_fill (image_id integer, product_id integer, "
                    f"embedding halfvec({int(dim)})) ON COMMIT DROP"
                )
            )
            cursor = connection.connection.driver_connection.cursor()  # psycopg, in this transaction
            with cursor.copy("COPY vitrine_fill FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.write(_binary_rows(rows, dim))
            connection.execute(
                text(
                    f"INSERT INTO {TABLE} (image_id, product_id, embedding) "
                    "SELECT image_id, product_id, embedding FROM vitrine_fill ON CONFLICT DO NOTHING"
                )
            )
        total += len(rows)
        log.info("%s: %d stored vectors copied so far", TABLE, total)


def _binary_rows(rows: Sequence[tuple[int, int, bytes]], dim: int) -> bytes:
    """PostgreSQL's binary COPY of (integer, integer, halfvec) rows. A halfvec is sent as pgvector's
    halfvec_send writes it: int16 dimension, int16 unused, then each float16 big-endian."""
    count = len(rows)
    ids = np.array([(row[0], row[1]) for row in rows], dtype=">i4")
    vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4").reshape(count, dim)
    record = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i4"),
            ("product_len", ">i4"),
            ("product", ">i4"),
            ("vector_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vector", ">f2", (dim,)),
        ]
    )
    out = np.zeros(count, dtype=record)
    out["fields"], out["id_len"], out["product_len"] = 3, 4, 4
    out["id"], out["product"] = ids[:, 0], ids[:, 1]
    out["vector_len"], out["dim"] = 4 + 2 * dim, dim
    out["vector"] = vectors.astype(np.float16)
    header = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    return header + out.tobytes() + (-1).to_bytes(2, "big", signed=True)
