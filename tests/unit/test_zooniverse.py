"""Zooniverse manifests: every non-excluded image in exactly one batch, batch sizes as asked, seeded randomness."""
from __future__ import annotations

from collections import Counter

import pytest

from core import mdformat, zooniverse
from core.errors import RequestInvalid
from core.zooniverse import BatchAssigner, ManifestOptions


@pytest.mark.parametrize("n,batches", [(1, 1), (2, 1), (10, 3), (97, 7), (1000, 10), (4096, 5), (4097, 64)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_image_once_with_even_sizes(n: int, batches: int, shuffle: bool) -> None:
    a = BatchAssigner(n, batches, shuffle, seed=7)
    assert sorted(a.position(i) for i in range(n)) == list(range(n))  # a permutation
    sizes = Counter(a.batch(i) for i in range(n))
    assert set(sizes) == set(range(batches)) and max(sizes.values()) - min(sizes.values()) <= 1


def _position_by_rounds(a: BatchAssigner, i: int) -> int:
    """The Feistel permutation as written before the round tables: each round ``_round`` of the right half."""
    x = i
    while True:
        left, right = x >> a.half, x & a.mask
        for key in a.keys:
            left, right = right, left ^ a._round(right, key)
        x = (left << a.half) | right
        if x < a.n:
            return x


@pytest.mark.parametrize("n", [2, 3, 5, 17, 1000, 4097, 20_000, 65_537, 1_000_003, 2**31 + 11])
@pytest.mark.parametrize("seed", [0, 7, 0xFFFFFFFF])
def test_round_tables_give_the_same_permutation(n: int, seed: int) -> None:
    a = BatchAssigner(n, 3, True, seed)
    step = max(1, n // 3000)
    for i in [*range(0, n, step), n - 1]:
        assert a.position(i) == _position_by_rounds(a, i)


def test_shuffled_batches_are_random_yet_seeded() -> None:
    n = 1000
    order = [BatchAssigner(n, 10, True, seed=1).batch(i) for i in range(n)]
    assert order == [BatchAssigner(n, 10, True, seed=1).batch(i) for i in range(n)]
    assert order != [BatchAssigner(n, 10, True, seed=2).batch(i) for i in range(n)]
    assert order != sorted(order)  # not the results' order
    assert [BatchAssigner(n, 10, False, seed=1).batch(i) for i in range(n)] == sorted(order)
    # the first 100 images land in many batches, not one
    assert len(set(order[:100])) >= 8


def test_batch_count_from_either_option() -> None:
    assert zooniverse.batch_count(25, ManifestOptions(0.2, max_batch_size=10)) == 3
    assert zooniverse.batch_count(25, ManifestOptions(0.2, number_of_batches=4)) == 4
    assert zooniverse.batch_count(3, ManifestOptions(0.2, number_of_batches=4)) == 3
    assert zooniverse.batch_count(0, ManifestOptions(0.2)) == 0
    assert zooniverse.batch_count(25_000, ManifestOptions(0.2)) == 3  # DEFAULT_MAX_BATCH_SIZE
    with pytest.raises(RequestInvalid, match="not both"):
        ManifestOptions(0.2, max_batch_size=10, number_of_batches=2)
    with pytest.raises(RequestInvalid, match="positive"):
        ManifestOptions(0.2, max_batch_size=0)


def test_rows_carry_attribution_licence_and_the_detectors_view_hidden() -> None:
    opts = ManifestOptions(0.2, attribution="Univ. of X", license="CC BY 4.0")
    cats = mdformat.DETECTION_CATEGORIES
    row = dict(zip(zooniverse.COLUMNS, zooniverse.row(
        {"file": "cam1/a.jpg", "detections": [{"category": "2", "conf": 0.45, "bbox": [0, 0, 1, 1]},
                                              {"category": "1", "conf": -0.9, "bbox": [0, 0, 1, 1]}]}, opts, cats)))
    assert row == {"image_name_1": "cam1/a.jpg", "folder": "cam1", "attribution": "Univ. of X", "license": "CC BY 4.0",
                   "#file": "cam1/a.jpg", "#detector_max_conf": 0.45, "#detector_top_category": "person",
                   "#detector_threshold": 0.2}
    low = zooniverse.row({"file": "b.jpg", "detections": [{"category": "1", "conf": 0.1, "bbox": [0, 0, 1, 1]}]}, opts, cats)
    assert low[5:7] == [0.1, "empty"]
    assert [c for c in zooniverse.COLUMNS if c.startswith("#")] == ["#file", "#detector_max_conf",
                                                                     "#detector_top_category", "#detector_threshold"]


@pytest.mark.parametrize("entry,out", [
    ({"file": "a", "detections": []}, False),
    ({"file": "a", "failure": "image access failure", "detections": None}, True),
    ({"file": "a", "detections": [], "invalid": "2"}, True),
    ({"file": "a", "detections": [], "invalid": 0}, False),
    ({"file": "a", "detections": [], "image_no_upload": 1}, True),
    ({"file": "a", "detections": [], "image_was_deleted": "0"}, False),
])
def test_exclusions(entry: dict[str, object], out: bool) -> None:
    assert zooniverse.excluded(entry) is out


def test_a_photo_cut_short_is_left_out_and_counted_as_such() -> None:
    """Volunteers would be shown its grey lower part (damaged.csv lists it): out of the manifests, and counted apart
    from the images left out for another reason (failed, flagged), whose count no one asked for."""
    from gpu_batch.formats.entries import mark_cut_short
    from gpu_batch.formats.zooniverse_rows import left_out_cut_short

    entries = [{"file": "a", "detections": []}, {"file": "b", "detections": []},
               {"file": "c", "detections": [], "invalid": "1"},
               {"file": "d", "failure": "image access failure", "detections": None}]
    marked = list(mark_cut_short(entries, {"b", "c", "d"}))
    assert [zooniverse.excluded(e) for e in marked] == [False, True, True, True]
    assert [left_out_cut_short(e) for e in marked] == [False, True, False, False]


@pytest.mark.parametrize("metadata", [None, {"season": 'S,"1"', "site": "a\nb", "roll": "", "n": "\u2028 x "}])
@pytest.mark.parametrize("threshold", [0.2, 0.123456789, 1e-7, 1])
def test_row_line_is_csv_writer_over_row(metadata: dict[str, str] | None, threshold: float) -> None:
    import csv
    import io
    import random

    rng = random.Random(5)
    options = ManifestOptions(threshold, attribution='Zoo, "the" lab', license="CC\r\nBY",
                              metadata_columns=("season", "site", "roll", "n", "absent"))
    names = ["a.jpg", 'f,o"l/d\ne r/IMG 1.JPG', "é/\x00/x", "/lead", "trail/", " / "]
    categories = {"1": "animal", "2": 'per,son', "3": 've"hicle'}
    for _ in range(2000):
        entry = {"file": rng.choice(names), "detections": [
            {"category": rng.choice(["1", "2", "3", "9"]), "conf": rng.choice([rng.random(), 1, 0, -0.5, 1e-9, "x"])}
            for _ in range(rng.randrange(4))]}
        out = io.StringIO(newline="")
        csv.writer(out).writerow(zooniverse.row(entry, options, categories, metadata))
        line = zooniverse.row_line(entry, options, categories, metadata)
        # read as the Panoptes CLI reads manifests (skipinitialspace), the line holds csv.writer's fields; its bytes
        # are csv.writer's but for a field that starts with a space (quoted, else the reader would drop the space)
        read = next(csv.reader(io.StringIO(line, newline=""), skipinitialspace=True))
        assert read == next(csv.reader(io.StringIO(out.getvalue(), newline="")))
        if not any(str(v).startswith(" ") for v in zooniverse.row(entry, options, categories, metadata)):
            assert line == out.getvalue()


@pytest.mark.parametrize("entry", [{}, {"invalid": 1}, {"invalid": " 2 "}, {"invalid": "3"}, {"image_no_upload": "1"},
                                   {"image_was_deleted": 0}, {"image_is_invalid": True}, {"failure": ""},
                                   {"failure": None, "invalid": None}, {"invalid": ""}])
def test_excluded_reads_the_flags_as_before(entry: dict[str, object]) -> None:
    before = entry.get("failure") is not None or any(
        str(entry.get(flag, "")).strip() in values for flag, values in zooniverse.EXCLUDING_FLAGS.items())
    assert zooniverse.excluded(entry) == before


@pytest.mark.parametrize("n,batches,shuffle", [(1, 1, True), (2, 1, True), (10, 3, True), (1000, 7, True),
                                               (1000, 7, False), (12345, 10_000, True), (5, 5, False)])
def test_a_range_of_images_gets_the_batches_each_image_gets(n: int, batches: int, shuffle: bool) -> None:
    a = BatchAssigner(n, batches, shuffle, seed=3)
    assert list(a.batch_range(0, n)) == [a.batch(i) for i in range(n)]
    assert list(a.batch_range(n // 3, n // 2)) == [a.batch(i) for i in range(n // 3, n // 2)]


def test_a_list_column_named_like_an_image_column_is_not_taken_for_photos() -> None:
    """``trapbatch zooniverse`` fetches what every ``image_name_<n>`` column names, and its upload command hands
    them to the Panoptes CLI as files: a list's own ``image_name_2`` column would upload whatever it names."""
    options = ManifestOptions(0.2, metadata_columns=("image_name_2", "image_name_1", "folder", "image_name", "site"))
    assert zooniverse.columns(options)[len(zooniverse.COLUMNS):] == [
        "list_image_name_2", "list_image_name_1", "list_folder", "image_name", "site"]
