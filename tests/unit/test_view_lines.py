"""``activities.exports.ViewLines`` takes the workers' merge views one at a time (a part's views held together took
~2.6 kB an image), each a slice at a time when read ``STREAMED`` (one view held took ~2.3 kB an image), and writes,
for each format every view holds, the same bytes and counts as formatting the views' shards entry by entry; a format
some view lacks, and every format after a shard without a view, is left to the entries."""
from __future__ import annotations

import dataclasses
import io
import json
from array import array
from typing import Any

import pytest

from activities.exports import LineBuffer, ViewLines, write_view_rows
from core import zooniverse
from gpu_batch.formats import camtrapdp, coco
from gpu_batch.formats.mergeview import ShardView, build_view, read_view
from gpu_batch.pool.simulated import synthetic_entry

TASK, THRESHOLD = "task-lines", 0.2
CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}


def shard_view(shard: int) -> ShardView:
    names = [f"site{shard}/cam{i % 3}/IMG_{i:04d}.JPG" for i in range(25)]
    entries = [synthetic_entry(n, 1, 0.0, seed=shard) for n in names]
    view = read_view(build_view(TASK, THRESHOLD, names, entries, "etag-r", "etag-m"))
    assert view is not None and view.coco is not None and view.camtrap is not None and view.zooniverse is not None
    return view


def builder() -> camtrapdp.CamtrapBuilder:
    return camtrapdp.CamtrapBuilder(threshold=THRESHOLD, detection_categories=CATEGORIES,
                                    completed_at="2026-12-02T00:00:00Z", classified_by="MegaDetector v5a",
                                    media_base="https://acct.blob.core.windows.net/camera-traps/")


class Streams:
    """The exports' streams as the activities open them: text over temporary binary files."""

    def __init__(self) -> None:
        self.raw = {k: io.BytesIO() for k in ("images", "annotations", "media", "observations")}
        self.text = {k: io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
                     for k, f in self.raw.items()}
        self.writer = coco.CocoWriter(self.text["images"], self.text["annotations"], THRESHOLD, CATEGORIES,
                                      continued=True)
        self.media, self.observations = LineBuffer(self.text["media"]), LineBuffer(self.text["observations"])
        self.media.write("header-media\n")  # what the whole-task activity writes first

    def bytes(self) -> dict[str, bytes]:
        self.media.flush()
        self.observations.flush()
        for t in self.text.values():
            t.flush()
        return {k: f.getvalue() for k, f in self.raw.items()}


def expected(views: list[ShardView], continued: bool) -> tuple[dict[str, bytes], dict[str, int]]:
    """What the views' lines make when every view is held at once (the way before spooling)."""
    b = builder()
    images = b"".join(v.coco[0] for v in views)  # type: ignore[index]
    annotations = b"".join(v.coco[1] for v in views)  # type: ignore[index]
    filled = [v.camtrap.filled(b.completed_at, b.classified_by, b.media_base)  # type: ignore[union-attr]
              for v in views]
    out = {"images": images if continued else images[1:], "annotations": annotations if continued else annotations[1:],
           "media": b"header-media\n" + "".join(f[0] for f in filled).encode(),  # type: ignore[index]
           "observations": "".join(f[1] for f in filled).encode()}  # type: ignore[index]
    counts = {"images": sum(v.coco[2] for v in views), "annotations": sum(v.coco[3] for v in views),  # type: ignore
              "media": sum(v.camtrap.media_count for v in views),  # type: ignore[union-attr]
              "observations": sum(v.camtrap.observation_count for v in views)}  # type: ignore[union-attr]
    return out, counts


@pytest.mark.parametrize("continued", [True, False])
def test_every_format_from_views_read_one_at_a_time(continued: bool) -> None:
    views = [shard_view(s) for s in range(4)]
    s, b = Streams(), builder()
    options = zooniverse.ManifestOptions(threshold=THRESHOLD, attribution="Camera Club, \"North\"", license="CC-BY")
    with ViewLines(iter(views), b, options) as lines:
        assert lines.coco and lines.camtrap and lines.zooniverse and lines.complete
        lines.write(s.writer, s.text["images"], s.text["annotations"], b, s.media, s.observations, continued)
        rows, lengths = io.BytesIO(), array("q")
        assert lines.write_zooniverse(rows, lengths) == lines.eligible()
    want, counts = expected(views, continued)
    assert s.bytes() == want
    assert s.writer.counts == {"images": counts["images"], "annotations": counts["annotations"]}
    assert b.counts == {"media": counts["media"], "observations": counts["observations"]}
    assert b.deployment_facts() and sorted(b.deployment_facts()) == sorted(
        _deployments_of(views))  # the views' deployments combined, as before
    rows_want, lengths_want = io.BytesIO(), array("q")
    assert write_view_rows(views, rows_want, lengths_want, options) == len(lengths) > 0
    assert rows.getvalue() == rows_want.getvalue() and lengths == lengths_want


