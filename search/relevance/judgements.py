"""The judgements file: CSV rows ``query,product_id,grade`` (grade 0-3), optionally ``query_image`` (a
path or URL, for image queries) and ``filters`` (JSON). Rows with the same query, image and filters are
one query."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import BadInput

REQUIRED = ("query", "product_id", "grade")


@dataclass
class JudgedQuery:
    text: str | None
    image: str | None
    filters: dict[str, Any] | None
    grades: dict[str, int] = field(default_factory=dict)  # product id -> grade

    @property
    def label(self) -> str:
        parts = [
            self.text or "",
            f"image={self.image}" if self.image else "",
            json.dumps(self.filters) if self.filters else "",
        ]
        return " ".join(part for part in parts if part)


@dataclass
class Judgements:
    queries: list[JudgedQuery]
    sha256: str  # of the file's bytes: saved runs are compared on the same judgements only


def read_judgements(path: Path) -> Judgements:
    """The judgements of ``path``; BadInput naming the line of the first bad row."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
    if missing:
        raise BadInput(f"{path}: the header must name {', '.join(REQUIRED)} (missing {', '.join(missing)})")
    queries: dict[tuple[str, str, str], JudgedQuery] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path.name} line {line}"
        text_query = (row.get("query") or "").strip() or None
        image = (row.get("query_image") or "").strip() or None
        if text_query is None and image is None:
            raise BadInput(f"{where}: a row needs a query or a query_image")
        product = (row.get("product_id") or "").strip()
        if not product:
            raise BadInput(f"{where}: product_id is empty")
        try:
            grade = int((row.get("grade") or "").strip())
        except ValueError:
            raise BadInput(f"{where}: grade must be an integer from 0 to 3") from None
        if not 0 <= grade <= 3:
            raise BadInput(f"{where}: grade must be an integer from 0 to 3")
        raw_filters = (row.get("filters") or "").strip()
        filters = None
        if raw_filters:
            try:
                filters = json.loads(raw_filters)
            except ValueError:
                raise BadInput(f"{where}: filters must be a JSON object") from None
            if not isinstance(filters, dict):
                raise BadInput(f"{where}: filters must be a JSON object")
        key = (text_query or "", image or "", json.dumps(filters, sort_keys=True) if filters else "")
        judged = queries.setdefault(key, JudgedQuery(text_query, image, filters))
        judged.grades[product] = grade
    if not queries:
        raise BadInput(f"{path} has no judgements")
    return Judgements(list(queries.values()), hashlib.sha256(data).hexdigest())
