"""core/imagelist.py: an explicit image list read as JSON or CSV, its flags and metadata, and what it refuses."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from core import zooniverse
from core.imagelist import (SAMPLE_PER_UNIT, ImageListInvalid, ListedImage, blob_name, folder_runs, is_truthy,
                            iter_rows, not_found_by_batch, not_found_shards, sampled, scan, unit_bounds, unit_in)
from core.requests import TaskRequest, parse_task_request
from core.errors import RequestInvalid
from core.shards import shard_batches


def rows(data: bytes | str, name: str = "list") -> list[ListedImage]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return list(iter_rows(io.BytesIO(raw), name))


def test_a_json_list_of_paths() -> None:
    assert rows(json.dumps(["a/1.jpg", "/b/2.PNG", " c/3.jpeg "])) == [
        ListedImage("a/1.jpg"), ListedImage("b/2.PNG"), ListedImage("c/3.jpeg")]


def test_json_objects_carry_flags_and_metadata() -> None:
    got = rows(json.dumps([{"file": "a/1.jpg", "site": "J05", "capture": 14, "invalid": 0},
                           {"path": "a/2.jpg", "image_no_upload": True},
                           {"Image_Path": "a/3.jpg", "invalid": "2", "roll": None, "ok": False}]))
    assert got == [ListedImage("a/1.jpg", False, {"site": "J05", "capture": "14"}),
                   ListedImage("a/2.jpg", True, {}),
                   ListedImage("a/3.jpg", True, {"roll": "", "ok": "false"})]


def test_a_csv_like_the_seeds_captures_file() -> None:
    text = ("season,site,roll,capture,image,path,invalid,image_was_deleted\r\n"
            "GRU_S1,J05,1,14,1,GRU_S1/J05/J05_R1/IMAG0036.JPG,1,\r\n"
            "GRU_S1,J06,1,17,1,GRU_S1/J06/J06_R1/IMAG0043.JPG,0,0\r\n"
            "\r\n"
            '"GRU_S1","J06, north",1,18,1,GRU_S1/J06/J06_R1/IMAG0044.JPG,,yes\r\n')
    got = rows("\ufeff" + text)  # Excel's byte-order mark
    assert [(r.path, r.excluded) for r in got] == [("GRU_S1/J05/J05_R1/IMAG0036.JPG", True),
                                                   ("GRU_S1/J06/J06_R1/IMAG0043.JPG", False),
                                                   ("GRU_S1/J06/J06_R1/IMAG0044.JPG", True)]
    assert got[1].metadata == {"season": "GRU_S1", "site": "J06", "roll": "1", "capture": "17", "image": "1"}
    assert got[2].metadata["site"] == "J06, north"


@pytest.mark.parametrize("column", ["path", "File", "filename", "image_path", "IMAGE_PATH_REL"])
def test_csv_path_column_names(column: str) -> None:
    assert rows(f"{column},site\nx/1.jpg,a\n") == [ListedImage("x/1.jpg", False, {"site": "a"})]


def test_a_headerless_list_of_paths() -> None:
    assert [r.path for r in rows("a/1.jpg\na/2.jpg\n\n")] == ["a/1.jpg", "a/2.jpg"]


def test_paths_as_find_writes_them_are_blob_names() -> None:
    """`find . -name '*.JPG'` writes ./site-a/IMG.JPG: every such row was 'not found' and the task failed."""
    assert [r.path for r in rows("./a/1.jpg\n.//b/2.jpg\n././c.jpg\n")] == ["a/1.jpg", "b/2.jpg", "c.jpg"]


@pytest.mark.parametrize("value,truthy", [("1", True), ("2", True), ("true", True), ("Yes", True), (1, True),
                                          (True, True), ("0", False), ("", False), ("false", False), ("no", False),
                                          (0, False), (None, False), (False, False), ("0.0", False)])
def test_flag_values(value: Any, truthy: bool) -> None:
    assert is_truthy(value) is truthy


@pytest.mark.parametrize("data,message", [
    ("site,when\na,b\n", "no path column"),
    ('{"file": "a.jpg"}', "a JSON object, not a list"),
    ('["a.jpg", ', "not valid JSON"),
    ('[["a.jpg"]]', "a list, not a path"),
    ('[{"site": "x"}]', "the object has no path"),
    ('[""]', "the path is empty"),
    ('["clip.avi"]', "not an image trapbatch runs"),
    ('[5]', "int, not a path"),
    ("path\na/1.jpg\na/2.jpg,extra\n", "row 3: 2 values for 1 columns"),
    ("path,invalid\na/1.jpg,maybe\n", "flag 'invalid' has the value 'maybe'"),
    ('[{"file": "a.jpg", "tags": ["x"]}]', "'tags' holds a list"),
    (b"path\n\xff\xfe.jpg\n", "not UTF-8"),
    ("a/1.jpg\nb/2.jpg,x\n", "2 columns in a list of paths"),
    ("path;site\na/1.jpg;x\n", "separates its columns with ';', not commas"),  # Excel in European locales
    ("path\tsite\na/1.jpg\tx\n", "separates its columns with '\\\\t', not commas"),
    # Azure's clients resolve dot folders before sending: cam1/../cam0/00.jpg reads cam0/00.jpg under another name
    ('["cam1/../cam0/00.jpg"]', "has a '.' or '..' folder"),
    ('["../other/x.jpg"]', "has a '.' or '..' folder"),
    ('["cam0/./00.jpg"]', "has a '.' or '..' folder"),
    # a blob name has at most 254 path segments (REST "Naming and Referencing Containers, Blobs, and Metadata")
    ('["' + "a/" * 254 + 'x.jpg"]', "over 254 folders deep"),
])
def test_bad_lists_name_the_row_and_the_fix(data: str | bytes, message: str) -> None:
    with pytest.raises(ImageListInvalid, match=message) as info:
        rows(data)
    assert info.value.hint and info.value.status_code == 400


def test_scan_counts_and_hashes_and_refuses_empty_or_all_excluded() -> None:
    data = b"path,site,invalid\na/1.jpg,x,0\na/2.jpg,y,1\n"
    summary = scan(io.BytesIO(data), "l.csv")
    assert (summary.format, summary.rows, summary.images, summary.excluded) == ("csv", 2, 1, 1)
    assert summary.metadata_columns == ("site",) and summary.bytes == len(data)
    assert summary.sha256 != scan(io.BytesIO(data + b"a/3.jpg,z,0\n"), "l.csv").sha256
    kept: list[ListedImage] = []
    assert scan(io.BytesIO(data + b"a/0.jpg,z,\n"), "l.csv", kept.append).images == 2
    assert kept == [ListedImage("a/1.jpg", False, {"site": "x"}), ListedImage("a/0.jpg", False, {"site": "z"})]
    with pytest.raises(ImageListInvalid, match="names no images"):
        scan(io.BytesIO(b"[]"), "l.json")
    with pytest.raises(ImageListInvalid, match="names no images"):
        scan(io.BytesIO(b"path\n"), "l.csv")
    with pytest.raises(ImageListInvalid, match="every one of the 1 rows"):
        scan(io.BytesIO(b"path,invalid\na.jpg,1\n"), "l.csv")


def test_a_path_of_254_segments_is_a_blob_name() -> None:
    assert rows('["' + "a/" * 253 + 'x.jpg"]')[0].path.count("/") == 253


def test_blob_names_are_relative_to_the_prefix() -> None:
    assert blob_name("", "a/1.jpg") == "a/1.jpg"
    assert blob_name("albums/GRU", "S1/1.jpg") == "albums/GRU/S1/1.jpg"
    assert blob_name("albums/GRU/", "S1/1.jpg") == "albums/GRU/S1/1.jpg"


def test_units_are_name_ranges_of_about_equal_size_cut_from_a_sample() -> None:
    names = [f"cam{i % 7}/{i:05d}.jpg" for i in range(20_000)]
    every = len(names) // (8 * SAMPLE_PER_UNIT)
    sample = [n for n in names if sampled(n, every)]
    assert sample == [n for n in names if sampled(n, every)] and 0.5 < len(sample) / (8 * SAMPLE_PER_UNIT) < 1.5
    bounds = unit_bounds(list(reversed(sample)), 8)  # any order: the bounds are the sorted sample's quantiles
    assert bounds == sorted(bounds) and len(bounds) == 7
    units: dict[int, list[str]] = {}
    for name in names:
        units.setdefault(unit_in(name, bounds), []).append(name)
    assert sorted(units) == list(range(8))
    assert all(0.7 < len(members) / (len(names) / 8) < 1.3 for members in units.values())  # about equal
    ranges = [(min(units[k]), max(units[k])) for k in range(8)]
    assert all(ranges[k][1] < ranges[k + 1][0] for k in range(7))  # each unit a range: neighbours stay together
    assert unit_in(bounds[2], bounds) == 3 and unit_in(names[0], []) == 0  # a bound opens its unit; one unit
    assert unit_bounds([], 4) == [] and unit_bounds(["a"], 1) == []
    assert unit_bounds(["a", "b"], 4) == ["a", "b", "b"]  # a small sample: some units stay empty, none is lost


def test_folder_runs_cut_a_sorted_part_where_the_folder_changes() -> None:
    names = sorted(["a/IMG_0010.jpg", "a/IMG_0019.jpg", "a/IMG_0150.jpg", "a/b/x.jpg", "a/b/y.jpg", "root.jpg",
                    "ü/写真1.jpg", "ü/写真2.jpg", "z.jpg"])
    runs = folder_runs(names)
    assert [(r.prefix, r.names) for r in runs] == [
        ("a/IMG_0", ("a/IMG_0010.jpg", "a/IMG_0019.jpg", "a/IMG_0150.jpg")), ("a/b/", ("a/b/x.jpg", "a/b/y.jpg")),
        ("", ("root.jpg", "z.jpg")),  # the root's two: a listing from its start
        ("ü/写真", ("ü/写真1.jpg", "ü/写真2.jpg"))]
    assert [n for r in runs for n in r.names] == names and folder_runs([]) == []
    assert [(r.prefix, r.names) for r in folder_runs(["c/1.jpg"])] == [("c/1.jpg", ("c/1.jpg",))]


def test_names_not_found_go_to_the_shard_of_their_parts_place() -> None:
    # parts' selected images [3, 0, 4, 0] in shards of 2 (shards 0..3); parts 1 and 3 found nothing
    assert not_found_shards([3, 0, 4, 0], [1, 2, 0, 5], 2) == {0: 0, 1: 1, 3: 3}
    assert not_found_shards([0, 0], [4, 1], 2) == {}  # nothing found: no shard (the task fails: no images)
    batches = shard_batches([3, 0, 4, 0], 2, 4)  # two shards per batch
    assert not_found_by_batch(batches, [(0, 0), (1, 0), (2, 0), (3, 0)], [3, 0, 4, 0], [1, 2, 0, 5], 2) == [
        [[0, 0, 0], [1, 0, 1]], [[3, 0, 3]]]


def test_the_request_field_and_the_task_id() -> None:
    base = parse_task_request({"container": "cams", "image_list": "/lists/a.csv"})
    assert base.image_list == "lists/a.csv"
    with_hash = TaskRequest.from_dict({**base.to_dict(), "image_list_sha256": "ab" * 32})
    other = TaskRequest.from_dict({**base.to_dict(), "image_list_sha256": "cd" * 32})
    assert len({with_hash.task_id, other.task_id, parse_task_request({"container": "cams"}).task_id}) == 3
    assert with_hash.to_dict()["image_list_sha256"] == "ab" * 32
    # a request without a list keeps the id it always had
    assert "image_list" not in parse_task_request({"container": "cams"}).identity()
    with pytest.raises(RequestInvalid, match="'sample_n' cannot be combined"):
        parse_task_request({"container": "cams", "image_list": "l.csv", "sample_n": 3})
    with pytest.raises(RequestInvalid, match="names a folder"):
        parse_task_request({"container": "cams", "image_list": "lists/"})
    for field, value in (("image_list", "lists/../l.csv"), ("prefix", "2024/../site-a/"), ("prefix", "./2024/")):
        with pytest.raises(RequestInvalid, match=f"'{field}' .* has a '.' or '..' folder"):
            parse_task_request({"container": "cams", "image_list": "l.csv", field: value})
    assert parse_task_request({"container": "cams", "prefix": "site.a/..x/"}).prefix == "site.a/..x/"  # not folders
    with pytest.raises(RequestInvalid, match="unknown field"):
        parse_task_request({"container": "cams", "image_list_sha256": "ab" * 32})
    assert parse_task_request({"container": "cams", "image_list": "l.csv", "first_n": 2}).first_n == 2


def test_zooniverse_rows_carry_the_lists_metadata() -> None:
    options = zooniverse.ManifestOptions(threshold=0.2, metadata_columns=("site", "folder"))
    assert zooniverse.columns(options) == [*zooniverse.COLUMNS, "site", "list_folder"]
    entry = {"file": "a/1.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1]}]}
    row = zooniverse.row(entry, options, {"1": "animal"}, {"site": "J05"})
    assert row[len(zooniverse.COLUMNS):] == ["J05", ""]
    assert len(row) == len(zooniverse.columns(options))


@pytest.mark.parametrize("body", [{"container": "cams", "image_list": "lists/a.csv"},
                                  {"container": "cams", "image_list": ""}, {"container": "cams", "image_list": None},
                                  {"container": "cams", "image_list": "a\nb.csv"}, {"container": "cams", "image_list": 5},
                                  {"container": "cams", "image_list": "x" * 1025}], ids=repr)
def test_the_described_field_is_the_validated_field(body: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    from api import openapi

    try:
        parse_task_request(body)
        accepted = True
    except RequestInvalid:
        accepted = False
    assert Draft202012Validator(openapi.request_schema()).is_valid(body) == accepted


def test_the_readme_gives_every_flag_word_the_list_reader_takes() -> None:
    """README said ``0, false, no or empty keep it, anything else is refused`` while ``t``, ``y``, ``f``, ``n``,
    ``none`` and ``null`` were taken too: a list writer reading it would rewrite a column that already works."""
    import re
    from pathlib import Path

    from core import imagelist

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    passage = " ".join(readme.split("with a truthy", 1)[1].split("anything else is refused", 1)[0].split())
    leave, keep = passage.split("leave the row out", 1)
    said = {word: set(re.findall(r"\b[a-z0-9]+\b", part)) for word, part in (("leave", leave), ("keep", keep))}
    assert sorted(w for w in imagelist._TRUTHY if w not in said["leave"]) == []
    assert sorted(w for w in imagelist._FALSY if w and w not in said["keep"]) == []
    assert imagelist.is_truthy(None) is False and imagelist.is_truthy(2) is True  # JSON null and a number, as said


def test_the_readme_names_the_path_and_flag_columns_the_list_reader_takes() -> None:
    """README "An explicit image list" is what a list's author writes against: its path and flag columns must be
    ``core.imagelist``'s, or a list the README promises is refused (or a row meant to be left out runs)."""
    import re
    from pathlib import Path

    from core import imagelist

    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8").split())
    section = readme.split("### An explicit image list", 1)[1].split("###", 1)[0]
    paths = re.search(r"the path under ((?:`\w+`(?:, | or )?)+)", section)
    assert paths and sorted(re.findall(r"`(\w+)`", paths.group(1))) == sorted(imagelist.PATH_COLUMNS)
    flags = re.search(r"Flag columns ((?:`\w+`(?:, )?)+) with a truthy", section)
    assert flags and re.findall(r"`(\w+)`", flags.group(1)) == list(imagelist.FLAG_COLUMNS)


