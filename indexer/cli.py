"""What every indexer command shares: its context (settings, a model already loaded by the host
process), how results are printed, and how a model or the catalog is opened for a command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexer.summary import RunSummary
from search.settings import Settings

if TYPE_CHECKING:  # torch loads only for the commands that embed
    from search.catalog.service import ProductService
    from search.model.encoder import Encoder


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    given_encoder: Encoder | None = None  # a host process's loaded model (its owner closes it)

    def report(self, text: str, **result: object) -> None:
        """A command's result: ``text`` for people, or ``result`` as one JSON object with --json."""
        print(json.dumps(result, indent=2) if self.args.json else text)

    def finish(self, summary: RunSummary) -> int:
        """Print a batch job's summary and choose its exit code: 130 interrupted, 2 rows failed."""
        self.report("\n".join(summary.lines()), **summary.as_dict())
        if summary.interrupted:
            return 130
        return 2 if summary.failed else 0

    @contextlib.contextmanager
    def encoder(self) -> Iterator[Encoder]:
        """The given encoder, else ``settings.model`` loaded for this command (and closed after it)."""
        if self.given_encoder is not None:
            yield self.given_encoder
            return
        from search.wiring import load_encoder

        with self.quiet_stdout():
            encoder = load_encoder(self.settings)
        try:
            yield encoder
        finally:
            encoder.close()

    @contextlib.contextmanager
    def quiet_stdout(self) -> Iterator[None]:
        """With --json, anything other libraries print while this runs (NNCF's tables during a first
        model conversion) goes to stderr, at the file-descriptor level, so stdout stays JSON only."""
        if not self.args.json:
            yield
            return
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


@dataclass(frozen=True)
class Command:
    """One ``python -m indexer NAME``: its help, its arguments and what it does (exit code)."""

    name: str
    help: str
    run: Callable[[Context], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    needs_catalog: bool = True  # migrations run first
    needs_model: bool = False  # torch and transformers load before the command (see indexer.__main__)


def progress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar and no progress log lines"
    )
    parser.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="outside a terminal: a progress log line this often (default 5)",
    )


def catalog_model(settings: Settings) -> str:
    """The embedding space's key of the catalog's vectors (maintenance loads no model)."""
    from search.catalog import Catalog
    from search.catalog.spaces import catalog_model_key

    catalog = Catalog.open(settings.resolved_database_url)
    try:
        return catalog_model_key(catalog, settings.model)
    finally:
        catalog.close()


@contextlib.contextmanager
def maintenance_service(settings: Settings, *, load_index: bool = True) -> Iterator[ProductService]:
    """The catalog on its own embedding space, without a model."""
    from search.wiring import open_products

    settings = settings.model_copy(update={"model": catalog_model(settings)})
    service = open_products(settings, load_index=load_index)
    try:
        yield service
    finally:
        service.catalog.close()
