"""The core's settings, read from the environment (``VITRINE_`` prefix) in this one place: the model, storage,
input limits, the index and search. The HTTP server's own settings (address, tokens, request limits)
extend these in ``api/settings.py``; ``search/wiring.py`` turns settings into components."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "google/siglip2-base-patch16-512"

MiB = 1024 * 1024

VectorBackend = Literal["faiss", "pgvector"]


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's cache folder for vitrine (the XDG convention, as huggingface_hub's own cache)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vitrine"


def split_csv(value: object) -> object:
    # Comma-separated in the environment ("a,b"), a list when built in code.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    # Model
    model: str = Field(
        DEFAULT_MODEL, description="Hugging Face hub id or local folder of a SigLIP checkpoint."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto", description="auto: the fastest runtime whose embeddings pass the 0.999 cosine check."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = "auto"
    batch_size: int = Field(16, ge=1, le=1024, description="Images per indexer transaction.")
    image_batch_size: int | None = Field(
        None, ge=1, le=1024, description="Most images per forward pass; default 1 on CPU, 64 on CUDA."
    )
    text_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Most texts per forward pass; default 32 on CPU, 256 on CUDA."
    )
    batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait for batch-mates.")
    image_queue_max: int = Field(256, ge=1, description="Images waiting for the model before 429.")
    text_queue_max: int = Field(4096, ge=1, description="Texts waiting for the model before 429.")
    torch_threads: int | None = Field(
        None, ge=1, description="Intra-op CPU threads; default: torch's choice."
    )

    # Storage
    data_dir: Path = Path("data")
    cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir(),
        description="Exported models, shared by every data folder (keyed by the checkpoint's content); "
        "default: $XDG_CACHE_HOME/vitrine or ~/.cache/vitrine.",
    )
    export_memory_budget: int | None = Field(
        None,
        ge=0,
        description="Bytes a background export step may use; default: the container's memory limit "
        "(cgroup) or the machine's available memory, less a reserve. Below the export's need the "
        "server serves torch and says how to build the export elsewhere (python -m indexer export-model).",
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under data_dir.")
    database_read_url: str | None = Field(
        None,
        description="A streaming standby of database_url (PostgreSQL): the server's searches, listings "
        "and index catch-up read there, writes go to database_url",
    )
    read_your_writes_wait_ms: float = Field(
        1000,
        ge=0,
        le=60_000,
        description="With database_read_url: how long a read after this process's write waits for the "
        "standby to replay it before it reads the primary instead",
    )
    image_store: Literal["folder", "database"] = Field(
        "folder",
        description="Stored images: files under data_dir/images (folder), or blobs in the catalog's "
        "database written with the row (database: shared by every replica on that database)",
    )

    # Inputs
    max_image_bytes: int = Field(20 * MiB, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_images_per_request: int = Field(32, ge=1)
    max_decode_bytes: int = Field(
        2048 * MiB, ge=MiB, description="Memory for pictures being decoded at once, all requests (429)."
    )
    max_decode_bytes_per_request: int = Field(
        1024 * MiB, ge=MiB, description="Decode memory of one request's images together (413)."
    )
    max_texts_per_request: int = Field(256, ge=1, description="Texts or candidate labels per request.")
    max_text_chars: int = Field(
        4096, ge=256, description="Characters of a text, label or template read; the rest is cut off."
    )
    max_product_examples: int = Field(
        32,
        ge=1,
        description="Product and vector examples of one composed query (its texts and images "
        "count against max_texts_per_request and max_images_per_request).",
    )
    max_json_values: int = Field(
        200_000,
        ge=1000,
        description="Values in one JSON document (a request body, a manifest line), counted before parsing.",
    )

    # Product writes (PUT /products/{id} and manifests)
    max_id_chars: int = Field(256, ge=1, le=256, description="Product id length (the database holds 256).")
    max_title_chars: int = Field(1000, ge=1)
    max_attributes: int = Field(
        100, ge=1, description="Attributes of a product, and filter keys of a search."
    )
    max_attribute_chars: int = Field(2000, ge=16, description="One attribute value, as JSON text.")

    # URL fetching (server-side requests on a caller's behalf)
    url_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    fetch_connect_timeout: float = Field(5.0, gt=0)
    fetch_read_timeout: float = Field(10.0, gt=0)
    fetch_total_timeout: float = Field(30.0, gt=0)
    fetch_max_redirects: int = Field(5, ge=0)
    fetch_concurrency: int = Field(16, ge=1, description="Image fetches at once, all callers together.")
    fetch_concurrency_per_request: int = Field(
        4, ge=1, description="Image fetches at once for one request (its fair share of the slots)."
    )

    # Search index
    search_max_k: int = Field(1000, ge=1)
    search_max_sorted: int = Field(
        10_000, ge=1, le=30_000, description="Most products a sort orders when cut-offs choose the set"
    )
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact below index_exact_limit vectors, ivf above; flat; hnsw; ivf"
    )
    index_exact_limit: int = Field(50_000, ge=1, description="auto: largest catalog searched exactly")
    recall_target: float = Field(
        0.95, gt=0, le=1, description="ivf and pgvector: recall@10 the search breadth is tuned to"
    )
    ivf_nlist: int = Field(0, ge=0, description="ivf lists; 0: about 4 * sqrt(vectors)")
    ivf_nprobe: int = Field(0, ge=0, description="ivf lists probed; 0: tuned to recall_target")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(256, ge=8, description="HNSW search breadth: recall against speed")
    index_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where FAISS searches: auto (the GPU when faiss-gpu sees one and the index fits), "
        "cpu, cuda (the GPU or a start-up error)",
    )
    # Where the vectors are searched (docs/scaling.md section 4)
    vector_backend: VectorBackend = Field(
        "faiss",
        description="faiss: an index in each process, a cache of the catalog's vectors; pgvector: the "
        "vectors in the catalog's PostgreSQL (CREATE EXTENSION vector), searched in SQL, a write "
        "searchable at commit, no index in any process",
    )
    pgvector_index: Literal["ivfflat", "hnsw"] = Field(
        "ivfflat",
        description="pgvector's index on halfvec: ivfflat (measured faster at equal text recall at 100k, "
        "bench/RESULTS.md) or hnsw",
    )
    pgvector_index_min_rows: int = Field(
        10_000,
        ge=0,
        description="ivfflat: vectors before the index is built (its lists are trained on the rows "
        "present); below it every search is exact",
    )
    pgvector_lists: int = Field(0, ge=0, description="ivfflat lists; 0: about 4 * sqrt(vectors)")
    pgvector_probes: int = Field(
        0,
        ge=0,
        description="ivfflat lists probed; 0: measured to reach recall_target on image-like and text-side "
        "queries (stored in the database, shared by replicas); 32 or more until measured",
    )
    pgvector_ef_search: int = Field(
        0, ge=0, le=1000, description="hnsw search breadth; 0: measured as the probes are (400 until then)"
    )
    pgvector_hnsw_m: int = Field(16, ge=2, le=100, description="hnsw graph degree")
    pgvector_hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    pgvector_exact_limit: int = Field(
        20_000,
        ge=0,
        description="A filter allowing at most this many products is searched exactly (every allowed "
        "vector compared); broader ones use the index with iterative scans, widened by 1/share",
    )
    search_mode: Literal["vector", "lexical", "hybrid"] = Field(
        "hybrid", description="Ranking of text queries when a request names no mode"
    )
    hybrid_lexical_weight: float = Field(
        0.5, ge=0, le=1, description="Share of the lexical ranking in hybrid fusion (bench/bench_hybrid.py)"
    )

    # Near-duplicate products (docs/duplicates.md)
    duplicate_threshold: float = Field(
        0.97,
        gt=0,
        le=1,
        description="Cosine at which two product images count as the same picture, unless the catalog "
        "was calibrated (python -m indexer duplicates --calibrate); how 0.97 was chosen: docs/duplicates.md",
    )
    duplicate_live_pass_max_images: int = Field(
        20_000,
        ge=0,
        description="Largest catalog whose duplicate groups are formed on demand (a request, a search "
        "that collapses); larger ones need `python -m indexer duplicates` once",
    )

    log_level: str = "INFO"

    @field_validator("url_allow_hosts", mode="before")
    @classmethod
    def _parse_csv(cls, value: object) -> object:
        return split_csv(value)

    @model_validator(mode="after")
    def _standby_is_postgres(self) -> Settings:
        # Reading a standby means comparing PostgreSQL WAL positions: no other database has them.
        if self.database_read_url:
            urls = {
                "VITRINE_DATABASE_URL": self.resolved_database_url,
                "VITRINE_DATABASE_READ_URL": self.database_read_url,
            }
            for name, url in urls.items():
                if not url.startswith("postgresql"):
                    raise ValueError(
                        f"VITRINE_DATABASE_READ_URL needs PostgreSQL for both databases (a streaming standby "
                        f"of the primary); {name} is {url.split(':', 1)[0]}"
                    )
        return self

    @model_validator(mode="after")
    def _pgvector_is_postgres(self) -> Settings:
        # pgvector is a PostgreSQL extension: the vectors live in the catalog's own database.
        url = self.resolved_database_url
        if self.vector_backend == "pgvector" and not url.startswith("postgresql"):
            raise ValueError(
                "VITRINE_VECTOR_BACKEND=pgvector needs the catalog in PostgreSQL with the vector "
                f"extension (CREATE EXTENSION vector); VITRINE_DATABASE_URL is {url.split(':', 1)[0]}"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vitrine.db').resolve()}"

    @property
    def exports_dir(self) -> Path:
        """Exported and quantised models, keyed by checkpoint content: one cache for every data folder."""
        return self.cache_dir / "exports"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index" / "products.faiss"
