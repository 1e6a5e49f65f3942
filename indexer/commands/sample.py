"""``sample OUT_DIR``: write a synthetic catalog (pictures and manifest.csv) to try things on."""

from __future__ import annotations

import argparse
from pathlib import Path

from indexer.cli import Command, Context
from search.errors import BadInput


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")


def sample(context: Context) -> int:
    try:
        from devtools.sample_catalog import write_sample_catalog
    except ImportError:  # an installed service without the source checkout's development tools
        raise BadInput("the sample catalog needs the devtools package of a source checkout") from None
    args = context.args
    manifest = write_sample_catalog(args.out_dir, args.count, seed=args.seed, size=args.size)
    context.report(f"wrote {args.count} products: {manifest}", products=args.count, manifest=str(manifest))
    return 0


COMMANDS = [Command("sample", "write a synthetic catalog", sample, _arguments, needs_catalog=False)]
