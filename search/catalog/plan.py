"""What a product write asks for, checked once, and what it does: skip, update metadata, or (re-)embed.

Every write starts as a value of this module, built by the one validation pass for product fields:
- ``ProductDraft``: the whole product (a PUT body, a manifest row, an imported row);
- ``ProductPatch``: some fields of a stored product (a PATCH body), applied under the product's lock.

``plan_write`` compares a draft with what is stored and says which images can keep their vectors, which
must be embedded and exactly which fields change. The API, ``indexer add``, ``indexer import`` and
``indexer reembed`` all write through ``search.catalog.writer``, which plans here, so none of them can
disagree about when a product is "unchanged" or what a limit is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search.catalog.records import ImageRecord, ImageWrite, ProductRecord, ProductWrite
from search.errors import BadInput
from search.images.loader import is_url
from search.strict_json import valid_unicode

_BAD_ID = re.compile(r"[/\x00-\x1f\x7f]")
RESERVED_FIELDS = ("id", "image", "images", "title", "category")
# The database's column sizes (schema.py): a category is indexed, an attribute key is part of a key.
CATEGORY_CHARS = 256
ATTRIBUTE_KEY_CHARS = 256
ID_CHARS = 256


@dataclass(frozen=True)
class ProductLimits:
    """Size caps on what one product may store (VITRINE_MAX_ID_CHARS, _TITLE_CHARS, _ATTRIBUTES, ...)."""

    max_id_chars: int = ID_CHARS
    max_title_chars: int = 1000
    max_attributes: int = 100
    max_attribute_chars: int = 2000  # one attribute's value, as JSON text
    max_images: int = 32


def check_external_id(value: object, limits: ProductLimits) -> str:
    """Product ids are path segments of the API: non-empty, at most ``max_id_chars`` characters, no '/'."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadInput("product id must be a non-empty string")
    if value != value.strip():
        raise BadInput(f"product id {value[:80]!r} must not start or end with whitespace")
    if (
        len(value) > limits.max_id_chars
        or _BAD_ID.search(value)
        or value in (".", "..")
        or not valid_unicode(value)
    ):
        raise BadInput(
            f"product id {value[:80]!r} is invalid: at most {limits.max_id_chars} characters "
            "(VITRINE_MAX_ID_CHARS), no '/' or control characters"
        )
    return value


def _check_text_field(name: str, value: object, limit: int, setting: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string")
    if len(value) > limit:
        where = f" ({setting})" if setting else ""
        raise BadInput(f"{name} is {len(value)} characters; the limit is {limit}{where}")
    return value or None


def _check_attribute(key: object, value: object, max_chars: int) -> None:
    if not isinstance(key, str) or not key or len(key) > ATTRIBUTE_KEY_CHARS:
        raise BadInput(f"attribute name {str(key)[:80]!r} must be 1 to {ATTRIBUTE_KEY_CHARS} characters")
    try:
        # What the JSON column will hold: strict (no NaN/Infinity).
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        raise BadInput(
            f"attribute {key[:80]!r} must be JSON: text, a finite number, true/false, null, lists or objects"
        ) from None
    if len(text) > max_chars:
        raise BadInput(
            f"attribute {key[:80]!r} is {len(text)} characters as JSON; the limit is {max_chars} "
            "(VITRINE_MAX_ATTRIBUTE_CHARS)"
        )


def _check_attribute_count(count: int, limits: ProductLimits) -> None:
    if count > limits.max_attributes:
        raise BadInput(f"{count} attributes; the limit is {limits.max_attributes} (VITRINE_MAX_ATTRIBUTES)")


def image_list(row: Mapping[str, Any], limits: ProductLimits) -> list[str] | None:
    """The pictures a body or row names: ``image`` (one, or a list) and/or ``images`` (a list)."""
    given = [row[key] for key in ("image", "images") if row.get(key) is not None]
    if not given:
        return None
    values: list[object] = []
    for item in given:
        values += item if isinstance(item, list) else [item]
    if not values:
        raise BadInput("images must name at least one image")
    if len(values) > limits.max_images:
        raise BadInput(f"a product has at most {limits.max_images} images, not {len(values)}")
    for position, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"images[{position}] must be a non-empty string (URL, path, base64 or data URI)")
    return [value.strip() for value in values]  # type: ignore[union-attr]


def _check_body_id(external_id: str, fields: Mapping[str, Any]) -> None:
    if "id" in fields and str(fields["id"]) != external_id:
        raise BadInput(f"body id {str(fields['id'])[:80]!r} differs from the path's {external_id!r}")


