"""The taxonomy: which attributes the model tags, their values (with synonyms), the prompts that describe
a value, single- or multi-label, and each attribute's threshold. Parsed and checked here, once: a
malformed document is a BadInput that names the attribute at fault.

    {"attributes": {"color": {"values": ["red", {"value": "navy", "synonyms": ["dark blue"]}],
                              "prompts": ["a photo of a {} product"], "multi_label": false,
                              "min_score": 0.5}}}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from search.errors import BadInput

DEFAULT_PROMPTS = ("a photo of a {} product",)
DEFAULT_MIN_SCORE = 0.5
MAX_ATTRIBUTES = 50
MAX_VALUES = 1000  # per attribute
MAX_PROMPTS = 32  # per attribute
MAX_SYNONYMS = 16  # per value
NAME_CHARS = 256  # as an attribute key (schema.py)
VALUE_CHARS = 512  # as an attribute value (schema.py)
PROMPT_CHARS = 500
EXAMPLE = '{"attributes": {"color": {"values": ["red", "blue"], "prompts": ["a photo of a {} product"]}}}'


@dataclass(frozen=True)
class TagValue:
    value: str
    synonyms: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The value and its synonyms: each is put into every prompt."""
        return (self.value, *self.synonyms)

    def as_json(self) -> str | dict[str, Any]:
        return {"value": self.value, "synonyms": list(self.synonyms)} if self.synonyms else self.value


@dataclass(frozen=True)
class TagAttribute:
    name: str
    values: tuple[TagValue, ...]
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    multi_label: bool = False
    min_score: float = DEFAULT_MIN_SCORE

    @property
    def value_names(self) -> list[str]:
        return [value.value for value in self.values]

    def prompt_pairs(self, value: TagValue) -> list[tuple[str, str]]:
        """(prompt, name) of every text whose embedding makes ``value``'s: each prompt with the value
        and with each synonym."""
        return [(prompt, name) for name in value.names for prompt in self.prompts]

    def as_json(self) -> dict[str, Any]:
        return {
            "values": [value.as_json() for value in self.values],
            "prompts": list(self.prompts),
            "multi_label": self.multi_label,
            "min_score": self.min_score,
        }


@dataclass(frozen=True)
class Taxonomy:
    attributes: tuple[TagAttribute, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.attributes)

    def get(self, name: str) -> TagAttribute | None:
        return next((attribute for attribute in self.attributes if attribute.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {"attributes": {attribute.name: attribute.as_json() for attribute in self.attributes}}

    def with_attribute(self, attribute: TagAttribute) -> Taxonomy:
        """This taxonomy with ``attribute`` added, or replacing the one of the same name."""
        others = [item for item in self.attributes if item.name != attribute.name]
        return Taxonomy((*others, attribute))

    def with_thresholds(self, thresholds: Mapping[str, float]) -> Taxonomy:
        """This taxonomy with new ``min_score``s for the named attributes."""
        return Taxonomy(
            tuple(
                TagAttribute(a.name, a.values, a.prompts, a.multi_label, thresholds[a.name])
                if a.name in thresholds
                else a
                for a in self.attributes
            )
        )

    @classmethod
    def parse(cls, document: object) -> Taxonomy:
        if not isinstance(document, dict) or not isinstance(document.get("attributes"), dict):
            raise BadInput(f"a taxonomy is an object with an attributes object, like {EXAMPLE}")
        unknown = sorted(set(document) - {"attributes"})
        if unknown:
            raise BadInput(f"taxonomy: unknown key {unknown[0]!r}; it has only attributes")
        attributes = document["attributes"]
        if len(attributes) > MAX_ATTRIBUTES:
            raise BadInput(f"taxonomy has {len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}")
        return cls(tuple(_attribute(str(name), spec) for name, spec in attributes.items()))


def attribute_from_values(name: str, values: Iterable[str]) -> TagAttribute:
    """An attribute whose values are the given ones (e.g. the distinct values a catalog already has),
    with the default prompt and threshold."""
    return _attribute(name, {"values": sorted(set(values))})


def _attribute(name: str, spec: object) -> TagAttribute:
    where = f"taxonomy attribute {name[:80]!r}"
    if not name or len(name) > NAME_CHARS:
        raise BadInput(f"{where}: a name must be 1 to {NAME_CHARS} characters")
    if not isinstance(spec, dict):
        raise BadInput(f"{where} must be an object with values (and prompts, multi_label, min_score)")
    unknown = sorted(set(spec) - {"values", "prompts", "multi_label", "min_score"})
    if unknown:
        raise BadInput(f"{where}: unknown key {unknown[0]!r}")
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise BadInput(f"{where}: values must be a non-empty list")
    if len(values) > MAX_VALUES:
        raise BadInput(f"{where} has {len(values)} values; the limit is {MAX_VALUES}")
    parsed = tuple(_value(where, i, item) for i, item in enumerate(values))
    seen: set[str] = set()
    for value in parsed:
        if value.value in seen:
            raise BadInput(f"{where}: value {value.value[:80]!r} is listed twice")
        seen.add(value.value)
    prompts = spec.get("prompts", list(DEFAULT_PROMPTS))
    if not isinstance(prompts, list) or not prompts or len(prompts) > MAX_PROMPTS:
        raise BadInput(f"{where}: prompts must be a list of 1 to {MAX_PROMPTS} texts")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or "{}" not in prompt or len(prompt) > PROMPT_CHARS:
            raise BadInput(
                f'{where}: prompts[{i}] must be a text of at most {PROMPT_CHARS} characters with "{{}}" '
                "where the value goes"
            )
    multi_label = spec.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise BadInput(f"{where}: multi_label must be true or false")
    min_score = spec.get("min_score", DEFAULT_MIN_SCORE)
    if (
        isinstance(min_score, bool)
        or not isinstance(min_score, int | float)
        or not math.isfinite(min_score)
        or not 0 <= min_score <= 1
    ):
        raise BadInput(f"{where}: min_score must be a number from 0 to 1")
    if not multi_label and len(parsed) < 2:
        raise BadInput(f"{where}: a single-label attribute needs at least two values to choose from")
    return TagAttribute(name, parsed, tuple(prompts), multi_label, float(min_score))


def _value(where: str, index: int, item: object) -> TagValue:
    at = f"{where}: values[{index}]"
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"value", "synonyms"})
        if unknown:
            raise BadInput(f"{at}: unknown key {unknown[0]!r}; a value object has value and synonyms")
        synonyms = item.get("synonyms", [])
        if not isinstance(synonyms, list) or len(synonyms) > MAX_SYNONYMS:
            raise BadInput(f"{at}: synonyms must be a list of at most {MAX_SYNONYMS} texts")
        return TagValue(_text(at, item.get("value")), tuple(_text(f"{at}.synonyms", s) for s in synonyms))
    return TagValue(_text(at, item))


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > VALUE_CHARS:
        raise BadInput(f"{where} must be a non-empty text of at most {VALUE_CHARS} characters")
    return value
