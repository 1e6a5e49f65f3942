"""The one place that decides what a product write does: skip, update metadata, or (re-)embed images.

A PUT, a PATCH and a manifest row all become a ``ProductDraft``; ``plan_write`` compares it with what is
stored and says which images can keep their vectors, which must be read (downloaded or decoded) and
which must be embedded, and exactly which fields change. The indexer and the API both go through it
(see ``search.catalog.writer``), so they cannot disagree about when a product is "unchanged".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from search.catalog.records import ImageRecord, ImageWrite, ProductRecord, ProductWrite
from search.errors import BadInput
from search.images import is_url

if TYPE_CHECKING:
    from search.settings import Settings

_BAD_ID = re.compile(r"[/\x00-\x1f\x7f]")
RESERVED_FIELDS = ("id", "image", "images", "title", "category")
MAX_IMAGES_PER_PRODUCT = 32


@dataclass(frozen=True)
class ProductLimits:
    """Size caps on what one product may store (VITRINE_MAX_ID_CHARS, _TITLE_CHARS, _ATTRIBUTES, ...)."""

    max_id_chars: int = 256
    max_title_chars: int = 1000
    max_attributes: int = 100
    max_attribute_chars: int = 2000  # one attribute's value, as JSON text

    @classmethod
    def from_settings(cls, settings: Settings) -> ProductLimits:
        return cls(
            max_id_chars=settings.max_id_chars,
            max_title_chars=settings.max_title_chars,
            max_attributes=settings.max_attributes,
            max_attribute_chars=settings.max_attribute_chars,
        )


def validate_external_id(value: object, max_chars: int = 256) -> str:
    """Product ids are path segments of the API: non-empty, at most ``max_chars`` characters, no '/'."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadInput("product id must be a non-empty string")
    if value != value.strip():
        raise BadInput(f"product id {value[:80]!r} must not start or end with whitespace")
    if len(value) > max_chars or _BAD_ID.search(value) or value in (".", "..") or not _is_unicode(value):
        raise BadInput(
            f"product id {value[:80]!r} is invalid: at most {max_chars} characters (VITRINE_MAX_ID_CHARS), "
            "no '/' or control characters"
        )
    return value


