"""The scheduler between callers and the model: concurrent requests share forward passes.

One ``TowerQueue`` per tower (images, texts). Callers submit rows (pixel arrays, token ids) and wait
for exactly their rows back; a worker thread forms batches of up to ``max_batch`` rows, waiting at
most ``max_wait_ms`` for batch-mates after the oldest row arrived, and runs one forward pass.

- Admission: past ``max_queued`` waiting rows a submission raises ``Overloaded`` (HTTP 429) at once,
  instead of queueing without end. An empty queue always admits, so one large request still runs.
- Fairness: a request is served in pieces; small (interactive) requests go before the remaining
  pieces of a request larger than a batch, so a text query is not stuck behind a bulk job.
- Cancellation: a caller inside a ``CancelScope`` whose scope is cancelled (the HTTP client went away)
  stops waiting at once, and its rows that are still queued are dropped before they cost compute.
"""

from __future__ import annotations

import atexit
import contextvars
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from search.errors import Cancelled, Overloaded

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BatchPolicy:
    """How one tower forms batches."""

    max_batch: int
    max_wait_ms: float
    max_queued: int


class CancelScope:
    """Work done on behalf of one caller; ``cancel()`` abandons everything it still waits for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[_Job] = []
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            job.cancel()

    def _attach(self, job: _Job) -> None:
        with self._lock:
            if not self.cancelled:
                self._jobs.append(job)
                return
        job.cancel()

    def _detach(self, job: _Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)


_current_scope: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "vitrine_cancel_scope", default=None
)


@contextmanager
def cancel_scope(scope: CancelScope) -> Iterator[CancelScope]:
    """Every submission made inside this block (in this thread or context) belongs to ``scope``."""
    token = _current_scope.set(scope)
    try:
        yield scope
    finally:
        _current_scope.reset(token)


class _Job:
    """One submission: its rows, how many are taken, and where its results go."""

    def __init__(self, rows: np.ndarray, seq: int, queue: TowerQueue) -> None:
        self.rows = rows
        self.queue = queue
        self.seq = seq
        self.taken = 0  # rows handed to a batch so far
        self.filled = 0  # rows whose results are in
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = threading.Event()

    @property
    def remaining(self) -> int:
        return len(self.rows) - self.taken

    def cancel(self) -> None:
        self.cancelled = True
        self.done.set()
        self.queue._forget(self)

    def deliver(self, start: int, vectors: np.ndarray) -> None:
        if self.result is None:
            self.result = np.empty((len(self.rows), vectors.shape[1]), dtype=vectors.dtype)
        self.result[start : start + len(vectors)] = vectors
        self.filled += len(vectors)
        if self.filled == len(self.rows):
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass
class QueueStats:
    batches: int = 0
    rows: int = 0
    dropped_rows: int = 0  # rows of cancelled requests never computed
    rejected: int = 0  # submissions answered with Overloaded
    busy_seconds: float = 0.0  # wall time inside forward passes: busy / elapsed is the model's utilisation


_open_queues: weakref.WeakSet[TowerQueue] = weakref.WeakSet()


@atexit.register
def _close_open_queues() -> None:
    # Ctrl-C or sys.exit while a pass runs: let it finish rather than abort in native code at exit.
    for queue in list(_open_queues):
        queue.close()


class TowerQueue:
    """Batches the rows of concurrent submissions for one tower's forward function."""

    def __init__(self, name: str, forward: Forward, policy: BatchPolicy, *, setting: str = "") -> None:
        self.name = name
        self.forward = forward
        self.policy = policy
        self.stats = QueueStats()
        self._setting = setting or f"VITRINE_{name.upper()}_QUEUE_MAX"
        self._jobs: list[_Job] = []
        self._queued_rows = 0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # Callers ------------------------------------------------------------------------------------------

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Forward ``rows`` (in pieces shared with other callers) and return exactly their results."""
        if len(rows) == 0:
            raise ValueError("no rows to run")
        job = self._submit(rows)
        scope = _current_scope.get()
        if scope is not None:
            scope._attach(job)
        try:
            job.done.wait()
        finally:
            if scope is not None:
                scope._detach(job)
        if job.cancelled:
            raise Cancelled("the request was cancelled: its client went away")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _submit(self, rows: np.ndarray) -> _Job:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.name} queue is closed")
            if self._queued_rows and self._queued_rows + len(rows) > self.policy.max_queued:
                self.stats.rejected += 1
                raise Overloaded(
                    f"server is busy: {self._queued_rows} {self.name} waiting for the model "
                    f"({self._setting}={self.policy.max_queued}); retry later"
                )
            job = _Job(rows, next(self._seq), self)
            self._jobs.append(job)
            self._queued_rows += len(rows)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name=f"vitrine-batch-{self.name}", daemon=True
                )
                self._worker.start()
                _open_queues.add(self)
            self._cond.notify()
        return job

    def close(self) -> None:
        """Fail what is still queued and wait for the pass in progress: a process must not exit while
        its worker thread is inside the runtime's native code (that aborts the process)."""
        with self._cond:
            self._closed = True
            for job in self._jobs:
                job.fail(RuntimeError(f"the {self.name} queue was closed"))
            self._jobs.clear()
            self._queued_rows = 0
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # Worker -------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            pieces = self._next_batch()
            if pieces is None:
                return
            if not pieces:
                continue
            batch = np.concatenate([job.rows[start:stop] for job, start, stop in pieces])
            started = time.perf_counter()
            try:
                vectors = self.forward(batch)
            except BaseException as exc:  # the callers get the error; the worker lives on
                log.exception("%s forward pass failed", self.name)
                for job, _, _ in pieces:
                    job.fail(exc)
                continue
            finally:
                self.stats.busy_seconds += time.perf_counter() - started
            self.stats.batches += 1
            self.stats.rows += len(batch)
            offset = 0
            for job, start, stop in pieces:
                job.deliver(start, vectors[offset : offset + stop - start])
                offset += stop - start

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for rows, give batch-mates up to max_wait to arrive, then take up to max_batch rows."""
        policy = self.policy
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._jobs:
                    break
                self._cond.wait()
            deadline = time.monotonic() + policy.max_wait_ms / 1000
            while self._queued_rows < policy.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed or not self._jobs:
                return None if self._closed else []
            # Interactive first: a job that fits in one batch goes before the rest of a larger one.
            order = sorted(self._jobs, key=lambda job: (len(job.rows) > policy.max_batch, job.seq))
            pieces = []
            room = policy.max_batch
            for job in order:
                if room == 0:
                    break
                take = min(room, job.remaining)
                pieces.append((job, job.taken, job.taken + take))
                job.taken += take
                room -= take
                self._queued_rows -= take
                if job.remaining == 0:
                    self._jobs.remove(job)
            return pieces

    def _forget(self, job: _Job) -> None:
        """A cancelled job leaves the queue at once: its rows free their place and are never computed."""
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued_rows -= job.remaining
                self.stats.dropped_rows += job.remaining
