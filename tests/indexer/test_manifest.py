"""Reading manifests (CSV, JSON Lines, image folders): bad rows become issues with their line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.manifest import read_manifest
from search.catalog.writer import read_local_image
from search.errors import BadInput
from tests.support.images import encode_png, patterned_image


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_keep_unknown_columns_as_attributes(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "\ufeffid,image,title,category,color,size\n"  # a spreadsheet's byte-order mark
        "a,a.png,Tile A,tile,red,30\n"
        "b,b.png,,,blue,\n",
    )
    read = read_manifest(manifest)
    assert read.issues == []
    assert read.attribute_columns == ["color", "size"]
    assert [(row.where, row.external_id, row.image, row.title, row.category) for row in read.rows] == [
        ("line 2", "a", "a.png", "Tile A", "tile"),
        ("line 3", "b", "b.png", None, None),
    ]
    assert read.rows[0].attributes == {"color": "red", "size": "30"}


def test_csv_without_a_required_column_is_one_issue(tmp_path: Path) -> None:
    read = read_manifest(write(tmp_path / "m.csv", "id,title\na,Tile\n"))
    assert read.rows == []
    assert [str(issue) for issue in read.issues] == ["manifest: missing required column(s): image"]


def test_csv_row_with_extra_cells_is_an_issue(tmp_path: Path) -> None:
    read = read_manifest(write(tmp_path / "m.csv", "id,image\na,a.png\nb,b.png,surplus\nc,c.png\n"))
    assert [row.external_id for row in read.rows] == ["a", "c"]
    assert [(issue.where, issue.reason) for issue in read.issues] == [
        ("line 3", "more cells than header columns")
    ]


def test_csv_missing_ids_and_images_are_issues(tmp_path: Path) -> None:
    read = read_manifest(write(tmp_path / "m.csv", "id,image\na,a.png\n,b.png\nd,\n"))
    assert [row.external_id for row in read.rows] == ["a"]
    assert [(issue.where, issue.external_id) for issue in read.issues] == [("line 3", None), ("line 4", "d")]
    assert read.issues[1].reason == "missing image"


def test_rows_sharing_an_id_add_images_to_the_first(tmp_path: Path) -> None:
    read = read_manifest(
        write(
            tmp_path / "m.csv",
            "id,image,title,color\na,a1.png,Tile A,red\nb,b.png,Tile B,\na,a2.png|a3.png,,\n"
            "a,a4.png,Other title,\n",
        )
    )
    assert [(row.external_id, row.images, row.title) for row in read.rows] == [
        ("a", ["a1.png", "a2.png", "a3.png"], "Tile A"),
        ("b", ["b.png"], "Tile B"),
    ]
    assert [(issue.where, issue.external_id) for issue in read.issues] == [("line 5", "a")]
    assert "duplicate id (first at line 2) with another title" in read.issues[0].reason


def test_jsonl_image_may_be_a_list(tmp_path: Path) -> None:
    read = read_manifest(
        write(
            tmp_path / "m.jsonl",
            '{"id": "a", "image": ["a1.png", "https://img.example/a2.jpg"], "title": "A"}\n'
            '{"id": "b", "image": []}\n{"id": "c", "image": ["c.png", 7]}\n',
        )
    )
    assert [(row.external_id, row.images) for row in read.rows] == [
        ("a", ["a1.png", "https://img.example/a2.jpg"])
    ]
    assert [(issue.where, issue.reason) for issue in read.issues] == [
        ("line 2", "missing image"),
        ("line 3", "images[1] must be a non-empty string (URL, path, base64 or data URI)"),
    ]


def test_jsonl_numbers_ids_and_keeps_typed_attributes(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.jsonl",
        '{"id": 7, "image": "a.png", "size": 30, "outdoor": true, "tags": ["x"]}\n\nnot json\n',
    )
    read = read_manifest(manifest)
    assert [(row.where, row.external_id) for row in read.rows] == [("line 1", "7")]
    assert read.rows[0].attributes == {"size": 30, "outdoor": True, "tags": ["x"]}
    assert [issue.where for issue in read.issues] == ["line 3"]


def test_title_that_is_not_a_string_is_an_issue(tmp_path: Path) -> None:
    read = read_manifest(write(tmp_path / "m.jsonl", '{"id": "a", "image": "a.png", "title": 5}\n'))
    assert read.rows == []
    assert read.issues[0].reason == "title must be a string"


def test_folder_of_images_uses_file_names_as_ids(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "a.png"):
        (folder / name).write_bytes(encode_png(patterned_image(1)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "more").mkdir()
    (folder / "more" / "c.png").write_bytes(encode_png(patterned_image(2)))
    read = read_manifest(folder)
    assert [(row.external_id, row.image) for row in read.rows] == [
        ("a", "a.jpg"),
        ("b", "b.png"),
        ("c", "more/c.png"),
    ]
    assert [str(issue) for issue in read.issues] == ["a.png (id a): the same id as a.jpg; skipped"]
    assert read.skipped_files == ["notes.txt"]


def test_unknown_manifest_type_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"\.csv, \.jsonl"):
        read_manifest(write(tmp_path / "m.txt", "id,image\n"))
    with pytest.raises(BadInput, match="does not exist"):
        read_manifest(tmp_path / "absent.csv")


def test_local_images_stay_inside_the_manifest_folder(tmp_path: Path) -> None:
    base = tmp_path / "catalog"
    (base / "pics").mkdir(parents=True)
    (base / "pics" / "ok.png").write_bytes(b"inside")
    (tmp_path / "secret.png").write_bytes(b"outside")
    (base / "pics" / "link.png").symlink_to(tmp_path / "secret.png")
    assert read_local_image(base, "pics/ok.png", 1000) == b"inside"
    for escaping in ("../secret.png", "pics/../../secret.png", str(tmp_path / "secret.png"), "pics/link.png"):
        with pytest.raises(BadInput, match="leaves the manifest's folder"):
            read_local_image(base, escaping, 1000)


def test_local_image_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"x" * 2000)
    with pytest.raises(BadInput, match="VITRINE_MAX_IMAGE_BYTES"):
        read_local_image(tmp_path, "big.png", 1000)