def test_the_readme_gives_the_list_readers_limits() -> None:
    """The metadata limits refused a list with a ``400`` the README's list of refusals did not name."""
    import re
    from pathlib import Path

    from core import imagelist

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    passage = re.sub(r"(?<=\d),(?=\d{3})", "", " ".join(
        readme.split("The edge reads the whole list", 1)[1].split("no task starts", 1)[0].split()))
    assert f"more than {imagelist.MAX_METADATA_COLUMNS} metadata columns" in passage
    assert f"more than {imagelist.MAX_METADATA_VALUE_CHARS} characters" in passage


# ---------------------------------------------------------------- pinned rules (a mutation audit found them unpinned)

@pytest.mark.parametrize("value, excluded", [
    (" 1 ", True), (" yes", True), ("Y", True), ("t", True), ("-1", True), ("+2.5", True),
    ("no ", False), ("N", False), ("f", False), ("None", False), ("null", False), ("+0", False), ("-0.0", False)])
def test_flag_words_and_signed_numbers_read_as_the_docstring_says(value: str, excluded: bool) -> None:
    assert is_truthy(value) is excluded


def test_csv_headers_are_read_with_their_spaces_and_case_forgiven() -> None:
    """A spreadsheet's header often has ' path ' or 'Invalid': the path column is found, the flag still excludes,
    and a metadata column is named without its spaces."""
    got = rows(" Path , Invalid , site \r\na/1.jpg,1,J05\r\na/2.jpg,0,J06\r\n")
    assert got == [ListedImage("a/1.jpg", True, {"site": "J05"}), ListedImage("a/2.jpg", False, {"site": "J06"})]
    assert rows(json.dumps([{"file": "a/1.jpg", " Invalid ": 1}])) == [ListedImage("a/1.jpg", True, {})]


