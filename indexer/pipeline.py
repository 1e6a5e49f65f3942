"""The indexing pipeline: manifest rows -> (fetch, decode, preprocess in worker threads) -> embed in
batches -> one database transaction per batch -> index sync.

Each batch is committed on its own, so an interrupted run (Ctrl-C, kill -9) keeps every finished batch,
and the next run skips them: a product whose image (URL, or file content hash) and model are unchanged
is not embedded again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.progress import Progress
from search.catalog import Fingerprint, ProductWrite
from search.encoder import Encoder
from search.errors import BadInput, VitrineError
from search.image_store import sha256_hex
from search.images import ImageLoader, is_url
from search.manifest import Manifest, ManifestIssue, ManifestRow
from search.products import ProductService


@dataclass
class Summary:
    total: int = 0
    added: int = 0
    updated: int = 0
    metadata_updated: int = 0
    skipped: int = 0
    failed: list[ManifestIssue] = field(default_factory=list)
    attribute_columns: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    embedded: int = 0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        """The summary for ``--json``: counts, timing, and every failed row."""
        return {
            "total": self.total,
            "added": self.added,
            "updated": self.updated,
            "metadata_updated": self.metadata_updated,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "interrupted": self.interrupted,
            "attribute_columns": self.attribute_columns,
            "failures": [
                {"line": issue.line, "id": issue.external_id, "error": issue.reason} for issue in self.failed
            ],
        }

    def lines(self) -> list[str]:
        out = [
            f"{self.total} rows: {self.added} added, {self.updated} re-embedded, "
            f"{self.metadata_updated} metadata updated, {self.skipped} unchanged, {len(self.failed)} failed",
            f"{self.embedded} images embedded in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)",
        ]
        if self.attribute_columns:
            out.append(f"columns kept as attributes: {', '.join(self.attribute_columns)}")
        if self.interrupted:
            out.append("INTERRUPTED: finished batches are saved; run the same command again to continue")
        for issue in self.failed[:50]:
            out.append(f"  failed {issue}")
        if len(self.failed) > 50:
            out.append(f"  ... and {len(self.failed) - 50} more")
        return out


@dataclass
class Prepared:
    """A row after the worker stage: what to write, and pixels when it must be embedded."""

    row: ManifestRow
    write: ProductWrite | None = None
    pixels: np.ndarray | None = None
    kind: str = "skipped"  # added | updated | metadata | skipped | failed
    issue: ManifestIssue | None = None


class Indexer:
    def __init__(
        self,
        service: ProductService,
        encoder: Encoder,
        images: ImageLoader,
        *,
        batch_size: int = 16,
        workers: int = 4,
        refetch: bool = False,
        progress: bool = True,
        progress_every: float = 5.0,
    ) -> None:
        self.service = service
        self.encoder = encoder
        self.images = images
        self.batch_size = batch_size
        self.workers = workers
        self.refetch = refetch
        self.progress = progress
        self.progress_every = progress_every
        self.model = service.model

    def run(self, manifest: Manifest) -> Summary:
        summary = Summary(total=len(manifest.rows) + len(manifest.issues))
        summary.failed.extend(manifest.issues)
        summary.attribute_columns = manifest.attribute_columns
        started = time.perf_counter()
        fingerprints = self.service.catalog.fingerprints(row.external_id for row in manifest.rows)
        bar = Progress(len(manifest.rows), enabled=self.progress, every=self.progress_every)
        pending: list[Prepared] = []
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="vitrine-prepare") as pool:
                prepare = lambda row: self._prepare(row, fingerprints.get(row.external_id), manifest.base_dir)  # noqa: E731
                for item in ordered_map(pool, prepare, manifest.rows, ahead=self.batch_size * 3):
                    if item.kind in ("skipped", "failed"):
                        self._count(summary, [item])
                        bar.update(1)
                        continue
                    pending.append(item)
                    if (
                        sum(1 for p in pending if p.pixels is not None) >= self.batch_size
                        or len(pending) >= 256
                    ):
                        self._commit(pending, summary)
                        bar.update(
                            len(pending),
                            added=summary.added,
                            updated=summary.updated,
                            failed=len(summary.failed),
                        )
                        pending = []
                if pending:
                    self._commit(pending, summary)
                    bar.update(
                        len(pending),
                        added=summary.added,
                        updated=summary.updated,
                        failed=len(summary.failed),
                    )
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - started
            self.service.checkpoint()
        return summary

    # Worker stage: runs in threads, touches no database session and no model ---------------------------

    def _prepare(self, row: ManifestRow, known: Fingerprint | None, base_dir: Path) -> Prepared:
        try:
            return self._prepare_or_raise(row, known, base_dir)
        except VitrineError as exc:
            return Prepared(row, kind="failed", issue=ManifestIssue(row.line, row.external_id, exc.message))
        except Exception as exc:  # one bad row never stops the run
            return Prepared(
                row,
                kind="failed",
                issue=ManifestIssue(row.line, row.external_id, f"{type(exc).__name__}: {exc}"),
            )

    def _prepare_or_raise(self, row: ManifestRow, known: Fingerprint | None, base_dir: Path) -> Prepared:
        write = ProductWrite(
            external_id=row.external_id,
            image_ref=row.image,
            title=row.title,
            category=row.category,
            attributes=row.attributes,
            embedding_model=self.model,
        )
        same_model = known is not None and known.embedding_model == self.model
        if is_url(row.image):
            if same_model and known.image_ref == row.image and not self.refetch:
                # Same URL, same model: trust it without a download (use --refetch to compare content).
                write.image_sha256 = known.image_sha256
                return self._metadata_or_skip(row, write, known)
            data = self.images.fetcher.fetch(row.image)
        else:
            data = read_local_image(base_dir, row.image, self.images.limits.max_bytes)
        write.image_sha256 = sha256_hex(data)
        picture = self.images.decode(data)
        if not is_url(row.image):
            write.image_file = self.service.image_store.put(data)
        if known is not None and known.same_image(write.image_sha256, self.model):
            return self._metadata_or_skip(row, write, known)
        pixels = self.encoder.preprocess([picture])
        return Prepared(row, write, pixels, kind="added" if known is None else "updated")

    @staticmethod
    def _metadata_or_skip(row: ManifestRow, write: ProductWrite, known: Fingerprint) -> Prepared:
        if known.same_metadata(write):
            return Prepared(row, kind="skipped")
        return Prepared(row, write, kind="metadata")

    # Main thread: embed a batch and commit it in one transaction -----------------------------------------

    def _commit(self, items: list[Prepared], summary: Summary) -> None:
        to_embed = [item for item in items if item.pixels is not None]
        if to_embed:
            vectors = self.encoder.embed_pixels(np.concatenate([item.pixels for item in to_embed]))
            for item, vector in zip(to_embed, vectors, strict=True):
                item.write.embedding = vector
        self.service.catalog.upsert([item.write for item in items])
        summary.embedded += len(to_embed)  # counted once committed: an interrupted batch is not saved
        self._count(summary, items)

    @staticmethod
    def _count(summary: Summary, items: Iterable[Prepared]) -> None:
        for item in items:
            if item.kind == "added":
                summary.added += 1
            elif item.kind == "updated":
                summary.updated += 1
            elif item.kind == "metadata":
                summary.metadata_updated += 1
            elif item.kind == "skipped":
                summary.skipped += 1
            elif item.issue is not None:
                summary.failed.append(item.issue)


def read_local_image(base_dir: Path, relative: str, max_bytes: int) -> bytes:
    """A manifest's local image; the path must stay inside the manifest's folder."""
    root = base_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"image path {relative!r} leaves the manifest's folder")
    if not path.is_file():
        raise BadInput(f"image file {relative!r} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInput(
            f"image file {relative!r} is {size} bytes; the limit is {max_bytes} (VITRINE_MAX_IMAGE_BYTES)"
        )
    return path.read_bytes()


def ordered_map(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map`` over a thread pool that keeps at most ``ahead`` items in flight and yields in order."""
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(work, item))
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()
