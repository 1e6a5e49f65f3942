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
from dataclasses import dataclass
from pathlib import Path

from indexer import interrupts
from indexer.manifest import Manifest, ManifestRow
from indexer.progress import Progress
from indexer.summary import RowIssue, RunSummary
from search.catalog.records import ProductRecord
from search.catalog.service import ProductService
from search.catalog.writer import PreparedWrite
from search.errors import VitrineError

__all__ = ["Indexer", "ordered_map"]


@dataclass
class Prepared:
    """A row after the worker stage: its planned write, or why it failed."""

    row: ManifestRow
    write: PreparedWrite | None = None
    issue: RowIssue | None = None

    @property
    def to_embed(self) -> int:
        return self.write.to_embed if self.write is not None else 0

    @property
    def kind(self) -> str:
        return self.write.plan.kind if self.write is not None else "failed"


class Indexer:
    def __init__(
        self,
        service: ProductService,
        *,
        batch_size: int = 16,
        workers: int = 4,
        refetch: bool = False,
        progress: bool = True,
        progress_every: float = 5.0,
    ) -> None:
        self.service = service
        self.writer = service.writer
        self.batch_size = batch_size
        self.workers = workers
        self.refetch = refetch
        self.progress = progress
        self.progress_every = progress_every

    def run(self, manifest: Manifest) -> RunSummary:
        summary = RunSummary("add", total=len(manifest.rows) + len(manifest.issues))
        summary.failed.extend(manifest.issues)
        summary.attribute_columns = manifest.attribute_columns
        summary.skipped_files = manifest.skipped_files
        started = time.perf_counter()
        stored = self.service.catalog.get_many(row.external_id for row in manifest.rows)
        bar = Progress(len(manifest.rows), enabled=self.progress, every=self.progress_every)
        pending: list[Prepared] = []
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="vitrine-prepare") as pool:
                prepare = lambda row: self._prepare(row, stored.get(row.external_id), manifest.base_dir)  # noqa: E731
                for item in ordered_map(pool, prepare, manifest.rows, ahead=self.batch_size * 3):
                    if item.kind in ("unchanged", "failed"):
                        self._count(summary, [item])
                        bar.update(1)
                        continue
                    pending.append(item)
                    if sum(p.to_embed for p in pending) >= self.batch_size or len(pending) >= 256:
                        self._commit(pending, summary, bar)
                        pending = []
                if pending:
                    self._commit(pending, summary, bar)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close(interrupted=summary.interrupted)
            summary.seconds = time.perf_counter() - started
            self.service.checkpoint()
        return summary

    # Worker stage: runs in threads, touches no database session and no model ---------------------------

    def _prepare(self, row: ManifestRow, stored: ProductRecord | None, base_dir: Path) -> Prepared:
        try:
            write = self.writer.prepare(row.draft, stored, base_dir=base_dir, refetch=self.refetch)
            return Prepared(row, write)
        except VitrineError as exc:
            return Prepared(row, issue=RowIssue(row.where, row.external_id, exc.message))
        except Exception as exc:  # one bad row never stops the run
            return Prepared(row, issue=RowIssue(row.where, row.external_id, f"{type(exc).__name__}: {exc}"))

    # Main thread: embed a batch and commit it in one transaction -----------------------------------------

    def _commit(self, items: list[Prepared], summary: RunSummary, bar: Progress) -> None:
        interrupts.check()
        embedded = sum(item.to_embed for item in items)
        writes = [item.write for item in items if item.write is not None]
        self.writer.embed(writes)  # the slow part, where Ctrl-C stops the run at once
        with interrupts.deferred():  # the transaction and its count: both or neither
            self.writer.commit(writes)
            summary.embedded += embedded
            self._count(summary, items)
        bar.update(len(items), added=summary.added, updated=summary.updated, failed=len(summary.failed))

    @staticmethod
    def _count(summary: RunSummary, items: Iterable[Prepared]) -> None:
        for item in items:
            if item.issue is not None:
                summary.failed.append(item.issue)
            else:
                summary.count(item.kind)


def ordered_map(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map`` over a thread pool that keeps at most ``ahead`` items in flight and yields in order."""
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(work, item))
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()
