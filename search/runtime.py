"""Wiring: settings in, the loaded components out. The API, the indexer and handler.py all start here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from search.catalog import Catalog
from search.catalog.service import ProductService, open_products
from search.db import migrate
from search.decode_budget import DecodeBudget
from search.encoder import BatchSettings, Encoder
from search.fetch import AddressPolicy, FetchLimits, UrlFetcher
from search.images import ImageLimits, ImageLoader
from search.inference import InferenceService, RequestLimits
from search.settings import Settings
from search.space import EmbeddingSpace, SpaceMismatch, settle_space, space_of

log = logging.getLogger(__name__)

__all__ = ["InferenceRuntime", "build_image_loader", "load_encoder", "open_products"]


def quiet_transformers() -> None:
    """Advisory warnings and loading bars of transformers are noise in a service log; weight downloads
    (minutes for 1.5 GB) keep their progress bars."""
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # also turns off the hub's bars...
    huggingface_hub.utils.enable_progress_bars()  # ...which downloads need


def load_encoder(settings: Settings) -> Encoder:
    import torch

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


def batch_settings(settings: Settings) -> BatchSettings:
    return BatchSettings(
        image_batch=settings.image_batch_size,
        text_batch=settings.text_batch_size,
        max_wait_ms=settings.batch_wait_ms,
        image_queue_max=settings.image_queue_max,
        text_queue_max=settings.text_queue_max,
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


def settled_space(settings: Settings, served: EmbeddingSpace) -> EmbeddingSpace:
    """The catalog's embedding space (recording ``served`` for a new catalog)."""
    catalog = Catalog.open(settings.resolved_database_url)
    try:
        return settle_space(catalog, served)
    finally:
        catalog.close()


@dataclass
class InferenceRuntime:
    """Everything a server holds once started: the encoder, the image loader, the endpoint modes and,
    unless started without it (handler.py), the product catalog."""

    settings: Settings
    encoder: Encoder
    images: ImageLoader
    inference: InferenceService
    products: ProductService | None = None
    owns_encoder: bool = False  # loaded here (not handed in): closed with the runtime
    # The catalog's embedding space and the served model's; catalog routes need them equal.
    catalog_space: EmbeddingSpace | None = None
    served_space: EmbeddingSpace | None = None

    @classmethod
    def start(
        cls, settings: Settings, encoder: Encoder | None = None, *, with_catalog: bool = False
    ) -> InferenceRuntime:
        owns_encoder = encoder is None
        encoder = encoder or load_encoder(settings)
        images = build_image_loader(settings, encoder.info.image_size)
        limits = RequestLimits(
            max_images=settings.max_images_per_request,
            max_texts=settings.max_texts_per_request,
            max_text_chars=settings.max_text_chars,
        )
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
            )
            log.info(
                "catalog: %d products, index of %d vectors at revision %d (%s), searching on %s (%s)",
                products.catalog.count(),
                len(products.index),
                products.index.revision,
                settings.index_path,
                *products.index.search_device,
            )
        return cls(
            settings,
            encoder,
            images,
            InferenceService(encoder, images, limits),
            products,
            owns_encoder,
            catalog_space,
            served_space,
        )

    def space_mismatch(self) -> SpaceMismatch | None:
        if self.catalog_space is None or self.served_space is None:
            return None
        if self.catalog_space.key == self.served_space.key:
            return None
        return SpaceMismatch(self.catalog_space, self.served_space)

    def close(self) -> None:
        if self.products is not None:
            try:
                self.products.refresh()
                self.products.save_index()
            finally:
                self.products.catalog.close()
        self.images.close()
        if self.owns_encoder:
            self.encoder.close()
