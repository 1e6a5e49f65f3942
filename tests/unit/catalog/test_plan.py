"""The write plan (search/catalog/plan.py) by exact values: every check of a product's fields at its edge
with the message a caller reads, what a PATCH makes of a stored product, which stored images a write
keeps (and so which vectors survive), and exactly what it reports as changed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from search.catalog.plan import (
    ImageSource,
    ProductDraft,
    ProductLimits,
    ProductPatch,
    WritePlan,
    check_external_id,
    describe_changes,
    image_list,
    plan_write,
    trusted_stored_image,
)
from search.catalog.records import ImageRecord, ImageWrite, ProductRecord, ProductWrite
from search.errors import BadInput

MODEL = "model-a"
LIMITS = ProductLimits()
SMALL = ProductLimits(
    max_id_chars=5, max_title_chars=5, max_attributes=2, max_attribute_chars=5, max_images=2
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def refused(call, *args) -> str:
    with pytest.raises(BadInput) as error:
        call(*args)
    return str(error.value)


def image(
    id: int, ref: str, sha: str | None = None, file: str | None = None, model: str = MODEL
) -> ImageRecord:
    return ImageRecord(id, id, ref, file, sha or f"sha-{id}", model)


def stored(
    *images: ImageRecord, title: str | None = "T", category: str | None = "C", **attributes
) -> ProductRecord:
    return ProductRecord(1, "p1", title, category, attributes, tuple(images), 1, NOW, NOW)


# Product ids ----------------------------------------------------------------------------------------------


def test_an_integer_id_is_its_decimal_text():
    assert check_external_id(42, LIMITS) == "42"
    assert check_external_id("a b", LIMITS) == "a b"
    assert check_external_id("...", LIMITS) == "..."


@pytest.mark.parametrize("value", [True, None, "", "   ", 4.5, ["a"]])
def test_an_id_must_be_a_non_empty_string(value):
    assert refused(check_external_id, value, LIMITS) == "product id must be a non-empty string"


def test_an_id_with_whitespace_around_it_is_refused_and_quoted_in_part():
    assert refused(check_external_id, " a", LIMITS) == "product id ' a' must not start or end with whitespace"
    long = "x" * 100 + " "
    assert refused(check_external_id, long, LIMITS) == (
        f"product id {'x' * 80!r} must not start or end with whitespace"
    )


def test_long_ids_are_quoted_in_part():
    long = "x" * 100
    assert refused(check_external_id, long + "/", LIMITS) == (
        f"product id {'x' * 80!r} is invalid: at most 256 characters (VITRINE_MAX_ID_CHARS), "
        "no '/' or control characters"
    )
    assert refused(ProductDraft.from_fields, "p", {"id": long}, LIMITS) == (
        f"body id {'x' * 80!r} differs from the path's 'p'"
    )


def test_an_id_of_exactly_the_limit_is_taken():
    assert check_external_id("abcde", SMALL) == "abcde"


@pytest.mark.parametrize("value", ["abcdef", "a/b", "a\x00", "a\x1fb", "a\x7f", ".", "..", "a\ud800"])
def test_ids_that_cannot_be_a_path_segment_are_refused(value):
    assert refused(check_external_id, value, SMALL) == (
        f"product id {value!r} is invalid: at most 5 characters (VITRINE_MAX_ID_CHARS), "
        "no '/' or control characters"
    )


def test_the_default_limits():
    assert ProductLimits() == ProductLimits(256, 1000, 100, 2000, 32)


# Fields of a whole product ----------------------------------------------------------------------------------


def test_a_draft_keeps_every_non_reserved_key_as_an_attribute():
    draft = ProductDraft.from_fields(
        "p1",
        {"id": "p1", "title": "Mug", "category": "kitchen", "image": "a.png", "color": "red", "size": 3},
        LIMITS,
    )
    assert draft == ProductDraft("p1", "Mug", "kitchen", {"color": "red", "size": 3}, ["a.png"])


def test_fields_left_out_are_cleared_and_empty_texts_are_none():
    assert ProductDraft.from_fields(7, {"title": ""}, LIMITS) == ProductDraft("7", None, None, {}, None)


def test_a_body_id_must_match_the_path():
    assert ProductDraft.from_fields("5", {"id": 5}, LIMITS).external_id == "5"
    assert (
        refused(ProductDraft.from_fields, "a", {"id": "b"}, LIMITS)
        == "body id 'b' differs from the path's 'a'"
    )
    assert refused(ProductPatch.from_fields, "a", {"id": "b", "title": "x"}, LIMITS) == (
        "body id 'b' differs from the path's 'a'"
    )


def test_title_and_category_at_and_over_their_limits():
    assert ProductDraft.from_fields("p", {"title": "12345"}, SMALL).title == "12345"
    assert refused(ProductDraft.from_fields, "p", {"title": "123456"}, SMALL) == (
        "title is 6 characters; the limit is 5 (VITRINE_MAX_TITLE_CHARS)"
    )
    assert ProductDraft.from_fields("p", {"category": "c" * 256}, SMALL).category == "c" * 256
    assert refused(ProductDraft.from_fields, "p", {"category": "c" * 257}, SMALL) == (
        "category is 257 characters; the limit is 256"
    )
    assert refused(ProductDraft.from_fields, "p", {"title": 5}, SMALL) == "title must be a string"
    assert refused(ProductDraft.from_fields, "p", {"category": ["a"]}, SMALL) == "category must be a string"


def test_attribute_names_are_1_to_256_characters():
    assert ProductDraft.from_fields("p", {"k" * 256: 1}, LIMITS).attributes == {"k" * 256: 1}
    assert refused(ProductDraft.from_fields, "p", {"k" * 257: 1}, LIMITS) == (
        f"attribute name {'k' * 80!r} must be 1 to 256 characters"
    )
    assert (
        refused(ProductDraft.from_fields, "p", {"": 1}, LIMITS)
        == "attribute name '' must be 1 to 256 characters"
    )
    assert (
        refused(ProductDraft.from_fields, "p", {3: 1}, LIMITS)
        == "attribute name '3' must be 1 to 256 characters"
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"x"])
def test_attribute_values_must_be_strict_json(value):
    assert refused(ProductDraft.from_fields, "p", {"k": value}, LIMITS) == (
        "attribute 'k' must be JSON: text, a finite number, true/false, null, lists or objects"
    )


def test_an_attribute_nested_past_the_recursion_limit_is_refused_not_a_crash():
    value: list = []
    for _ in range(5000):
        value = [value]
    assert refused(ProductDraft.from_fields, "p", {"k": value}, LIMITS).startswith(
        "attribute 'k' must be JSON"
    )


def test_an_attributes_size_is_counted_in_characters_of_its_json():
    # '"éé"' is 4 characters (not 6 bytes, not '"\\u00e9\\u00e9"').
    assert ProductDraft.from_fields("p", {"k": "ééé"}, SMALL).attributes == {"k": "ééé"}
    assert refused(ProductDraft.from_fields, "p", {"k": "éééé"}, SMALL) == (
        "attribute 'k' is 6 characters as JSON; the limit is 5 (VITRINE_MAX_ATTRIBUTE_CHARS)"
    )


def test_long_attribute_names_are_quoted_in_part():
    key = "k" * 100
    assert refused(ProductDraft.from_fields, "p", {key: float("nan")}, LIMITS) == (
        f"attribute {'k' * 80!r} must be JSON: text, a finite number, true/false, null, lists or objects"
    )
    assert refused(ProductDraft.from_fields, "p", {key: "x" * 10}, SMALL) == (
        f"attribute {'k' * 80!r} is 12 characters as JSON; the limit is 5 (VITRINE_MAX_ATTRIBUTE_CHARS)"
    )


def test_attribute_count_at_and_over_the_limit():
    assert len(ProductDraft.from_fields("p", {"a": 1, "b": 2, "title": "t"}, SMALL).attributes) == 2
    assert refused(ProductDraft.from_fields, "p", {"a": 1, "b": 2, "c": 3}, SMALL) == (
        "3 attributes; the limit is 2 (VITRINE_MAX_ATTRIBUTES)"
    )


# Images of a body or row ------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", [{}, {"image": None}, {"images": None, "image": None}, {"title": "x"}])
def test_no_image_key_keeps_the_stored_pictures(row):
    assert image_list(row, LIMITS) is None


def test_image_and_images_are_one_list_image_first_values_trimmed():
    assert image_list({"image": " a.png "}, LIMITS) == ["a.png"]
    assert image_list({"image": ["a", "b"]}, LIMITS) == ["a", "b"]
    assert image_list({"images": ["b", "c"], "image": "a"}, LIMITS) == ["a", "b", "c"]


def test_an_empty_image_list_is_refused():
    assert refused(image_list, {"images": []}, LIMITS) == "images must name at least one image"


def test_image_count_at_and_over_the_limit():
    assert image_list({"images": ["a", "b"]}, SMALL) == ["a", "b"]
    assert refused(image_list, {"image": "a", "images": ["b", "c"]}, SMALL) == (
        "a product has at most 2 images, not 3"
    )


@pytest.mark.parametrize("bad", [" ", "", 5, None, ["x"]])
def test_each_image_must_be_a_non_empty_string_named_by_position(bad):
    assert refused(image_list, {"images": ["a", bad]}, LIMITS) == (
        "images[1] must be a non-empty string (URL, path, base64 or data URI)"
    )


# PATCH ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"id": "p1"}])
def test_a_patch_must_name_a_field(body):
    assert refused(ProductPatch.from_fields, "p1", body, LIMITS) == "PATCH body names no field to change"


def test_a_patch_holds_only_what_it_names():
    patch = ProductPatch.from_fields(
        "p1", {"id": "p1", "category": None, "color": "blue", "old": None, "images": ["x.png"]}, LIMITS
    )
    assert patch == ProductPatch("p1", {"category": None}, {"color": "blue"}, ("old",), ["x.png"])
    patch = ProductPatch.from_fields("p1", {"title": "New", "image": None}, LIMITS)
    assert patch == ProductPatch("p1", {"title": "New"}, {}, (), None)


def test_a_patch_checks_its_fields():
    assert refused(ProductPatch.from_fields, "p1", {"title": "123456"}, SMALL) == (
        "title is 6 characters; the limit is 5 (VITRINE_MAX_TITLE_CHARS)"
    )
    assert refused(ProductPatch.from_fields, "p1", {"category": "c" * 257}, SMALL) == (
        "category is 257 characters; the limit is 256"
    )
    assert refused(ProductPatch.from_fields, "p1", {"k": "éééé"}, SMALL).startswith("attribute 'k' is 6")
    assert refused(ProductPatch.from_fields, "p1", {"a": 1, "b": 2, "c": 3, "d": None}, SMALL) == (
        "3 attributes; the limit is 2 (VITRINE_MAX_ATTRIBUTES)"
    )
    # Removals do not count against the limit.
    assert ProductPatch.from_fields("p1", {"a": 1, "b": 2, "c": None}, SMALL).removed_attributes == ("c",)
    assert refused(ProductPatch.from_fields, "p1/", {"a": 1}, SMALL).startswith("product id 'p1/' is invalid")


def test_a_patch_applied_merges_attributes_and_keeps_what_it_does_not_name():
    record = stored(image(1, "a.png"), title="Old", category="kitchen", color="red", size=3)
    patch = ProductPatch.from_fields("p1", {"color": "blue", "size": None, "new": True}, LIMITS)
    assert patch.apply(record, LIMITS) == ProductDraft(
        "p1", "Old", "kitchen", {"color": "blue", "new": True}, None
    )
    patch = ProductPatch.from_fields("p1", {"title": None, "category": "bath", "images": ["b.png"]}, LIMITS)
    assert patch.apply(record, LIMITS) == ProductDraft(
        "p1", None, "bath", {"color": "red", "size": 3}, ["b.png"]
    )


def test_a_patch_that_grows_a_product_past_the_attribute_limit_is_refused():
    record = stored(image(1, "a.png"), a=1, b=2)
    patch = ProductPatch.from_fields("p1", {"c": 3}, SMALL)
    assert refused(patch.apply, record, SMALL) == "3 attributes; the limit is 2 (VITRINE_MAX_ATTRIBUTES)"
    swap = ProductPatch.from_fields("p1", {"c": 3, "a": None}, SMALL)
    assert swap.apply(record, SMALL).attributes == {"b": 2, "c": 3}


# Which stored image a reference is, unread ------------------------------------------------------------------


def test_an_unchanged_url_of_the_same_model_is_trusted_without_reading():
    first, second = image(1, "http://x/a.png"), image(2, "http://x/a.png")
    record = stored(image(0, "http://x/a.png", model="other"), first, second)
    assert trusted_stored_image("http://x/a.png", record, MODEL, refetch=False) is first
    assert trusted_stored_image("HTTPS://x/b.png", record, MODEL, refetch=False) is None


def test_a_ref_must_be_read_when_refetching_new_local_or_of_another_model():
    record = stored(image(1, "http://x/a.png"), image(2, "a.png"))
    assert trusted_stored_image("http://x/a.png", record, MODEL, refetch=True) is None
    assert trusted_stored_image("http://x/a.png", None, MODEL, refetch=False) is None
    assert trusted_stored_image("a.png", record, MODEL, refetch=False) is None
    assert trusted_stored_image("http://x/a.png", record, "model-b", refetch=False) is None


# Planning ---------------------------------------------------------------------------------------------------


def draft(images: list[str] | None = None, title: str | None = "T", category: str | None = "C", **attributes):
    return ProductDraft("p1", title, category, attributes, images)


def source(ref: str, sha: str | None = None, file: str | None = None, keep: ImageRecord | None = None):
    return ImageSource(ref, sha, file, keep)


@pytest.mark.parametrize("sources", [None, []])
def test_a_new_product_needs_an_image(sources):
    assert refused(plan_write, draft(), None, sources, MODEL) == "image is required for a new product"


def test_a_new_product_embeds_every_image_and_reports_every_field():
    plan = plan_write(
        draft(["a.png", "http://x/b.png"], color="red"),
        None,
        [source("upload", "s1", "f1"), source("http://x/b.png", "s2")],
        MODEL,
    )
    assert plan == WritePlan(
        "created",
        ProductWrite(
            "p1",
            "T",
            "C",
            {"color": "red"},
            [
                ImageWrite("upload", "s1", "f1", embedding_model=MODEL),
                ImageWrite("http://x/b.png", "s2", None, embedding_model=MODEL),
            ],
        ),
        [0, 1],
        {
            "title": {"from": None, "to": "T"},
            "category": {"from": None, "to": "C"},
            "attributes.color": {"from": None, "to": "red"},
            "images": {"added": ["upload", "http://x/b.png"], "removed": [], "kept": 0},
        },
    )


def test_the_same_product_again_is_unchanged_and_writes_nothing():
    record = stored(image(1, "upload", "s1", "f1"), image(2, "http://x/b.png", "s2"), color="red")
    sources = [source("upload", "s1", "f1"), source("http://x/b.png", keep=record.images[1])]
    assert plan_write(draft(["a.png", "http://x/b.png"], color="red"), record, sources, MODEL) == WritePlan(
        "unchanged", None, [], {}
    )
    assert plan_write(draft(None, color="red"), record, None, MODEL) == WritePlan("unchanged", None, [], {})


def test_a_field_change_without_images_is_metadata_only():
    record = stored(image(1, "a.png"), color="red", size=3)
    plan = plan_write(draft(None, title="New", color="red", size=4), record, None, MODEL)
    assert plan.kind == "metadata"
    assert plan.embed == []
    assert plan.write == ProductWrite("p1", "New", "C", {"color": "red", "size": 4}, None)
    assert plan.changes == {"title": {"from": "T", "to": "New"}, "attributes.size": {"from": 3, "to": 4}}


def test_a_picture_with_a_stored_pictures_content_keeps_its_vector_and_stored_file():
    record = stored(image(1, "old.png", "s1", "stored-1.png"))
    # Read again under another name, with no copy of its own: the stored copy stays.
    plan = plan_write(draft(["new.png"]), record, [source("upload", "s1", None)], MODEL)
    assert plan.kind == "metadata"
    assert plan.embed == []
    assert plan.write.images == [ImageWrite("upload", "s1", "stored-1.png", embedding_model=MODEL, keep_id=1)]
    assert plan.changes == {"images": {"added": [], "removed": [], "kept": 1}}


def test_a_kept_picture_with_a_copy_of_its_own_takes_it():
    record = stored(image(1, "old.png", "s1", "stored-1.png"))
    plan = plan_write(draft(["new.png"]), record, [source("upload", "s1", "fresh.png")], MODEL)
    assert plan.write.images == [ImageWrite("upload", "s1", "fresh.png", embedding_model=MODEL, keep_id=1)]


def test_a_trusted_stored_image_takes_its_hash_and_file():
    record = stored(image(1, "http://x/a.png", "s1", None), image(2, "b.png", "s2", "f2"))
    plan = plan_write(draft(["b.png"]), record, [source("b.png", keep=record.images[1])], MODEL)
    assert plan.write.images == [ImageWrite("b.png", "s2", "f2", embedding_model=MODEL, keep_id=2)]
    assert plan.kind == "updated"  # image 1 is dropped: its vector leaves the index
    assert plan.changes == {"images": {"added": [], "removed": ["http://x/a.png"], "kept": 1}}


def test_a_stored_picture_of_another_model_or_without_a_hash_is_embedded_again():
    record = stored(image(1, "a.png", "s1", model="model-b"), ImageRecord(2, 1, "b.png", None, None, MODEL))
    plan = plan_write(draft(["a", "b"]), record, [source("a.png", "s1"), source("b.png", None)], MODEL)
    assert plan.kind == "updated"
    assert plan.embed == [0, 1]
    assert [i.keep_id for i in plan.write.images] == [None, None]
    assert plan.changes["images"] == {"added": ["a.png", "b.png"], "removed": ["a.png", "b.png"], "kept": 0}


def test_the_same_picture_twice_is_one_kept_image_and_one_new():
    record = stored(image(1, "a.png", "s1"))
    plan = plan_write(draft(["a", "a2"]), record, [source("a.png", "s1"), source("a2.png", "s1")], MODEL)
    assert [i.keep_id for i in plan.write.images] == [1, None]
    assert plan.embed == [1]
    assert plan.kind == "updated"
    trusted = plan_write(
        draft(["a", "a"]),
        record,
        [source("a.png", keep=record.images[0]), source("a.png", keep=record.images[0])],
        MODEL,
    )
    assert [i.keep_id for i in trusted.write.images] == [1, None]
    assert trusted.embed == [1]
    assert trusted.write.images[1].image_sha256 is None  # not read: its vector must be computed anew


def test_reordering_pictures_is_a_metadata_change():
    record = stored(image(1, "a.png", "s1"), image(2, "b.png", "s2"))
    plan = plan_write(draft(["b", "a"]), record, [source("b.png", "s2"), source("a.png", "s1")], MODEL)
    assert plan.kind == "metadata"
    assert [i.keep_id for i in plan.write.images] == [2, 1]
    assert plan.changes == {"images": {"added": [], "removed": [], "kept": 2}}


def test_a_renamed_reference_of_a_kept_picture_is_a_metadata_change():
    record = stored(image(1, "http://x/a.png", "s1"))
    plan = plan_write(draft(["http://y/a.png"]), record, [source("http://y/a.png", "s1")], MODEL)
    assert plan.kind == "metadata"
    assert plan.changes == {"images": {"added": [], "removed": [], "kept": 1}}


def test_adding_a_picture_embeds_only_it():
    record = stored(image(1, "a.png", "s1"))
    plan = plan_write(draft(["a", "c"]), record, [source("a.png", "s1"), source("c.png", "s3")], MODEL)
    assert plan.kind == "updated"
    assert plan.embed == [1]
    assert plan.changes == {"images": {"added": ["c.png"], "removed": [], "kept": 1}}


# What a write reports as changed ----------------------------------------------------------------------------


def test_attribute_changes_name_each_key_in_order():
    record = stored(a=1, b=None, c="same", d=[1])
    write = ProductWrite("p1", "T", "C", {"c": "same", "d": [1, 2], "e": None, "a": 2})
    assert describe_changes(record, write) == {
        "attributes.a": {"from": 1, "to": 2},
        "attributes.b": {"from": None, "to": None},  # a null attribute removed is a change
        "attributes.d": {"from": [1], "to": [1, 2]},
        "attributes.e": {"from": None, "to": None},  # a null attribute added is one too
    }
    assert list(describe_changes(record, write)) == [
        "attributes.a",
        "attributes.b",
        "attributes.d",
        "attributes.e",
    ]


def test_title_and_category_changes_both_ways():
    record = stored(title=None, category="C")
    write = ProductWrite("p1", "T", None, {})
    assert describe_changes(record, write) == {
        "title": {"from": None, "to": "T"},
        "category": {"from": "C", "to": None},
    }


def test_a_changed_stored_file_of_a_kept_picture_is_reported():
    record = stored(image(1, "upload", "s1", "f1"))
    write = ProductWrite("p1", "T", "C", {}, [ImageWrite("upload", "s1", "f2", keep_id=1)])
    assert describe_changes(record, write) == {"images": {"added": [], "removed": [], "kept": 1}}
    same = ProductWrite("p1", "T", "C", {}, [ImageWrite("upload", "s1", "f1", keep_id=1)])
    assert describe_changes(record, same) == {}


def test_a_stored_image_taken_unread_is_not_given_to_a_read_copy_of_it():
    # Found while pinning the writer for mutation testing: the read copy (position 0) took image 1 by its hash, so the unread URL
    # (position 1) had to be embedded with no pixels, and the indexer's write failed.
    record = stored(image(1, "http://x/a.png", "s1"))
    sources = [source("upload", "s1", "f1"), source("http://x/a.png", keep=record.images[0])]
    plan = plan_write(draft(["a", "http://x/a.png"]), record, sources, MODEL)
    assert [i.keep_id for i in plan.write.images] == [None, 1]
    assert plan.embed == [0]
    assert plan.kind == "updated"