def _is_unicode(text: str) -> bool:
    """False for text with a lone UTF-16 surrogate, which no database or tokenizer can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_product_fields(row: dict[str, Any], limits: ProductLimits | None = None) -> dict[str, Any]:
    """title, category and attributes of a manifest row or API body (every other key is an attribute).

    Everything is checked here, before any write: a value that the database would refuse or change
    (NaN, a lone surrogate, an oversized text) is a 400 now rather than a 500 or a silent null later.
    """
    limits = limits or ProductLimits()
    title, category = row.get("title"), row.get("category")
    for name, value, limit, setting in (
        ("title", title, limits.max_title_chars, "VITRINE_MAX_TITLE_CHARS"),
        ("category", category, CATEGORY_CHARS, None),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadInput(f"{name} must be a string")
        if len(value) > limit:
            where = f" ({setting})" if setting else ""
            raise BadInput(f"{name} is {len(value)} characters; the limit is {limit}{where}")
        if not _is_unicode(value):
            raise BadInput(f"{name} has a lone UTF-16 surrogate: not valid Unicode")
    attributes = {key: value for key, value in row.items() if key not in RESERVED_FIELDS}
    if len(attributes) > limits.max_attributes:
        raise BadInput(
            f"{len(attributes)} attributes; the limit is {limits.max_attributes} (VITRINE_MAX_ATTRIBUTES)"
        )
    for key, value in attributes.items():
        _check_attribute(key, value, limits.max_attribute_chars)
    return {"title": title or None, "category": category or None, "attributes": attributes}


# The database's column sizes (schema.py): a category is indexed, an attribute key is part of a key.
CATEGORY_CHARS = 256
ATTRIBUTE_KEY_CHARS = 256


def _check_attribute(key: str, value: object, max_chars: int) -> None:
    if not isinstance(key, str) or not key or len(key) > ATTRIBUTE_KEY_CHARS or not _is_unicode(key):
        raise BadInput(
            f"attribute name {str(key)[:80]!r} must be 1 to {ATTRIBUTE_KEY_CHARS} characters of valid Unicode"
        )
    try:
        # What the JSON column will hold: strict (no NaN/Infinity), and encodable as UTF-8.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        raise BadInput(
            f"attribute {key[:80]!r} must be JSON: text, a finite number, true/false, null, lists or objects"
        ) from None
    if len(text) > max_chars:
        raise BadInput(
            f"attribute {key[:80]!r} is {len(text)} characters as JSON; the limit is {max_chars} "
            "(VITRINE_MAX_ATTRIBUTE_CHARS)"
        )


def image_list(row: dict[str, Any]) -> list[str] | None:
    """The pictures a body or row names: ``image`` (one, or a list) and/or ``images`` (a list)."""
    given = [row[key] for key in ("image", "images") if row.get(key) is not None]
    if not given:
        return None
    values: list[object] = []
    for item in given:
        values += item if isinstance(item, list) else [item]
    if not values:
        raise BadInput("images must name at least one image")
    if len(values) > MAX_IMAGES_PER_PRODUCT:
        raise BadInput(f"a product has at most {MAX_IMAGES_PER_PRODUCT} images, not {len(values)}")
    for position, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"images[{position}] must be a non-empty string (URL, path, base64 or data URI)")
    return [value.strip() for value in values]  # type: ignore[union-attr]


@dataclass
class ProductDraft:
    """What a write asks for. ``images`` None keeps the stored pictures."""

    external_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    images: list[str] | None = None

    @classmethod
    def from_row(
        cls, external_id: str, row: dict[str, Any], limits: ProductLimits | None = None
    ) -> ProductDraft:
        """A PUT body or manifest row: the whole product (fields left out are cleared). Every field is
        checked here, before anything is read or written."""
        limits = limits or ProductLimits()
        return cls(
            validate_external_id(external_id, limits.max_id_chars),
            images=image_list(row),
            **parse_product_fields(row, limits),
        )

    def patched(
        self, stored: ProductRecord, changes: dict[str, Any], limits: ProductLimits | None = None
    ) -> ProductDraft:
        """A PATCH: ``stored`` with only the given fields replaced (attribute keys merge; null removes)."""
        limits = limits or ProductLimits()
        fields = parse_product_fields(
            {key: value for key, value in changes.items() if value is not None}, limits
        )
        attributes = dict(stored.attributes)
        for key, value in changes.items():
            if key in RESERVED_FIELDS:
                continue
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        if len(attributes) > limits.max_attributes:
            raise BadInput(
                f"{len(attributes)} attributes; the limit is {limits.max_attributes} (VITRINE_MAX_ATTRIBUTES)"
            )
        return ProductDraft(
            self.external_id,
            title=fields["title"] if "title" in changes else stored.title,
            category=fields["category"] if "category" in changes else stored.category,
            attributes=attributes,
            images=image_list(changes),
        )


@dataclass
class ImageSource:
    """One picture of a draft once read: its content hash and stored copy, or a trusted stored image."""

    image_ref: str
    image_sha256: str | None = None
    image_file: str | None = None
    trusted: ImageRecord | None = None  # same URL and model as stored: not downloaded again


@dataclass
class WritePlan:
    """What a write does. ``kind``: created | updated (vectors change) | metadata | unchanged."""

    kind: str
    write: ProductWrite | None
    embed: list[int]  # positions in ``write.images`` that need a new vector
    changes: dict[str, Any]


def must_read(ref: str, stored: ProductRecord | None, model: str, refetch: bool) -> ImageRecord | None:
    """The stored image that can stand in for ``ref`` without reading it, or None if it must be read:
    an unchanged URL embedded by the same model is trusted (``refetch`` downloads it to compare)."""
    if refetch or stored is None or not is_url(ref):
        return None
    return next((i for i in stored.images if i.image_ref == ref and i.embedding_model == model), None)


def plan_write(
    draft: ProductDraft, stored: ProductRecord | None, sources: list[ImageSource] | None, model: str
) -> WritePlan:
    """Decide the write of ``draft`` over ``stored`` given its read images (None: keep stored ones)."""
    if stored is None and not sources:
        raise BadInput("image is required for a new product")
    write = ProductWrite(draft.external_id, draft.title, draft.category, dict(draft.attributes))
    embed: list[int] = []
    if sources is not None:
        write.images = []
        reusable = {
            image.image_sha256: image
            for image in (stored.images if stored else ())
            if image.image_sha256 and image.embedding_model == model
        }
        used: set[int] = set()
        for source in sources:
            keep = source.trusted or reusable.get(source.image_sha256 or "")
            if keep is not None and keep.id in used:
                keep = None  # the same picture twice: the second one is its own image
            image = ImageWrite(
                source.image_ref,
                source.image_sha256 or (keep.image_sha256 if keep else None),
                source.image_file if source.image_file or keep is None else keep.image_file,
                embedding_model=model,
            )
            if keep is not None:
                image.keep_id = keep.id
                used.add(keep.id)
            else:
                embed.append(len(write.images))
            write.images.append(image)
    changes = describe_changes(stored, write)
    if stored is None:
        return WritePlan("created", write, embed, changes)
    if not changes:
        return WritePlan("unchanged", None, [], {})
    vectors_change = bool(embed) or (
        write.images is not None and {i.keep_id for i in write.images} != {i.id for i in stored.images}
    )
    return WritePlan("updated" if vectors_change else "metadata", write, embed, changes)


def describe_changes(stored: ProductRecord | None, write: ProductWrite) -> dict[str, Any]:
    """Exactly what a write changes: ``{"title": {"from": a, "to": b}, "attributes.color": ...,
    "images": {"added": [...], "removed": [...], "kept": n}}``; empty when nothing does."""
    changes: dict[str, Any] = {}
    before = (
        {"title": None, "category": None}
        if stored is None
        else {"title": stored.title, "category": stored.category}
    )
    for name in ("title", "category"):
        if before[name] != getattr(write, name):
            changes[name] = {"from": before[name], "to": getattr(write, name)}
    old_attributes = stored.attributes if stored else {}
    for key in sorted(set(old_attributes) | set(write.attributes)):
        old, new = old_attributes.get(key), write.attributes.get(key)
        if old != new or (key in old_attributes) != (key in write.attributes):
            changes[f"attributes.{key}"] = {"from": old, "to": new}
    if write.images is not None:
        old_images = stored.images if stored else ()
        kept = {image.keep_id for image in write.images if image.keep_id is not None}
        added = [image.image_ref for image in write.images if image.keep_id is None]
        removed = [image.image_ref for image in old_images if image.id not in kept]
        order_or_refs = [(i.keep_id, i.image_ref, i.image_file) for i in write.images] != [
            (i.id, i.image_ref, i.image_file) for i in old_images
        ]
        if added or removed or order_or_refs:
            changes["images"] = {"added": added, "removed": removed, "kept": len(kept)}
    return changes
