"""The one reader of outside JSON (search/strict_json.py): what it accepts exactly, what it refuses and
with which message, and the value bound it checks before anything is built."""

from __future__ import annotations

import json

import pytest

from search.errors import BadInput, TooLarge
from search.strict_json import INT_LIMIT, JsonLimits, parse_json, valid_unicode, value_bound


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, "x", true, null, {"b": []}]}',
        "[]",
        "0",
        '"\\u00e9t\\u00e9"',
        '{"k": -9223372036854775808}',
    ],
)
def test_valid_documents_read_as_json_loads_reads_them(text):
    assert parse_json(text.encode()) == json.loads(text)
    assert parse_json(text) == json.loads(text)  # a str reads the same as its UTF-8 bytes


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "request body is empty"),
        (b"  \n ", "request body is empty"),
        (
            b"{",
            "request body is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        (b'{"a": NaN}', "request body is not valid JSON: NaN is not a JSON number (numbers must be finite)"),
        (
            b"[-Infinity]",
            "request body is not valid JSON: -Infinity is not a JSON number (numbers must be finite)",
        ),
        (b"[1e999]", "request body has a number out of range (numbers must be finite): 1e999"),
        (b'["\xc3"]', "request body is not UTF-8 JSON"),
        (b"[" + b"1" * 5000 + b"]", "request body has an integer out of range (64-bit at most)"),
        (b"[9223372036854775808]", "request body has an integer out of range (64-bit at most)"),
        (b"[-9223372036854775809]", "request body has an integer out of range (64-bit at most)"),
        (
            b'["\\ud800"]',
            "request body has a lone UTF-16 surrogate (like \\ud800) in a string: not valid Unicode",
        ),
        (
            b'{"\\udfff": 1}',
            "request body has a lone UTF-16 surrogate (like \\ud800) in a string: not valid Unicode",
        ),
    ],
)
def test_refusals_are_bad_input_with_one_clear_message(body, message):
    with pytest.raises(BadInput) as refused:
        parse_json(body)
    assert refused.value.message == message


def test_the_message_names_what_was_read():
    with pytest.raises(BadInput) as refused:
        parse_json(b"", what="filters")
    assert refused.value.message == "filters is empty"


def test_integers_at_the_64_bit_bounds_are_kept():
    assert parse_json(f"[{INT_LIMIT - 1}, {-INT_LIMIT}]") == [INT_LIMIT - 1, -INT_LIMIT]


@pytest.mark.parametrize("depth, ok", [(3, True), (4, False)])
def test_nesting_is_bounded_by_max_depth(depth, ok):
    body = ("[" * depth + "]" * depth).encode()
    if ok:
        assert parse_json(body, limits=JsonLimits(max_depth=3)) == json.loads(body)
    else:
        with pytest.raises(BadInput) as refused:
            parse_json(body, limits=JsonLimits(max_depth=3))
        assert refused.value.message == "request body is nested too deeply (at most 3 levels)"


def test_objects_count_toward_depth_and_their_keys_are_checked():
    with pytest.raises(BadInput, match="nested too deeply"):
        parse_json(b'{"a": {"b": {"c": {}}}}', limits=JsonLimits(max_depth=3))
    assert parse_json(b'{"a": {"b": {"c": 1}}}', limits=JsonLimits(max_depth=3)) == {"a": {"b": {"c": 1}}}


def test_a_parser_recursion_limit_is_the_same_refusal():
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BadInput) as refused:
        parse_json(body, limits=JsonLimits(max_values=10**6))
    assert refused.value.message == "request body is nested too deeply (at most 64 levels)"


def test_value_bound_counts_commas_and_openers_plus_one():
    assert value_bound(b"1") == 1
    assert value_bound(b"[1,2,3]") == 4
    assert value_bound(b'{"a":[1,{}]}') == 5


@pytest.mark.parametrize("count, refused", [(9, False), (10, False), (11, True)])
def test_more_values_than_the_limit_is_too_large(count, refused):
    body = ("[" + ",".join(["0"] * (count - 1)) + "]").encode()  # count values: the list and its items
    limits = JsonLimits(max_values=10)
    if refused:
        with pytest.raises(TooLarge) as too_large:
            parse_json(body, limits=limits)
        assert too_large.value.message == (
            "request body has more than 10 JSON values (VITRINE_MAX_JSON_VALUES); send less at once"
        )
    else:
        assert len(parse_json(body, limits=limits)) == count - 1


def test_commas_inside_strings_do_not_count():
    body = b'["' + b"," * 1000 + b'", "a\\",b"]'
    assert parse_json(body, limits=JsonLimits(max_values=5)) == ["," * 1000, 'a",b']


def test_valid_unicode():
    assert valid_unicode("plain") and valid_unicode("été ☃")
    assert not valid_unicode("\ud800") and not valid_unicode("a\udfffb")


def test_a_str_with_a_lone_surrogate_is_refused_as_bad_input_not_an_encoding_crash():
    with pytest.raises(BadInput) as refused:
        parse_json('["\ud800"]')
    assert "lone UTF-16 surrogate" in refused.value.message


def test_a_body_whose_bound_is_exactly_the_limit_once_strings_are_cut_out_is_read():
    # 5 by the raw count (the comma in the string counts), 3 once the string is cut out: 3 values.
    assert parse_json(b'["a,", 0]', limits=JsonLimits(max_values=3)) == ["a,", 0]


def test_an_infinite_number_is_quoted_in_the_message_cut_at_30_characters():
    text = "1" + "0" * 40 + "e999"
    with pytest.raises(BadInput) as refused:
        parse_json(f"[{text}]")
    assert (
        refused.value.message
        == f"request body has a number out of range (numbers must be finite): {text[:30]}"
    )
