"""The indexer's commands, one module per group; ``COMMANDS`` is the table ``python -m indexer`` reads."""

from __future__ import annotations

from indexer.cli import Command
from indexer.commands import catalog, duplicates, evaluate, maintenance, model, sample, tag, vectors

COMMANDS: dict[str, Command] = {
    command.name: command
    for group in (catalog, vectors, maintenance, duplicates, model, sample, tag, evaluate)
    for command in group.COMMANDS
}