def test_rows_of_empty_cells_are_skipped_as_spreadsheets_write_them() -> None:
    assert rows("path,site\r\na/1.jpg,J05\r\n,\r\n , \r\n") == [ListedImage("a/1.jpg", False, {"site": "J05"})]


def test_a_list_saved_with_a_byte_order_mark_is_read_as_json() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(["a/1.jpg"]).encode()
    assert rows(data) == [ListedImage("a/1.jpg")]
    assert scan(io.BytesIO(data), "list").format == "json"


def test_limits_are_inclusive_and_a_delete_character_is_refused() -> None:
    from core import imagelist

    longest = "a/" + "x" * (imagelist.MAX_NAME_CHARS - 6) + ".jpg"
    assert rows(json.dumps([longest])) == [ListedImage(longest)]
    with pytest.raises(ImageListInvalid, match="not a blob name"):
        rows(json.dumps(["a/x\x7f.jpg"]))
    value = "v" * imagelist.MAX_METADATA_VALUE_CHARS
    assert rows(json.dumps([{"file": "a/1.jpg", "note": value}]))[0].metadata == {"note": value}
    columns = {f"c{i}": "x" for i in range(imagelist.MAX_METADATA_COLUMNS)}
    summary = scan(io.BytesIO(json.dumps([{"file": "a/1.jpg", **columns}]).encode()), "list")
    assert len(summary.metadata_columns) == imagelist.MAX_METADATA_COLUMNS


def test_names_not_found_after_the_last_full_shard_go_to_the_last_shard_and_one_batch_only() -> None:
    """Never to a shard that does not exist (its names would be dropped) nor to two batches (reported twice)."""
    assert not_found_shards([4, 0], [0, 3], 2) == {1: 1}
    batches = shard_batches([4, 0, 4], 2, 4)
    assert [(b["first"], b["count"]) for b in batches] == [(0, 2), (2, 2)]
    assert not_found_by_batch(batches, [(0, 0), (1, 0), (2, 0)], [4, 0, 4], [0, 1, 0], 2) == [[], [[1, 0, 2]]]
