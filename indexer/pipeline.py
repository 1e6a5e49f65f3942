"""The indexing pipeline: manifest rows -> (fetch, decode, plan, preprocess in worker threads) -> embed
in batches -> one database transaction per batch -> index sync.

The stages are those of the API's writes (``search.catalog.writer``): one function decides, for both,
whether a product is unchanged, needs a metadata update or needs images embedded. Each batch is
committed on its own, so an interrupted run (Ctrl-C, kill -9) keeps every finished batch, and the next
run skips them: an image whose URL (or file content hash) and model are unchanged is not embedded again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from indexer import interrupts
from indexer.progress import Progress
from search.catalog.records import ProductRecord
from search.catalog.service import ProductService
from search.catalog.writer import PreparedWrite, read_local_image
from search.catalog.writes import ProductDraft
from search.encoder import Encoder
from search.errors import VitrineError
from search.images import ImageLoader
from search.manifest import Manifest, ManifestIssue, ManifestRow

__all__ = ["Indexer", "Summary", "ordered_map", "read_local_image"]
# What a write plan means in the run's summary.
_KINDS = {"created": "added", "updated": "updated", "metadata": "metadata", "unchanged": "skipped"}


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
    """A row after the worker stage: its planned write, or why it failed."""

    row: ManifestRow
    write: PreparedWrite | None = None
    kind: str = "skipped"  # added | updated | metadata | skipped | failed
    issue: ManifestIssue | None = None

    @property
    def to_embed(self) -> int:
        return len(self.write.plan.embed) if self.write is not None else 0


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
        stored = self.service.catalog.get_many(row.external_id for row in manifest.rows)
        bar = Progress(len(manifest.rows), enabled=self.progress, every=self.progress_every)
        pending: list[Prepared] = []
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="vitrine-prepare") as pool:
                prepare = lambda row: self._prepare(row, stored.get(row.external_id), manifest.base_dir)  # noqa: E731
                for item in ordered_map(pool, prepare, manifest.rows, ahead=self.batch_size * 3):
                    if item.kind in ("skipped", "failed"):
                        self._count(summary, [item])
                        bar.update(1)
                        continue
                    pending.append(item)
                    if sum(p.to_embed for p in pending) >= self.batch_size or len(pending) >= 256:
                        interrupts.check()
                        self._commit(pending, summary)
                        bar.update(
                            len(pending),
                            added=summary.added,
                            updated=summary.updated,
                            failed=len(summary.failed),
                        )
                        pending = []
                if pending:
                    interrupts.check()
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

    def _prepare(self, row: ManifestRow, stored: ProductRecord | None, base_dir: Path) -> Prepared:
        try:
            draft = ProductDraft(row.external_id, row.title, row.category, row.attributes, row.images)
            write = self.service.writer.prepare(draft, stored, base_dir=base_dir, refetch=self.refetch)
            return Prepared(row, write, kind=_KINDS[write.plan.kind])
        except VitrineError as exc:
            return Prepared(row, kind="failed", issue=ManifestIssue(row.line, row.external_id, exc.message))
        except Exception as exc:  # one bad row never stops the run
            return Prepared(
                row,
                kind="failed",
                issue=ManifestIssue(row.line, row.external_id, f"{type(exc).__name__}: {exc}"),
            )

    # Main thread: embed a batch and commit it in one transaction -----------------------------------------

    def _commit(self, items: list[Prepared], summary: Summary) -> None:
        self.service.writer.commit([item.write for item in items if item.write is not None])
        summary.embedded += sum(item.to_embed for item in items)  # counted once committed
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


def ordered_map(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map`` over a thread pool that keeps at most ``ahead`` items in flight and yields in order."""
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(work, item))
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()
