"""Reading a catalog manifest: CSV, JSON Lines, or a folder of images (and its subfolders).

Columns/keys: ``id`` and ``image`` (a URL, or a path relative to the manifest) are required; ``title``
and ``category`` are optional; every other key is kept as an attribute. A product may have several
images: ``image`` holds a JSON list in JSON Lines or ``|``-separated references in CSV, and rows that
share an ``id`` add their images to the first row's product. Every row is checked by the same values
and limits as an API write (``ProductDraft``, the writer's limits). Bad rows become issues with their
line number (a folder's: the file's path); they never stop the rest of the manifest from being read. A
file that cannot be read at all (missing, not UTF-8) is one BadInput.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.summary import RowIssue
from search.catalog.plan import ProductDraft, ProductLimits, check_external_id
from search.errors import BadInput, VitrineError
from search.strict_json import JsonLimits, parse_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
CSV_IMAGE_SEPARATOR = "|"
# csv's default cell limit is 131,072 characters; a longer cell stopped the whole read. Cells are read
# up to this, and the row's checks (title, attribute limits) then refuse what is too long, as a row issue.
CSV_CELL_CHARS = 16 * 1024 * 1024


@dataclass
class ManifestRow:
    where: str  # "line 7", or a folder's file path
    draft: ProductDraft

    @property
    def external_id(self) -> str:
        return self.draft.external_id

    @property
    def images(self) -> list[str]:
        return self.draft.images or []

    @property
    def image(self) -> str:
        return self.images[0]

    @property
    def title(self) -> str | None:
        return self.draft.title

    @property
    def category(self) -> str | None:
        return self.draft.category

    @property
    def attributes(self) -> dict[str, Any]:
        return self.draft.attributes


@dataclass
class Manifest:
    base_dir: Path
    rows: list[ManifestRow]
    issues: list[RowIssue]
    attribute_columns: list[str]
    skipped_files: list[str] = field(default_factory=list)  # a folder's files that are not pictures


def read_manifest(
    path: Path, limits: ProductLimits | None = None, json_limits: JsonLimits | None = None
) -> Manifest:
    """Rows and issues of a manifest file or image folder (checked against ``limits``, the writer's).
    Raises BadInput if it cannot be read at all."""
    limits = limits or ProductLimits()
    json_limits = json_limits or JsonLimits()
    if path.is_dir():
        return _read_folder(path, limits)
    if not path.is_file():
        raise BadInput(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            raw = _read_csv(path)
        elif suffix in (".jsonl", ".ndjson"):
            raw = _read_jsonl(path, json_limits)
        else:
            raise BadInput(f"manifest {path} must be .csv, .jsonl or a folder of images")
    except UnicodeDecodeError as exc:
        raise BadInput(f"manifest {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return _validate(path.parent, raw, limits)


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any] | RowIssue]]:
    out: list[tuple[int, dict[str, Any] | RowIssue]] = []
    previous = csv.field_size_limit()
    csv.field_size_limit(min(CSV_CELL_CHARS, sys.maxsize))
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in ("id", "image") if column not in (reader.fieldnames or [])]
            if missing:
                return [(0, RowIssue("manifest", None, f"missing required column(s): {', '.join(missing)}"))]
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # a cell past CSV_CELL_CHARS, a NUL byte: this row only
                    out.append(
                        (reader.line_num, RowIssue(f"line {reader.line_num}", None, f"unreadable row: {exc}"))
                    )
                    continue
                line = reader.line_num
                if None in row:  # more cells than header columns
                    out.append(
                        (line, RowIssue(f"line {line}", row.get("id"), "more cells than header columns"))
                    )
                    continue
                cells = {key.strip(): (value or "").strip() for key, value in row.items() if key}
                if CSV_IMAGE_SEPARATOR in cells.get("image", ""):
                    cells["image"] = [part.strip() for part in cells["image"].split(CSV_IMAGE_SEPARATOR)]
                out.append((line, cells))
    finally:
        csv.field_size_limit(previous)
    return out


def _read_jsonl(path: Path, json_limits: JsonLimits) -> list[tuple[int, dict[str, Any] | RowIssue]]:
    out: list[tuple[int, dict[str, Any] | RowIssue]] = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = parse_json(text, "the line", json_limits)  # nesting, numbers, surrogates bounded
            except VitrineError as exc:
                out.append((line, RowIssue(f"line {line}", None, exc.message)))
                continue
            if not isinstance(value, dict):
                out.append((line, RowIssue(f"line {line}", None, "each line must be a JSON object")))
                continue
            out.append((line, value))
    return out


def _validate(
    base_dir: Path, raw: list[tuple[int, dict[str, Any] | RowIssue]], limits: ProductLimits
) -> Manifest:
    rows: list[ManifestRow] = []
    issues: list[RowIssue] = []
    first_row: dict[str, ManifestRow] = {}
    extra_columns: dict[str, None] = {}
    for line, item in raw:
        if isinstance(item, RowIssue):
            issues.append(item)
            continue
        where = f"line {line}"
        raw_id = item.get("id")
        if raw_id in (None, ""):
            issues.append(RowIssue(where, None, "missing id"))
            continue
        try:
            if item.get("image") in (None, "", []):
                raise BadInput("missing image")
            draft = ProductDraft.from_fields(raw_id, item, limits)
        except BadInput as exc:
            issues.append(RowIssue(where, str(raw_id)[:256], exc.message))
            continue
        first = first_row.get(draft.external_id)
        if first is not None:
            # A later row of the same product adds images; it may not contradict the first row's fields.
            if _contradicts(first.draft, draft):
                issues.append(
                    RowIssue(
                        where,
                        draft.external_id,
                        f"duplicate id (first at {first.where}) with another title, category or attributes; "
                        "skipped (rows sharing an id may only add images)",
                    )
                )
                continue
            first.draft.images += [image for image in draft.images or [] if image not in first.images]
            continue
        for key in draft.attributes:
            extra_columns.setdefault(key)
        first_row[draft.external_id] = row = ManifestRow(where, draft)
        rows.append(row)
    return Manifest(base_dir, rows, issues, list(extra_columns))


def _contradicts(first: ProductDraft, later: ProductDraft) -> bool:
    """A later row's non-empty title, category or attribute that differs from the first row's."""
    if any(
        getattr(later, name) and getattr(later, name) != getattr(first, name)
        for name in ("title", "category")
    ):
        return True
    return any(
        value not in ("", None) and first.attributes.get(key) != value
        for key, value in later.attributes.items()
    )


def _read_folder(folder: Path, limits: ProductLimits) -> Manifest:
    """Every picture under ``folder``, subfolders included; the id is the file's name without suffix."""
    rows: list[ManifestRow] = []
    issues: list[RowIssue] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(relative)
            continue
        try:
            external_id = check_external_id(path.stem, limits)
        except BadInput as exc:
            issues.append(RowIssue(relative, None, exc.message))
            continue
        if external_id in seen:
            issues.append(RowIssue(relative, external_id, f"the same id as {seen[external_id]}; skipped"))
            continue
        seen[external_id] = relative
        rows.append(ManifestRow(relative, ProductDraft(external_id, images=[relative])))
    return Manifest(folder, rows, issues, [], skipped)
