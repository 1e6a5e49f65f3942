"""The scheduler: concurrent callers share forward passes and each gets exactly its rows; a full queue
says 429; a cancelled caller's rows are dropped before they cost compute and block no one.

The unit tests drive ``TowerQueue`` with a plain forward function that the test can hold (a gate), so
batch formation is deterministic; the end-to-end tests use the real tiny model behind a real server.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from api.errors import status_of
from search.errors import Cancelled, Overloaded
from search.model.batching import BatchPolicy, CancelScope, TowerQueue, cancel_scope


class GatedForward:
    """Row i -> [sum(row), i-th row's first value]; records every batch; waits on a gate when shut."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[np.ndarray] = []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(rows.copy())
        return np.stack([rows.sum(axis=1), rows[:, 0]], axis=1).astype(np.float32)


def rows(first: float, count: int) -> np.ndarray:
    return np.arange(count, dtype=np.float32)[:, None] + np.array([[first, 0.5]], np.float32)


def expected(array: np.ndarray) -> np.ndarray:
    return np.stack([array.sum(axis=1), array[:, 0]], axis=1)


def hold_worker(queue: TowerQueue, forward: GatedForward) -> threading.Thread:
    """Occupy the worker with a one-row job that waits on the gate (which the caller then opens)."""
    forward.gate.clear()
    forward.entered.clear()
    thread = threading.Thread(target=queue.run, args=(rows(-1000, 1),))
    thread.start()
    assert forward.entered.wait(10)
    return thread


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_concurrent_requests_share_one_forward_pass_and_each_gets_exactly_its_rows():
    forward = GatedForward()
    queue = TowerQueue("images", forward, BatchPolicy(max_batch=16, max_wait_ms=0, max_queued=100))
    blocker = hold_worker(queue, forward)
    inputs = [rows(100 * i, 1 + i % 3) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(queue.run, array) for array in inputs]
        wait_until(lambda: queue.queued_rows == sum(len(a) for a in inputs))
        forward.gate.set()
        results = [future.result(10) for future in futures]
    blocker.join()
    for array, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result, expected(array))
    assert len(forward.batches) == 2  # the held job, then all six requests in one pass
    assert len(forward.batches[1]) == sum(len(a) for a in inputs)


def test_a_request_larger_than_a_batch_is_split_into_batch_sized_pieces():
    forward = GatedForward()
    queue = TowerQueue("images", forward, BatchPolicy(max_batch=4, max_wait_ms=0, max_queued=100))
    array = rows(0, 10)
    np.testing.assert_array_equal(queue.run(array), expected(array))
    assert [len(batch) for batch in forward.batches] == [4, 4, 2]


def test_an_interactive_request_goes_before_the_rest_of_a_bulk_request():
    forward = GatedForward()
    queue = TowerQueue("images", forward, BatchPolicy(max_batch=2, max_wait_ms=0, max_queued=100))
    blocker = hold_worker(queue, forward)
    with ThreadPoolExecutor(2) as pool:
        bulk = pool.submit(queue.run, rows(0, 8))
        wait_until(lambda: queue.queued_rows == 8)
        small = pool.submit(queue.run, rows(500, 1))
        wait_until(lambda: queue.queued_rows == 9)
        forward.gate.set()
        np.testing.assert_array_equal(small.result(10), expected(rows(500, 1)))
        np.testing.assert_array_equal(bulk.result(10), expected(rows(0, 8)))
    blocker.join()
    # After the held job: the small request's row shares the first pass, ahead of bulk pieces 2..8.
    assert 500 in forward.batches[1][:, 0]
    assert len(forward.batches) == 1 + 5


def test_a_full_queue_rejects_with_overloaded_and_admits_again_once_drained():
    forward = GatedForward()
    queue = TowerQueue(
        "images", forward, BatchPolicy(max_batch=2, max_wait_ms=0, max_queued=4), setting="VITRINE_X"
    )
    blocker = hold_worker(queue, forward)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(queue.run, rows(0, 3))
        wait_until(lambda: queue.queued_rows == 3)
        with pytest.raises(Overloaded, match="VITRINE_X=4") as error:
            queue.run(rows(10, 2))
        assert status_of(error.value) == 429
        forward.gate.set()
        waiting.result(10)
    blocker.join()
    np.testing.assert_array_equal(queue.run(rows(10, 2)), expected(rows(10, 2)))
    assert queue.stats.rejected == 1


def test_an_empty_queue_admits_a_request_larger_than_the_queue_limit():
    queue = TowerQueue("texts", GatedForward(), BatchPolicy(max_batch=2, max_wait_ms=0, max_queued=1))
    np.testing.assert_array_equal(queue.run(rows(0, 5)), expected(rows(0, 5)))


def test_a_cancelled_request_is_dropped_before_compute_and_does_not_block_others():
    forward = GatedForward()
    queue = TowerQueue("images", forward, BatchPolicy(max_batch=8, max_wait_ms=0, max_queued=100))
    blocker = hold_worker(queue, forward)
    scope = CancelScope()
    outcome: dict[str, object] = {}

    def cancelled_caller() -> None:
        with cancel_scope(scope):
            try:
                queue.run(rows(700, 5))
            except Cancelled as exc:
                outcome["error"] = exc

    caller = threading.Thread(target=cancelled_caller)
    caller.start()
    wait_until(lambda: queue.queued_rows == 5)
    scope.cancel()
    caller.join(10)
    assert not caller.is_alive(), "a cancelled caller stops waiting at once, even while the model is busy"
    assert status_of(outcome["error"]) == 499
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(queue.run, rows(900, 2))
        forward.gate.set()
        np.testing.assert_array_equal(other.result(10), expected(rows(900, 2)))
    blocker.join()
    computed = np.concatenate(forward.batches)[:, 0]
    assert not np.isin(np.arange(700, 705), computed).any()
    assert queue.stats.dropped_rows == 5


def test_a_scope_cancelled_before_submitting_never_queues():
    forward = GatedForward()
    queue = TowerQueue("images", forward, BatchPolicy(max_batch=8, max_wait_ms=0, max_queued=100))
    scope = CancelScope()
    scope.cancel()
    with cancel_scope(scope), pytest.raises(Cancelled):
        queue.run(rows(0, 3))
    wait_until(lambda: queue.queued_rows == 0)
    assert all(700 not in batch[:, 0] for batch in forward.batches)


def test_a_failing_forward_pass_reaches_its_callers_and_the_worker_lives_on():
    calls = [0]

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 1:
            raise ValueError("boom")
        return expected(batch).astype(np.float32)

    queue = TowerQueue("texts", flaky, BatchPolicy(max_batch=8, max_wait_ms=0, max_queued=100))
    with pytest.raises(ValueError, match="boom"):
        queue.run(rows(0, 2))
    np.testing.assert_array_equal(queue.run(rows(0, 2)), expected(rows(0, 2)))


def test_the_worker_waits_up_to_max_wait_for_batch_mates():
    forward = GatedForward()
    queue = TowerQueue("texts", forward, BatchPolicy(max_batch=64, max_wait_ms=1000, max_queued=100))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(queue.run, rows(0, 1))
        wait_until(lambda: queue.queued_rows == 1)
        second = pool.submit(queue.run, rows(10, 1))
        first.result(10), second.result(10)
    assert [len(batch) for batch in forward.batches] == [2]