@dataclass
class ProductDraft:
    """What a write asks for: the whole product. ``images`` None keeps the stored pictures."""

    external_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    images: list[str] | None = None

    @classmethod
    def from_fields(
        cls, external_id: object, fields: Mapping[str, Any], limits: ProductLimits
    ) -> ProductDraft:
        """A PUT body, manifest row or imported row (fields left out are cleared; every key that is not
        id, image, images, title or category is an attribute). Every field is checked here, before
        anything is read or written: a value the database would refuse or change (NaN, an oversized
        text) is refused now rather than failing or turning into a null later."""
        external_id = check_external_id(external_id, limits)
        _check_body_id(external_id, fields)
        attributes = {key: value for key, value in fields.items() if key not in RESERVED_FIELDS}
        _check_attribute_count(len(attributes), limits)
        for key, value in attributes.items():
            _check_attribute(key, value, limits.max_attribute_chars)
        return cls(
            external_id,
            title=_check_text_field(
                "title", fields.get("title"), limits.max_title_chars, "VITRINE_MAX_TITLE_CHARS"
            ),
            category=_check_text_field("category", fields.get("category"), CATEGORY_CHARS, None),
            attributes=attributes,
            images=image_list(fields, limits),
        )


@dataclass(frozen=True)
class ProductPatch:
    """Some fields of a stored product: title / category (None clears), attributes to set, attributes
    to remove (given as null), images (None keeps them)."""

    external_id: str
    fields: dict[str, str | None]
    set_attributes: dict[str, Any]
    removed_attributes: tuple[str, ...]
    images: list[str] | None

    @classmethod
    def from_fields(
        cls, external_id: object, changes: Mapping[str, Any], limits: ProductLimits
    ) -> ProductPatch:
        external_id = check_external_id(external_id, limits)
        _check_body_id(external_id, changes)
        if not any(key != "id" for key in changes):
            raise BadInput("PATCH body names no field to change")
        fields: dict[str, str | None] = {}
        if "title" in changes:
            fields["title"] = _check_text_field(
                "title", changes["title"], limits.max_title_chars, "VITRINE_MAX_TITLE_CHARS"
            )
        if "category" in changes:
            fields["category"] = _check_text_field("category", changes["category"], CATEGORY_CHARS, None)
        set_attributes = {}
        removed = []
        for key, value in changes.items():
            if key in RESERVED_FIELDS:
                continue
            if value is None:
                removed.append(key)
            else:
                _check_attribute(key, value, limits.max_attribute_chars)
                set_attributes[key] = value
        _check_attribute_count(len(set_attributes), limits)
        return cls(external_id, fields, set_attributes, tuple(removed), image_list(changes, limits))

    def apply(self, stored: ProductRecord, limits: ProductLimits) -> ProductDraft:
        """The whole product this patch makes of ``stored`` (attribute keys merge; null removes)."""
        attributes = {
            key: value for key, value in stored.attributes.items() if key not in self.removed_attributes
        }
        attributes.update(self.set_attributes)
        _check_attribute_count(len(attributes), limits)
        return ProductDraft(
            self.external_id,
            title=self.fields.get("title", stored.title),
            category=self.fields.get("category", stored.category),
            attributes=attributes,
            images=self.images,
        )


@dataclass
class ImageSource:
    """One picture of a draft once read: its content hash and stored copy, or a stored image it is."""

    image_ref: str
    image_sha256: str | None = None
    image_file: str | None = None
    stored: ImageRecord | None = None  # the stored image this picture is: its vector is kept


@dataclass
class WritePlan:
    """What a write does. ``kind``: created | updated (vectors change) | metadata | unchanged."""

    kind: str
    write: ProductWrite | None
    embed: list[int]  # positions in ``write.images`` that need a new vector
    changes: dict[str, Any]


def trusted_stored_image(
    ref: str, stored: ProductRecord | None, model: str, refetch: bool
) -> ImageRecord | None:
    """The stored image that ``ref`` can be taken to be without reading it: an unchanged URL embedded by
    the same model (``refetch`` downloads it to compare instead). None: ``ref`` must be read."""
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
        # A stored image a source was taken to be without reading it is that source's: a read picture
        # of the same content elsewhere in the list does not take it first (its pixels are at hand).
        claimed = {source.stored.id for source in sources if source.stored is not None}
        for sha, image in list(reusable.items()):
            if image.id in claimed:
                del reusable[sha]
        used: set[int] = set()
        for source in sources:
            keep = source.stored or reusable.get(source.image_sha256 or "")
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
