"""The tally of files a listing passes over (core.notimages): kinds, folder markers, examples, merging, the line."""
from __future__ import annotations

import random

import pytest

from core import notimages
from core.notimages import EXAMPLES, MAX_KINDS, NotImages, describe, kind_of
from core.shards import is_image_name


@pytest.mark.parametrize("name, size, kind", [
    ("cam1/VID_0001.MP4", 10, ".mp4"),
    ("cam1/VID_0001.avi", None, ".avi"),
    ("notes.txt", 0, ".txt"),  # an empty file with an extension is a file
    ("cam1/._IMG_0001.JPG", 4096, "(hidden)"),  # macOS AppleDouble
    ("cam1/.DS_Store", 6148, "(hidden)"),
    ("cam1/README", 12, "(no extension)"),
    ("cam1/README", None, "(no extension)"),  # size unknown: counted
    ("cam1/2024", 0, None),  # a hierarchical-namespace account's directory blob
    ("cam1/", 0, None),  # a placeholder "folder/" blob
    ("cam1/x.tar~", 5, "(other)"),  # not an alphanumeric extension
    ("cam1/x.averyveryverylongext", 5, "(other)"),
    ("cam1/x.", 5, "(other)"),
    ("cam1/IMG.TIF", 5, ".tif"),
    ("trapbatch-ready.json", 0, None),  # the start-on-arrival marker and the answers beside it are trapbatch's
    ("trapbatch-ready.task.json", 40, None),
    ("trapbatch-ready.json.error.json", 300, None),
    ("cam1/trapbatch-ready.json", 2, ".json"),  # not a marker below the top: a file like any other
    ("other.json", 2, ".json"),
])
def test_kinds(name: str, size: int | None, kind: str | None) -> None:
    assert kind_of(name, size) == kind


def test_examples_are_the_first_by_name_whatever_the_merge_order() -> None:
    names = [f"cam{c}/v{i:03d}.mp4" for c in range(4) for i in range(7)] + ["a.txt", "z/b.txt"]
    parts = [names[i:i + 5] for i in range(0, len(names), 5)]  # listing parts, each in name order
    tallies = []
    for part in parts:
        t = NotImages()
        for n in part:
            t.add(n, 1)
        tallies.append(t.to_dict())
    for order in (tallies, tallies[::-1], random.Random(3).sample(tallies, len(tallies))):
        total = NotImages()
        for doc in order:
            total.merge(doc)
        doc = total.to_dict()
        assert doc["files"] == len(names)
        assert list(doc["kinds"]) == [".mp4", ".txt"]  # largest first
        assert doc["kinds"][".mp4"]["files"] == 28
        assert doc["kinds"][".mp4"]["examples"] == sorted(n for n in names if n.endswith(".mp4"))[:EXAMPLES]
        assert doc["kinds"][".txt"]["examples"] == ["a.txt", "z/b.txt"]
        assert "process_video" in doc["kinds"][".mp4"]["hint"] and "hint" not in doc["kinds"][".txt"]
        assert total.summary() == {"files": 30, "kinds": {".mp4": 28, ".txt": 2}}


def test_kinds_past_the_cap_are_counted_as_other() -> None:
    t = NotImages()
    for i in range(MAX_KINDS + 10):
        t.add(f"f.x{i}", 1)
    doc = t.to_dict()
    assert doc["files"] == MAX_KINDS + 10  # nothing is dropped from the count
    assert doc["kinds"]["(other)"]["files"] == 10
    assert len(doc["kinds"]) == MAX_KINDS + 1
    assert len(t.summary()["kinds"]) == notimages.TOP_KINDS


def test_describe() -> None:
    assert describe({"files": 1, "kinds": {".txt": 1}}) == "1 file is not an image and was not run (.txt 1)"
    assert describe({"files": 12040, "kinds": {".mp4": 12000, ".txt": 30}}) == (
        "12,040 files are not images and were not run (.mp4 12,000, .txt 30, 10 more)")
    t = NotImages()
    t.add("a.mov", 3)
    assert describe(t.to_dict()) == describe(t.summary()) == "1 file is not an image and was not run (.mov 1)"


def test_what_is_tallied_is_exactly_what_the_enumeration_does_not_run() -> None:
    """Every name is either run (an image) or counted here, except folder markers; never both."""
    for name in ("a.jpg", "a.JPEG", "b.png", "c.gif", "._a.jpg", ".x.png", "v.mp4", "n.txt", "README"):
        t = NotImages()
        if not is_image_name(name):
            t.add(name, 10)
        assert (t.files == 1) != is_image_name(name), name


@pytest.mark.parametrize("name", ["a/../b.jpg", "a/./b.JPG", "../b.png", "./b.jpg", "a/b/../../c/d.jpeg", "a/.."])
def test_a_name_with_a_dot_folder_is_passed_over_and_says_why(name: str) -> None:
    """Azure keeps ``a/../b.jpg`` as written, but the HTTP layer resolves it before sending: the listing must not run
    it (the worker would read ``b.jpg``, or with a bearer token another container's blob) and the task says so."""
    assert not is_image_name(name)
    assert kind_of(name, 10) == notimages.DOT_FOLDER
    tally = NotImages()
    tally.add(name, 10)
    assert "another blob" in tally.to_dict()["kinds"][notimages.DOT_FOLDER]["hint"]


@pytest.mark.parametrize("name", ["a../b.jpg", "a/b..jpg", ".cams/b.jpg", "a/.x/b.jpg", "a...jpg"])
def test_dots_inside_a_folder_name_are_no_dot_folder(name: str) -> None:
    assert is_image_name(name) and kind_of(name) != notimages.DOT_FOLDER


def test_app_side_readers_never_fetch_a_name_with_a_dot_folder() -> None:
    """Results written before the listing passed such names over still name them: the preview page would publish
    the other blob's picture, and the exports would take its size. Neither reads it."""
    from activities.previews import _Pictures
    from adapters.image_sizes import _size

    class Refusing:
        @property
        def service(self) -> object:
            raise AssertionError("no storage call for a name with a dot folder")

        def read_bytes(self, container: str, name: str) -> bytes:
            raise AssertionError("no storage call for a name with a dot folder")

    store = Refusing()
    assert _Pictures(store, store, None, "folder", "cams", "").make("a/../b.jpg") is None  # type: ignore[arg-type]
    assert _size(store, "cams", "a/../b.jpg") is None  # type: ignore[arg-type]
