"""Reading a merchandiser's checked answers for calibration: a CSV with rows ``id,attribute,value``
(a header row naming those columns is optional)."""

from __future__ import annotations

import csv
from pathlib import Path

from search.catalog.calibration import Label
from search.errors import BadInput

COLUMNS = ["id", "attribute", "value"]


def read_labels(path: Path) -> list[Label]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read labels file {str(path)!r}: {exc}") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == COLUMNS:
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    labels = []
    for line, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 3 or not all(cell.strip() for cell in row):
            raise BadInput(f"{path.name} line {line}: a label is three non-empty cells: id,attribute,value")
        labels.append(Label(*(cell.strip() for cell in row)))
    if not labels:
        raise BadInput(f"{path.name} has no labels (rows id,attribute,value)")
    return labels
