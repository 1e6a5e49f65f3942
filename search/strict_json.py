"""The one reader of JSON that comes from outside: request bodies, query-string filters, manifest lines.

Strict means what every later step can store and process:
- no NaN or Infinity (JSON has neither; SQL and the index would turn them into nulls or errors);
- no integer beyond 64 bits (Python refuses over 4,300 digits with a ValueError);
- no lone UTF-16 surrogate in any string or key (UTF-8 cannot encode one, so SQLite, PostgreSQL and the
  tokenizer all fail on it);
- at most ``max_values`` values and ``max_depth`` levels of nesting.

Bounded means the cost is known before anything is built. ``json.loads`` holds the interpreter lock for
the whole parse, and a 58 MB body of 5.5 million tiny values builds 16 million objects first: every
other thread, the server's event loop included, stops for tens of seconds. So the bytes are counted
first, in C: a document has at most one value per comma, plus one per ``[`` or ``{``, plus one. Only
when that bound is over the limit are the strings (whose commas do not count) cut out, by one regular
expression, and the structure counted again. 58 MB take about 0.2 s either way; then the parse builds at
most ``max_values`` values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from search.errors import BadInput, TooLarge

INT_LIMIT = 2**63  # what SQL integers and JSON readers elsewhere agree on
# A JSON string literal, escapes included ("unrolled" so that it never backtracks).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True)
class JsonLimits:
    max_values: int = 200_000  # VITRINE_MAX_JSON_VALUES
    max_depth: int = 64


def valid_unicode(text: str) -> bool:
    """False for text with a lone UTF-16 surrogate (``"\\ud800"``), which no database or tokenizer stores.
    The one such check: every text from outside passes it where it enters (this reader, path names)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def value_bound(data: bytes) -> int:
    """An upper bound on the number of values in the JSON document ``data`` (exact on the structure)."""
    bound = data.count(b",") + data.count(b"[") + data.count(b"{") + 1
    return bound


def parse_json(data: bytes | str, what: str = "request body", limits: JsonLimits | None = None) -> Any:
    """``data`` parsed strictly (see the module docstring); BadInput or TooLarge naming ``what`` if not."""
    limits = limits or JsonLimits()
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not raw.strip():
        raise BadInput(f"{what} is empty")
    if value_bound(raw) > limits.max_values and value_bound(_STRING.sub(b'""', raw)) > limits.max_values:
        raise TooLarge(
            f"{what} has more than {limits.max_values} JSON values (VITRINE_MAX_JSON_VALUES); send less at once"
        )
    try:
        value = json.loads(raw, parse_constant=_reject_constant(what), parse_float=_finite(what))
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply (at most {limits.max_depth} levels)") from None
    except ValueError:  # int() refuses literals of more than 4,300 digits
        raise BadInput(f"{what} has an integer out of range (64-bit at most)") from None
    _check_values(value, what, limits.max_depth)
    return value


def _reject_constant(what: str):  # type: ignore[no-untyped-def]
    def reject(name: str) -> None:
        raise BadInput(f"{what} is not valid JSON: {name} is not a JSON number (numbers must be finite)")

    return reject


def _finite(what: str):  # type: ignore[no-untyped-def]
    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise BadInput(f"{what} has a number out of range (numbers must be finite): {text[:30]}")
        return value

    return finite


def _check_values(value: Any, what: str, max_depth: int) -> None:
    """Integers within 64 bits, strings and keys valid Unicode, nesting within ``max_depth``."""
    # Iterative: the parser already bounds nesting, a recursive walk would hit the limit again.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not valid_unicode(item):
                raise BadInput(_SURROGATE.format(what=what))
        elif isinstance(item, list | dict):
            if depth > max_depth:
                raise BadInput(f"{what} is nested too deeply (at most {max_depth} levels)")
            if isinstance(item, dict):
                for key in item:
                    if not valid_unicode(key):
                        raise BadInput(_SURROGATE.format(what=what))
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
        elif type(item) is int and not -INT_LIMIT <= item < INT_LIMIT:
            raise BadInput(f"{what} has an integer out of range (64-bit at most)")


_SURROGATE = "{what} has a lone UTF-16 surrogate (like \\ud800) in a string: not valid Unicode"
