"""python -m indexer COMMAND: build and maintain the product catalog and its vector index.

    add MANIFEST       index a CSV/JSONL manifest or a folder of images (incremental, resumable)
    import FILE        import embeddings computed elsewhere (Parquet: id, embedding, metadata; no model)
    export FILE        write every product with its embedding to a Parquet file
    remove ID...       remove products
    rebuild            rebuild the index file from the database (no model needed)
    verify             prove the database and the index agree (exit 1 if not)
    tune               measure recall@10 against exact search, re-tune and save the index's parameters
    stats              counts, revisions, files
    compact            save the index, then prune the removal log it no longer needs
    duplicates         group near-duplicate products (--threshold, --csv FILE, --calibrate PAIRS.csv)
    reembed            move the catalog to VITRINE_MODEL's embedding space (resumable)
    migrate            apply database migrations
    sample OUT_DIR     write a synthetic catalog (images + manifest.csv)
    export-model       build (or verify) the exported model VITRINE_RUNTIME/VITRINE_DTYPE choose
    tag                store a taxonomy, calibrate thresholds, re-tag every product (stored vectors only)
    audit              list merchant values that contradict a confident tag
    evaluate FILE      ranking quality on your judgements (NDCG, recall, MRR); --save, --gate, --calibrate

Exit codes: 0 done, 1 verify found problems or the command failed, 2 some rows failed, 130 interrupted.
Each command lives in ``indexer/commands/`` (one module per group); ``COMMANDS`` there is the table.
"""

from __future__ import annotations

import os
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C before the job has started (while Python imports what it needs) ends the process at once
    # with one line, never an import traceback; run() then takes over with interrupts.handled().
    def _interrupted_early(signum: int, frame: object) -> None:
        print("interrupted", file=sys.stderr)
        os._exit(130)

    signal.signal(signal.SIGINT, _interrupted_early)

import argparse
from typing import TYPE_CHECKING

from pydantic import ValidationError

from indexer import interrupts
from indexer.cli import Context
from indexer.commands import COMMANDS
from search.errors import IndexDeviceError, ModelLoadError, VectorBackendError, VitrineError
from search.logs import configure_logging
from search.settings import Settings

if TYPE_CHECKING:  # torch loads only for the commands that embed
    from search.model.encoder import Encoder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Every command accepts --json: its result as one JSON object on stdout (progress stays on stderr).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.arguments(subparsers.add_parser(command.name, help=command.help, parents=[common]))
    return parser


def main(argv: list[str] | None = None) -> None:
    _import_model_libraries(sys.argv[1:] if argv is None else argv)
    code = run(argv)
    # The run is over and its result printed. The interpreter's teardown (a second or two of library
    # atexit hooks) puts SIGINT's default handler back, so a Ctrl-C then, or one a half-imported
    # library re-raises there, ended the process by SIGINT (-2) instead of with this exit code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:  # interrupted: skip the teardown of whatever the Ctrl-C cut off mid-import
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


def _import_model_libraries(argv: list[str]) -> None:
    """For a command that embeds, import torch and transformers now, while Ctrl-C still ends the
    process at once with its one line (the early handler above): a KeyboardInterrupt raised inside their
    native initialisation later, under the run's own handler, was seen to abort the process (SIGABRT)
    instead of exiting 130."""
    command = COMMANDS.get(argv[0]) if argv else None
    if command is not None and command.needs_model:
        import torch  # noqa: F401
        import transformers  # noqa: F401


def run(
    argv: list[str] | None = None, settings: Settings | None = None, encoder: Encoder | None = None
) -> int:
    """The CLI without the process exit: run one command and return its exit code.

    ``settings`` replaces the environment's; ``encoder``, a model already loaded for ``settings.model``,
    is used (and left open) instead of loading one -- how a host process or the tests run commands
    without paying for a fresh interpreter and model load each time. Every failure is one line on
    stderr: a bad setting, an unreadable file, Ctrl-C at any moment (exit 130)."""
    args = _parser().parse_args(argv)
    try:
        settings = settings or Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings: its message names them
            print(f"error: invalid settings: {first['msg'].removeprefix('Value error, ')}", file=sys.stderr)
            return 1
        name = "VITRINE_" + "_".join(str(part) for part in first["loc"]).upper()
        print(f"error: invalid setting {name}={first.get('input')!r}: {first['msg']}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    command = COMMANDS[args.command]
    try:
        with interrupts.handled():
            if command.needs_catalog:
                from search.catalog.db import migrate

                migrate(settings.resolved_database_url)
            return command.run(Context(args, settings, encoder))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (VitrineError, ModelLoadError, IndexDeviceError, VectorBackendError) as exc:
        if interrupts.requested():  # the interrupt surfaced as a library's error
            print("interrupted", file=sys.stderr)
            return 130
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    main()
