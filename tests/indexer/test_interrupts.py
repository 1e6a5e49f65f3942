"""Ctrl-C that lands inside a weakref callback or ``__del__`` (where Python can only print it as
"Exception ignored") is recorded for the run's next check, not printed as a traceback."""

import gc
import signal
import sys
import weakref

from indexer import interrupts


class _Thing:
    pass


def _collect_with_a_callback(callback) -> None:
    thing = _Thing()
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
    assert ref() is None


def test_a_ctrl_c_swallowed_by_a_weakref_callback_is_recorded_and_not_printed() -> None:
    printed = []  # what would be printed as "Exception ignored in ... Traceback"
    previous, sys.unraisablehook = sys.unraisablehook, lambda args: printed.append(args.exc_type)

    def callback(_ref) -> None:
        # What a Ctrl-C landing here does: the installed SIGINT handler runs inside the callback. Called
        # directly, not by os.kill: a real signal may be handled after the callback, where its
        # KeyboardInterrupt would end the test run instead.
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    try:
        with interrupts.handled():
            _collect_with_a_callback(callback)
            assert interrupts.requested()  # the run's next check stops it
    finally:
        sys.unraisablehook = previous
    assert printed == []


def test_other_unraisable_errors_still_reach_the_previous_hook() -> None:
    seen = []

    def mine(args) -> None:
        seen.append(args.exc_type)

    previous, sys.unraisablehook = sys.unraisablehook, mine
    try:

        def callback(_ref) -> None:
            raise ValueError("a bug in a callback")

        with interrupts.handled():
            _collect_with_a_callback(callback)
        assert seen == [ValueError]
        assert sys.unraisablehook is mine  # the caller's hook again once the block ends
    finally:
        sys.unraisablehook = previous


def test_a_ctrl_c_in_a_deferred_block_is_raised_once_the_block_is_done() -> None:
    done = []
    with interrupts.handled():
        try:
            with interrupts.deferred():
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # Ctrl-C just after a commit
                done.append("counted")
        except KeyboardInterrupt:
            done.append("interrupted")
        assert signal.getsignal(signal.SIGINT) is interrupts._on_sigint  # the run's handler is back
    assert done == ["counted", "interrupted"]


def test_ctrl_c_right_after_a_batch_commits_still_counts_that_batch(
    indexed_catalog, indexer_cli, tmp_path, monkeypatch
) -> None:
    # The CI failure: Ctrl-C between a batch's transaction and the summary's count of it printed
    # "0 added" for a run that had saved a batch.
    import json

    from search.catalog.writer import CatalogWriter

    commit = CatalogWriter.commit

    def commit_then_ctrl_c(self, prepared):
        committed = commit(self, prepared)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return committed

    monkeypatch.setattr(CatalogWriter, "commit", commit_then_ctrl_c)
    run = indexer_cli(tmp_path / "data", "add", indexed_catalog.manifest, "--batch-size", 2, "--json")
    assert run.returncode == 130
    summary = json.loads(run.stdout)
    assert summary["interrupted"] is True
    assert summary["added"] == summary["embedded"] == 2  # the one batch saved, and counted
