"""A pytest plugin for ``make mutants`` only: each module of ``[tool.mutmut_scope]`` in pyproject.toml is
tested by its own narrow set of tests.

mutmut records, while it runs the test selection once, which tests reach which function, and later runs
exactly those tests against each mutant of that function. Every API test reaches the write plan, the
writer, the index sync and the body reader, so without a scope each of their mutants would run dozens of
app-level tests (minutes per mutant, and timeouts that are not real). This plugin drops, before mutmut
files them, the hits on a scoped module's functions by tests outside that module's list. A score is then
what the module's own tests catch: a lower bound on what the whole suite catches.

Loaded by ``[tool.mutmut] pytest_add_cli_args`` (``-p tests.support.mutmut_scope``); a plain pytest run
never loads it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest


def _scopes() -> dict[str, tuple[str, ...]]:
    # mutmut runs pytest inside mutants/, which holds a copy of pyproject.toml.
    data = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))
    scopes = data.get("tool", {}).get("mutmut_scope", {})
    return {module: tuple(tests) for module, tests in scopes.items()}


SCOPES = _scopes()


def out_of_scope(function: str, nodeid: str) -> bool:
    """Whether a hit on ``function`` (mutmut's name: ``package.module.x_name``) by test ``nodeid`` is
    dropped: the function's module has a scope and the test is not in it."""
    for module, tests in SCOPES.items():
        if function.startswith(module + "."):
            return not nodeid.removeprefix("mutants/").startswith(tests)
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    try:
        from mutmut.state import state
    except ImportError:
        return
    hits = state()._stats
    for function in [f for f in hits if out_of_scope(f, item.nodeid)]:
        hits.discard(function)
