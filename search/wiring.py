"""Wiring: settings in, components out. The one place where settings become objects; the API, the
indexer's commands and handler.py all build what they need here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from search.catalog.db import migrate
from search.catalog.duplicate_groups import DuplicateService
from search.catalog.pgvector.retrieval import PgVectorRetrieval
from search.catalog.pgvector.sync import PgVectorSync
from search.catalog.pgvector.table import PgVectorSpec, VectorRows, table_dim, table_exists
from search.catalog.plan import ProductLimits
from search.catalog.query import Mode, SearchLimits
from search.catalog.retrieval import IndexRetrieval, VectorRetrieval, VectorSync
from search.catalog.search import CatalogSearch
from search.catalog.service import ProductService
from search.catalog.spaces import settle_space
from search.catalog.store import Catalog
from search.catalog.sync import IndexSync
from search.catalog.writer import CatalogWriter
from search.images.budget import DecodeBudget
from search.images.fetch import AddressPolicy, FetchLimits, UrlFetcher
from search.images.loader import ImageLimits, ImageLoader
from search.images.store import ImageStorage, ImageStore
from search.index.spec import IndexSpec
from search.model.space import EmbeddingSpace, SpaceMismatch, space_of
from search.settings import Settings, VectorBackend
from search.strict_json import JsonLimits

if TYPE_CHECKING:  # the maintenance commands never load torch: the model's modules load when used
    from search.endpoint import InferenceService, RequestLimits
    from search.model.background_export import BackgroundExport
    from search.model.encoder import BatchSettings, Encoder

log = logging.getLogger(__name__)


# Values from settings -----------------------------------------------------------------------------------


def index_spec(settings: Settings) -> IndexSpec:
    return IndexSpec(
        kind=settings.index_type,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        hnsw_ef_search=settings.hnsw_ef_search,
        exact_limit=settings.index_exact_limit,
        recall_target=settings.recall_target,
        ivf_nlist=settings.ivf_nlist,
        ivf_nprobe=settings.ivf_nprobe,
        device=settings.index_device,
    )


def pgvector_spec(settings: Settings) -> PgVectorSpec:
    return PgVectorSpec(
        index=settings.pgvector_index,
        index_min_rows=settings.pgvector_index_min_rows,
        lists=settings.pgvector_lists,
        probes=settings.pgvector_probes,
        ef_search=settings.pgvector_ef_search,
        hnsw_m=settings.pgvector_hnsw_m,
        hnsw_ef_construction=settings.pgvector_hnsw_ef_construction,
        exact_limit=settings.pgvector_exact_limit,
        recall_target=settings.recall_target,
    )


def product_limits(settings: Settings) -> ProductLimits:
    return ProductLimits(
        max_id_chars=settings.max_id_chars,
        max_title_chars=settings.max_title_chars,
        max_attributes=settings.max_attributes,
        max_attribute_chars=settings.max_attribute_chars,
    )


def search_limits(settings: Settings) -> SearchLimits:
    return SearchLimits(
        max_k=settings.search_max_k,
        max_texts=settings.max_texts_per_request,
        max_images=settings.max_images_per_request,
        max_product_examples=settings.max_product_examples,
        max_filter_keys=settings.max_attributes,
        max_sorted=settings.search_max_sorted,
    )


def json_limits(settings: Settings) -> JsonLimits:
    return JsonLimits(max_values=settings.max_json_values)


def request_limits(settings: Settings) -> RequestLimits:
    from search.endpoint import RequestLimits

    return RequestLimits(
        max_images=settings.max_images_per_request,
        max_texts=settings.max_texts_per_request,
        max_text_chars=settings.max_text_chars,
    )


def batch_settings(settings: Settings) -> BatchSettings:
    from search.model.encoder import BatchSettings

    return BatchSettings(
        image_batch=settings.image_batch_size,
        text_batch=settings.text_batch_size,
        max_wait_ms=settings.batch_wait_ms,
        image_queue_max=settings.image_queue_max,
        text_queue_max=settings.text_queue_max,
    )


# Components ---------------------------------------------------------------------------------------------


def quiet_transformers() -> None:
    """Advisory warnings and loading bars of transformers are noise in a service log; weight downloads
    (minutes for 1.5 GB) keep their progress bars."""
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # also turns off the hub's bars...
    huggingface_hub.utils.enable_progress_bars()  # ...which downloads need


def load_encoder(settings: Settings, *, export_in_background: bool = False) -> Encoder:
    """The encoder of ``settings``. ``export_in_background``: serve torch now rather than build a missing
    export first (``background_export`` then builds it and switches)."""
    import torch

    from search.model.encoder import Encoder

    if settings.log_level.upper() != "DEBUG":
        quiet_transformers()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    encoder = Encoder.load(
        settings.model,
        runtime=settings.runtime,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.exports_dir,
        threads=settings.torch_threads,
        batching=batch_settings(settings),
        allow_build=not export_in_background,
    )
    encoder.max_text_chars = settings.max_text_chars
    info = encoder.info
    log.info(
        "model %s loaded: %s, %d-d embeddings, %dpx, runtime %s, device %s, dtype %s",
        info.model_id,
        info.model_type,
        info.embedding_dim,
        info.image_size,
        info.runtime,
        info.device,
        info.dtype,
    )
    if info.random_weights:
        log.warning(
            "!!! %s has RANDOM WEIGHTS: embeddings and scores are meaningless (test/benchmark model) !!!",
            info.model_id,
        )
    return encoder


def background_export(settings: Settings, encoder: Encoder) -> BackgroundExport | None:
    """The export to build while ``encoder`` serves (not started), or None where nothing faster is missing."""
    from search.model.backends import pending_exports
    from search.model.background_export import BackgroundExport

    checkpoint = encoder.checkpoint
    if checkpoint is None:
        return None
    pending = pending_exports(
        encoder.backend.choice,
        settings.runtime,
        settings.dtype,
        encoder.info.device,
        settings.exports_dir,
        checkpoint,
    )
    if not pending:
        return None
    return BackgroundExport(
        encoder,
        pending,
        model_folder=checkpoint.folder,
        cache_dir=settings.exports_dir,
        export_key=checkpoint.export_key,
        memory_budget=settings.export_memory_budget,
        threads=settings.torch_threads,
        log_level="DEBUG" if settings.log_level.upper() == "DEBUG" else "WARNING",
    )


def build_image_loader(settings: Settings, model_side: int | None = None) -> ImageLoader:
    """The one image loader of a process; ``model_side`` (the model's input size) enables reduced decoding."""
    fetcher = UrlFetcher(
        policy=AddressPolicy.from_entries(settings.url_allow_hosts),
        limits=FetchLimits(
            max_bytes=settings.max_image_bytes,
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            total_timeout=settings.fetch_total_timeout,
            max_redirects=settings.fetch_max_redirects,
        ),
    )
    limits = ImageLimits(
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels, model_side=model_side
    )
    return ImageLoader(
        fetcher,
        limits,
        concurrency=settings.fetch_concurrency,
        per_request=settings.fetch_concurrency_per_request,
        decode_budget=DecodeBudget(settings.max_decode_bytes),
        request_decode_bytes=settings.max_decode_bytes_per_request,
    )


def build_products(
    catalog: Catalog,
    *,
    model: str,
    index_path: Path,
    image_store: ImageStorage,
    encoder: Encoder | None = None,
    images: ImageLoader | None = None,
    dim: int | None = None,
    index_spec: IndexSpec | None = None,
    product_limits: ProductLimits | None = None,
    search_limits: SearchLimits | None = None,
    default_mode: Mode = "hybrid",
    lexical_weight: float = 0.5,
    load_index: bool = True,
    rebuild_in_background: bool = False,
    duplicate_threshold: float = 0.97,
    duplicate_live_pass_max_images: int = 20_000,
    vector_backend: VectorBackend = "faiss",
    pgvector: PgVectorSpec | None = None,
) -> ProductService:
    """The product service over ``catalog``: its vectors' search (``vector_backend``: a FAISS index kept
    at the catalog's revision, or pgvector in the catalog's PostgreSQL), search and writer.

    ``model`` is the label of the vectors to serve (the embedding space's key). Without an encoder it
    serves maintenance and vector queries only."""
    dim = dim or (encoder.info.embedding_dim if encoder else None)
    sync: VectorSync
    retrieval: VectorRetrieval
    if vector_backend == "pgvector":
        sync = PgVectorSync(
            catalog,
            model=model,
            dim=dim,
            spec=pgvector or PgVectorSpec(),
            prepare=load_index,
            embed_texts=encoder.embed_texts if encoder else None,
            query_log_path=index_path.with_name(index_path.name + ".queries.npy"),
            tune_in_background=rebuild_in_background,
        )
        retrieval = PgVectorRetrieval(catalog, sync.index)
    else:
        sync = IndexSync(
            catalog,
            model=model,
            index_path=index_path,
            dim=dim,
            spec=index_spec or IndexSpec(),
            load=load_index,
            rebuild_in_background=rebuild_in_background,
            embed_texts=encoder.embed_texts if encoder else None,
        )
        retrieval = IndexRetrieval(catalog, sync)
        keep_vector_table(catalog, model)
    limits = search_limits or SearchLimits()
    duplicates = DuplicateService(
        catalog,
        sync,
        default_threshold=duplicate_threshold,
        live_pass_max_images=duplicate_live_pass_max_images,
    )
    finder = CatalogSearch(
        catalog,
        retrieval,
        limits=limits,
        query_log=sync.query_log,
        encoder=encoder,
        images=images,
        default_mode=default_mode,
        lexical_weight=lexical_weight,
        duplicates=duplicates,
    )
    writer = CatalogWriter(catalog, image_store, model, product_limits or ProductLimits(), images, encoder)
    return ProductService(
        catalog,
        sync=sync,
        finder=finder,
        writer=writer,
        image_store=image_store,
        limits=limits,
        duplicates=duplicates,
    )


def open_products(
    settings: Settings,
    encoder: Encoder | None = None,
    images: ImageLoader | None = None,
    *,
    load_index: bool = True,
    rebuild_in_background: bool = False,
    model: str | None = None,
    read_standby: bool = False,
) -> ProductService:
    """The catalog of ``settings`` and its index (migrations must have run). Without an encoder:
    maintenance only. ``model``: the embedding space's key to serve; default VITRINE_MODEL.
    ``read_standby``: reads go to VITRINE_DATABASE_READ_URL when set (the server; batch jobs plan their
    writes on the primary)."""
    catalog = Catalog.open(
        settings.resolved_database_url,
        settings.database_read_url if read_standby else None,
        read_your_writes_wait_s=settings.read_your_writes_wait_ms / 1000,
    )
    return build_products(
        catalog,
        model=model or settings.model,
        index_path=settings.index_path,
        image_store=image_store_for(settings, catalog),
        encoder=encoder,
        images=images,
        index_spec=index_spec(settings),
        product_limits=product_limits(settings),
        search_limits=search_limits(settings),
        default_mode=settings.search_mode,
        lexical_weight=settings.hybrid_lexical_weight,
        load_index=load_index,
        rebuild_in_background=rebuild_in_background,
        duplicate_threshold=settings.duplicate_threshold,
        duplicate_live_pass_max_images=settings.duplicate_live_pass_max_images,
        vector_backend=settings.vector_backend,
        pgvector=pgvector_spec(settings),
    )


def keep_vector_table(catalog: Catalog, model: str) -> None:
    """A FAISS-served catalog whose PostgreSQL has the pgvector table (it was, or will be, served by
    pgvector) keeps the table whole: this process's writes go to it too, in their transactions."""
    if table_exists(catalog.engine):
        recorded = catalog.recorded_space()
        with catalog.engine.connect() as connection:
            catalog.vector_rows = VectorRows(recorded[0] if recorded else model, table_dim(connection))


def image_store_for(settings: Settings, catalog: Catalog) -> ImageStorage:
    """The image store VITRINE_IMAGE_STORE names: the data folder's images/, or the catalog's database."""
    if settings.image_store == "database":
        from search.catalog.blobs import DatabaseImageStore

        return DatabaseImageStore(catalog)
    return ImageStore(settings.images_dir)


def settled_space(settings: Settings, served: EmbeddingSpace) -> EmbeddingSpace:
    """The catalog's embedding space (recording ``served`` for a new catalog)."""
    catalog = Catalog.open(settings.resolved_database_url)
    try:
        return settle_space(catalog, served)
    finally:
        catalog.close()


@dataclass
class Components:
    """Everything a server holds once started: the encoder, the image loader, the endpoint's modes and,
    unless started without it (handler.py), the product catalog."""

    settings: Settings
    encoder: Encoder
    images: ImageLoader
    endpoint: InferenceService
    products: ProductService | None = None
    owns_encoder: bool = False  # loaded here (not handed in): closed with the components
    # The catalog's embedding space and the served model's; catalog routes need them equal.
    catalog_space: EmbeddingSpace | None = None
    served_space: EmbeddingSpace | None = None
    # The faster runtime's export being built while this serves (not started: the caller starts it).
    export: BackgroundExport | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        encoder: Encoder | None = None,
        *,
        with_catalog: bool = False,
        export_in_background: bool = False,
    ) -> Components:
        from search.endpoint import InferenceService

        owns_encoder = encoder is None
        encoder = encoder or load_encoder(settings, export_in_background=export_in_background)
        export = background_export(settings, encoder) if export_in_background and owns_encoder else None
        images = build_image_loader(settings, encoder.info.image_size)
        products = catalog_space = served_space = None
        if with_catalog:
            migrate(settings.resolved_database_url)
            served_space = space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint)
            catalog_space = settled_space(settings, served_space)
            same = catalog_space.key == served_space.key
            if not same:
                log.warning("%s", SpaceMismatch(catalog_space, served_space).message)
            # On a mismatch the catalog stays readable for /ready, but nothing can embed into it.
            products = open_products(
                settings,
                encoder if same else None,
                images,
                model=catalog_space.key,
                rebuild_in_background=True,
                read_standby=True,
            )
            log.info(
                "catalog: %d products, %s index of %d vectors at revision %d (%s), searching on %s (%s)",
                products.catalog.count(),
                products.vector_backend,
                len(products.index),
                products.index.revision,
                products.index_path or "image_vectors in the catalog's database",
                *products.index.search_device,
            )
        return cls(
            settings,
            encoder,
            images,
            InferenceService(encoder, images, request_limits(settings)),
            products,
            owns_encoder,
            catalog_space,
            served_space,
            export,
        )

    def space_mismatch(self) -> SpaceMismatch | None:
        if self.catalog_space is None or self.served_space is None:
            return None
        if self.catalog_space.key == self.served_space.key:
            return None
        return SpaceMismatch(self.catalog_space, self.served_space)

    def close(self) -> None:
        if self.export is not None:
            self.export.stop()
        if self.products is not None:
            self.products.tagging.stop()
            try:
                self.products.refresh()
                self.products.save_index()
            finally:
                self.products.catalog.close()
        self.images.close()
        if self.owns_encoder:
            self.encoder.close()