def _deployments_of(views: list[ShardView]) -> list[Any]:
    b = builder()
    from core.exportparts import combine_deployments

    combine_deployments(b, [v.camtrap.filled(b.completed_at, b.classified_by,  # type: ignore[union-attr,index]
                                              b.media_base)[2] for v in views])
    return b.deployment_facts()


@pytest.mark.parametrize("lacking", ["coco", "camtrap", "zooniverse"])
def test_a_format_one_view_lacks_is_left_to_the_entries_and_the_others_still_come_from_the_views(lacking: str) -> None:
    views = [shard_view(s) for s in range(3)]
    views[1] = dataclasses.replace(views[1], **{lacking: None})  # e.g. Camtrap DP: an entry with its own capture time
    s, b = Streams(), builder()
    with ViewLines(iter(views), b, zooniverse.ManifestOptions(threshold=THRESHOLD)) as lines:
        assert {f: getattr(lines, f) for f in ("coco", "camtrap", "zooniverse")} == {
            f: f != lacking for f in ("coco", "camtrap", "zooniverse")} and not lines.complete
        lines.write(s.writer, s.text["images"], s.text["annotations"], b, s.media, s.observations, True)
    got = s.bytes()
    want, counts = expected([dataclasses.replace(v, **{lacking: getattr(views[0], lacking)}) if i == 1 else v
                             for i, v in enumerate(views)], True)
    if lacking == "coco":  # nothing of the views' COCO lines; the other formats' lines all there
        assert got["images"] == got["annotations"] == b"" and s.writer.counts == {"images": 0, "annotations": 0}
    else:
        assert (got["images"], got["annotations"]) == (want["images"], want["annotations"])
    if lacking == "camtrap":
        assert got["media"] == b"header-media\n" and got["observations"] == b""
        assert b.counts == {"media": 0, "observations": 0} and b.deployment_facts() == []
    else:
        assert (got["media"], got["observations"]) == (want["media"], want["observations"]) and b.deployment_facts()
    if lacking != "zooniverse":
        assert lines.eligible() == sum(len(v.zooniverse.lengths) for v in views) > 0  # type: ignore[union-attr]


def test_a_shard_without_a_view_leaves_every_format_to_the_entries() -> None:
    views: list[ShardView | None] = [shard_view(0), shard_view(1), None]
    s, b = Streams(), builder()
    with ViewLines(iter(views), b, zooniverse.ManifestOptions(threshold=THRESHOLD, attribution="Camera Club, \"North\"", license="CC-BY")) as lines:
        assert not (lines.coco or lines.camtrap or lines.zooniverse or lines.complete)
        lines.write(s.writer, s.text["images"], s.text["annotations"], b, s.media, s.observations, True)
    assert s.bytes() == {"images": b"", "annotations": b"", "media": b"header-media\n", "observations": b""}
    assert s.writer.counts == {"images": 0, "annotations": 0} and b.counts == {"media": 0, "observations": 0}
    for none in (None, iter([])):  # no views to use at all
        with ViewLines(none, builder()) as lines:
            assert not (lines.coco or lines.camtrap or lines.zooniverse or lines.complete)


def test_the_spool_files_are_closed_on_leaving() -> None:
    lines = ViewLines(iter([shard_view(0)]), builder())
    spools = list(lines._spool.values())
    assert not any(f.closed for f in spools)
    with lines:
        pass
    assert all(f.closed for f in spools)


