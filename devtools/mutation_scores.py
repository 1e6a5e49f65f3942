"""The score per module of the last mutmut run (``make mutants``): killed / mutants, and how many of the
rest survived, timed out or were reached by no test.

mutmut's own summary is one line for all modules; its per-file results (``mutants/<path>.meta``) hold
each mutant's exit code. Usage: ``python -m devtools.mutation_scores [mutants folder]``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes (mutmut.stats.status_by_exit_code); anything else is "suspicious".
STATUS = {
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not checked",
}
COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked")


def scores(mutants: Path) -> dict[str, Counter[str]]:
    """Per source file (relative path), the count of mutants by status."""
    by_file: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text("utf-8")).get("exit_code_by_key", {})
        by_file[str(meta.relative_to(mutants))[: -len(".meta")]] = Counter(
            STATUS.get(code, "suspicious") for code in codes.values()
        )
    return by_file


def table(by_file: dict[str, Counter[str]]) -> str:
    lines = [
        "| module | killed / mutants | " + " | ".join(COLUMNS[1:]) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    total: Counter[str] = Counter()
    for path, counts in by_file.items():
        total += counts
        lines.append(_row(f"`{path}`", counts))
    lines.append(_row("**all**", total))
    return "\n".join(lines)


def _row(name: str, counts: Counter[str]) -> str:
    mutants = sum(counts.values())
    share = f" ({100 * counts['killed'] / mutants:.1f}%)" if mutants else ""
    rest = " | ".join(str(counts[column]) for column in COLUMNS[1:])
    return f"| {name} | {counts['killed']} / {mutants}{share} | {rest} |"


if __name__ == "__main__":
    print(table(scores(Path(sys.argv[1] if len(sys.argv) > 1 else "mutants"))))
