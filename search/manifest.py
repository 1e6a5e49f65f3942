"""Reading a catalog manifest: CSV, JSON Lines, or a folder of images.

Columns/keys: ``id`` and ``image`` (a URL, or a path relative to the manifest) are required; ``title``
and ``category`` are optional; every other key is kept as an attribute. A product may have several
images: ``image`` holds a JSON list in JSON Lines or ``|``-separated references in CSV, and rows that
share an ``id`` add their images to the first row's product. Bad rows become issues with their line
number; they never stop the rest of the manifest from being read.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.catalog.writes import image_list, parse_product_fields, validate_external_id
from search.errors import BadInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
CSV_IMAGE_SEPARATOR = "|"


@dataclass
class ManifestRow:
    line: int
    external_id: str
    images: list[str]
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return self.images[0]


@dataclass
class ManifestIssue:
    line: int | None
    external_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "manifest"
        who = f" (id {self.external_id})" if self.external_id else ""
        return f"{where}{who}: {self.reason}"


@dataclass
class Manifest:
    base_dir: Path
    rows: list[ManifestRow]
    issues: list[ManifestIssue]
    attribute_columns: list[str]


def read_manifest(path: Path) -> Manifest:
    """Rows and issues of a manifest file or image folder. Raises BadInput if it cannot be read at all."""
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise BadInput(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        raw = _read_jsonl(path)
    else:
        raise BadInput(f"manifest {path} must be .csv, .jsonl or a folder of images")
    return _validate(path.parent, raw)


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any] | ManifestIssue]]:
    out: list[tuple[int, dict[str, Any] | ManifestIssue]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in ("id", "image") if column not in (reader.fieldnames or [])]
        if missing:
            issue = ManifestIssue(None, None, f"missing required column(s): {', '.join(missing)}")
            return [(0, issue)]
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns
                out.append((line, ManifestIssue(line, row.get("id"), "more cells than header columns")))
                continue
            cells = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            if CSV_IMAGE_SEPARATOR in cells.get("image", ""):
                cells["image"] = [part.strip() for part in cells["image"].split(CSV_IMAGE_SEPARATOR)]
            out.append((line, cells))
    return out


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any] | ManifestIssue]]:
    out: list[tuple[int, dict[str, Any] | ManifestIssue]] = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                out.append((line, ManifestIssue(line, None, f"not valid JSON: {exc.msg}")))
                continue
            if not isinstance(value, dict):
                out.append((line, ManifestIssue(line, None, "each line must be a JSON object")))
                continue
            out.append((line, value))
    return out


def _validate(base_dir: Path, raw: list[tuple[int, dict[str, Any] | ManifestIssue]]) -> Manifest:
    rows: list[ManifestRow] = []
    issues: list[ManifestIssue] = []
    first_row: dict[str, ManifestRow] = {}
    extra_columns: dict[str, None] = {}
    for line, item in raw:
        if isinstance(item, ManifestIssue):
            issues.append(item)
            continue
        raw_id = item.get("id")
        if raw_id in (None, ""):
            issues.append(ManifestIssue(line, None, "missing id"))
            continue
        try:
            external_id = validate_external_id(raw_id)
            if item.get("image") in (None, "", []):
                raise BadInput("missing image")
            images = image_list({"image": item["image"]}) or []
            fields = parse_product_fields(item)
        except BadInput as exc:
            issues.append(ManifestIssue(line, str(raw_id), exc.message))
            continue
        first = first_row.get(external_id)
        if first is not None:
            # A later row of the same product adds images; it may not contradict the first row's fields.
            if _contradicts(first, fields):
                issues.append(
                    ManifestIssue(
                        line,
                        external_id,
                        f"duplicate id (first at line {first.line}) with another title, category or attributes; "
                        "skipped (rows sharing an id may only add images)",
                    )
                )
                continue
            first.images += [image for image in images if image not in first.images]
            continue
        for key in fields["attributes"]:
            extra_columns.setdefault(key)
        first_row[external_id] = row = ManifestRow(line, external_id, images, **fields)
        rows.append(row)
    return Manifest(base_dir, rows, issues, list(extra_columns))


def _contradicts(first: ManifestRow, fields: dict[str, Any]) -> bool:
    """A later row's non-empty title, category or attribute that differs from the first row's."""
    if any(fields[name] and fields[name] != getattr(first, name) for name in ("title", "category")):
        return True
    return any(
        value not in ("", None) and first.attributes.get(key) != value
        for key, value in fields["attributes"].items()
    )


def _read_folder(folder: Path) -> Manifest:
    rows: list[ManifestRow] = []
    issues: list[ManifestIssue] = []
    seen: dict[str, str] = {}
    for number, path in enumerate(sorted(folder.iterdir()), start=1):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            external_id = validate_external_id(path.stem)
        except BadInput as exc:
            issues.append(ManifestIssue(None, path.name, exc.message))
            continue
        if external_id in seen:
            issues.append(
                ManifestIssue(
                    None, external_id, f"{path.name} has the same id as {seen[external_id]}; skipped"
                )
            )
            continue
        seen[external_id] = path.name
        rows.append(ManifestRow(number, external_id, [path.name]))
    return Manifest(folder, rows, issues, [])