def test_a_parts_views_are_not_held_together() -> None:
    """Twenty views of ~2 MB each pass through with at most a few in memory at once (tracemalloc's peak), where
    holding them, as before, took all twenty."""
    import tracemalloc

    template = shard_view(0)
    size = 1 << 20

    def views() -> Any:
        for i in range(20):
            filler = (b"," + b"x" * 99) * (size // 100)  # a fresh object for each view, freed once it is passed on
            yield dataclasses.replace(template, coco=(filler, filler + b"y", i, i))

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with ViewLines(views(), builder()) as lines:
            assert lines.coco
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2 * size, peak  # two sections of ~1 MB a view: under five views' worth, of twenty


# ------------------------------------------------------------------ views read a slice at a time (STREAMED)
# Why: a view's export sections read whole took ~2.3 kB an image (226 MB for a shard of 100,000); read a slice at a
# time they must still give every byte, count and event record the whole read gave, wherever the slices fall: inside
# a quoted field holding CRLF, commas or quotes, in a multi-byte character, or in a long run of failed images
# (media rows without observations).

def awkward_view(shard: int, list_rows: bool = True) -> bytes:
    """A view of names and list values CSV must quote (commas, quotes, CRLF, non-ASCII), a run of failures longer
    than a small slice, successes with several boxes and blanks."""
    from gpu_batch.formats.entries import failure_entry
    from gpu_batch.formats.mergeview import ListedRows
    from gpu_batch.manifest import REASON_UNDECODABLE

    odd = ["cam, \"north\"/IMG\r\n1.JPG", "caméra/été_ß.jpg", "x/\"q\".png", "a,b/c\r\nd/e.jpg"]
    names = [f"site{shard}/cam{i % 3}/IMG_{i:04d}.JPG" for i in range(40)] + [f"site{shard}/{n}" for n in odd]
    entries = [failure_entry(n, "image access failure", REASON_UNDECODABLE) if 10 <= i < 30 or i == 41
               else synthetic_entry(n, 1, 0.0, seed=shard) for i, n in enumerate(names)]
    listed = ListedRows("etag-l", ("site", "note"), {n: {"site": n.split("/")[1], "note": f"a, \"b\"\r\nc {i}"}
                                                     for i, n in enumerate(names)}) if list_rows else None
    data = build_view(TASK, THRESHOLD, names, entries, "etag-r", "etag-m", listed=listed)
    assert data is not None
    return data


def streamed(data: bytes, head: int | None = None, short_after: int | None = None) -> ShardView:
    """``data`` read STREAMED from its first ``head`` bytes (its header line by default) and ranged reads of the
    rest; with ``short_after``, every read after that many of the sections' (once the view is read) comes back a
    byte short (a blob cut meanwhile)."""
    from gpu_batch.formats.mergeview import STREAMED, read_view_part

    reads: list[int] | None = None  # counted once the view is read

    def fetch(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append(length)
        cut = 1 if short_after is not None and reads is not None and len(reads) > short_after else 0
        return data[offset:offset + length - cut]

    view = read_view_part(data[:head if head is not None else data.index(b"\n") + 1], fetch, STREAMED)
    reads = []
    assert view is not None and view.exports is not None and view.coco is None
    return view


@pytest.mark.parametrize("slice_bytes", [1, 3, 64, 1000, 1 << 20])
@pytest.mark.parametrize("list_rows", [True, False])
def test_a_streamed_views_sections_are_the_held_ones_wherever_the_slices_fall(monkeypatch: Any, slice_bytes: int,
                                                                               list_rows: bool) -> None:
    from core.camtrap_events import EventTap
    from gpu_batch.formats import mergeview

    monkeypatch.setattr(mergeview, "SLICE_BYTES", slice_bytes)
    data = awkward_view(0, list_rows)
    held, lines = read_view(data), streamed(data).export_sections()
    assert held is not None and held.coco and held.camtrap and held.zooniverse
    assert lines.coco == held.coco[2:] and lines.zooniverse == len(held.zooniverse.lengths)
    assert b"".join(lines.slices("images")) == held.coco[0] and b"".join(lines.slices("annotations")) == held.coco[1]
    b = builder()
    filled = held.camtrap.filled(b.completed_at, b.classified_by, b.media_base)
    assert filled is not None and lines.camtrap_facts(b.completed_at, b.classified_by, b.media_base) == filled[2]
    pieces = list(lines.camtrap_lines(b.completed_at, b.classified_by, b.media_base))
    assert b"".join(m for m, _, _ in pieces) == filled[0].encode() and b'"' in filled[0].encode()
    assert b"".join(o for _, o, _ in pieces) == filled[1].encode()
    whole, sliced = EventTap(), EventTap()
    whole.feed(filled[0], filled[1])
    for media, _, held_rows in pieces:
        sliced.feed(media.decode(), held_rows.decode())
    assert sliced.records().to_bytes() == whole.records().to_bytes() and len(whole.records().to_bytes()) > 100
    middle = zooniverse.quoted_options(zooniverse.ManifestOptions(threshold=THRESHOLD, attribution="Club, \"N\""))[0]
    rows = list(lines.zooniverse_rows(middle))
    want_rows, want_lengths = held.zooniverse.filled(middle)
    assert b"".join(r for r, _ in rows) == want_rows and [n for _, k in rows for n in k] == want_lengths
    if slice_bytes < 100:  # pieces end at whole records, failures' runs included
        assert len(pieces) > 3 and all(m.endswith(b"\r\n") for m, _, _ in pieces)


def test_views_read_streamed_give_the_held_views_bytes_counts_and_event_records(monkeypatch: Any) -> None:
    from core.camtrap_events import EventTap
    from gpu_batch.formats import mergeview

    monkeypatch.setattr(mergeview, "SLICE_BYTES", 50)
    blobs = [awkward_view(s) for s in range(3)]
    options = zooniverse.ManifestOptions(threshold=THRESHOLD, attribution="Camera Club, \"North\"", license="CC-BY")
    got = []
    for views in ([read_view(d) for d in blobs], [streamed(d) for d in blobs]):
        s, b, tap = Streams(), builder(), EventTap()
        with ViewLines(iter(views), b, options, events=tap) as lines:
            assert lines.complete
            lines.write(s.writer, s.text["images"], s.text["annotations"], b, s.media, s.observations, True)
            rows, lengths = io.BytesIO(), array("q")
            lines.write_zooniverse(rows, lengths)
        got.append((s.bytes(), s.writer.counts, b.counts, b.deployment_facts(), rows.getvalue(), lengths,
                    tap.records().to_bytes()))
    assert got[0] == got[1] and got[0][0]["observations"] and len(got[0][6]) > 100


def test_a_view_whose_export_part_is_cut_or_does_not_add_up_is_not_used() -> None:
    from gpu_batch.formats.mergeview import STREAMED, read_view_part

    data = awkward_view(0)
    assert read_view_part(data[:-1], lambda o, n: data[:-1][o:o + n], STREAMED) is None  # the blob cut short
    header = json.loads(data[:data.index(b"\n")])
    header["zooniverse"]["rows_bytes"] -= 1
    header["camtrap"]["media_bytes"] += 1  # the same total, Zooniverse's lengths no longer its rows' bytes
    bad = json.dumps(header, separators=(",", ":")).encode() + data[data.index(b"\n"):]
    assert read_view_part(bad, lambda o, n: bad[o:o + n], STREAMED) is None
    assert read_view_part(data, lambda o, n: data[o:o + n], STREAMED) is not None
    small = awkward_view(1)  # a view its head read holds whole: nothing more is read
    assert read_view_part(small, lambda o, n: pytest.fail("a further read"), STREAMED) is not None


@pytest.mark.parametrize("short_after", [0, 2, 9])
def test_a_view_cut_while_it_is_read_leaves_every_format_to_the_entries(monkeypatch: Any, short_after: int) -> None:
    """A section read back short halfway through a view (the blob changed since its header was read): as a shard
    without a usable view, every format from the entries, what the direct streams got of the views dropped and the
    event records fed from them forgotten."""
    from core.camtrap_events import EventTap
    from gpu_batch.formats import mergeview

    monkeypatch.setattr(mergeview, "SLICE_BYTES", 64)

    class Direct(io.BytesIO):
        def restart(self) -> None:
            self.seek(0)
            self.truncate()

    direct = {k: Direct() for k in ("images", "annotations", "media", "observations")}
    tap = EventTap()
    views = [streamed(awkward_view(0)), streamed(awkward_view(1), short_after=short_after)]
    with ViewLines(iter(views), builder(), direct=direct, events=tap) as lines:
        assert not (lines.coco or lines.camtrap or lines.zooniverse or lines.complete)
    assert all(d.getvalue() == b"" for d in direct.values()) and tap.records().to_bytes() == \
        EventTap().records().to_bytes()
