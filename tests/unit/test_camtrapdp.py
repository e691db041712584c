"""Camtrap DP export, validated by ``frictionless`` against the 1.0.2 profile and table schemas, offline.

The package names the canonical schema URLs (the profile requires exactly those); frictionless is given an HTTP
session that answers them from copies in tests/unit/data/camtrap-dp-1.0.2/ and refuses every other address, so the test never
touches the network. Two documents the profile ``$ref``s are not in the reference folder: the GeoJSON schema is
served from frictionless's own bundled copy, and the generic Data Package schema by a permissive stand-in, since
frictionless checks a package's Data Package rules itself (``Package.metadata_profile``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from core import mdformat
from gpu_batch.formats import camtrapdp, csvline

import frictionless  # requirements/dev.txt
import requests

# Copies of the 1.0.2 profile and table schemas (MIT, from ../shared/reference/camtrap-dp/, LICENSE beside them).
REFERENCE = Path(__file__).resolve().parent / "data" / "camtrap-dp-1.0.2"


# The generic Data Package schema's rules on contributors (at least one, each with a title) and licences (at least
# one, each with a name or a path; a name "MUST be an Open Definition license identifier", its pattern; a path "A
# fully qualified URL, or a POSIX file path", its pattern), as frictionlessdata/datapackage's 1.0 data-package.json
# says them, which the Camtrap DP profile inherits ($ref); the rest of that schema frictionless checks itself (its
# own check of a licence wants only a name or a path, no pattern).
DATA_PACKAGE_RULES = json.dumps({"properties": {
    "contributors": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["title"]}},
    "licenses": {"type": "array", "minItems": 1, "items": {
        "type": "object", "anyOf": [{"required": ["name"]}, {"required": ["path"]}],
        "properties": {"name": {"type": "string", "pattern": "^([-a-zA-Z0-9._])+$"},
                       "path": {"type": "string", "pattern": "^(?=^[^./~])(^((?!\\.{2}).)*$).*$"},
                       "title": {"type": "string"}}}}}}).encode()


class _OfflineAdapter(requests.adapters.BaseAdapter):
    def send(self, request: Any, **kwargs: Any) -> Any:
        url = request.url
        if url.startswith("https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/"):
            body = (REFERENCE / url.rsplit("/", 1)[-1]).read_bytes()
        elif url == "http://json.schemastore.org/geojson.json":
            body = (Path(frictionless.__file__).parent / "assets" / "profiles" / "geojson.json").read_bytes()
        elif url == "https://specs.frictionlessdata.io/schemas/data-package.json":
            body = DATA_PACKAGE_RULES
        else:
            raise AssertionError(f"the validation tried to reach {url}")
        response = requests.Response()
        response.status_code, response.url, response.request = 200, url, request
        import io

        response.raw = io.BytesIO(body)
        return response

    def close(self) -> None:
        pass


def validate(folder: Path) -> Any:
    session = requests.Session()
    session.mount("https://", _OfflineAdapter())
    session.mount("http://", _OfflineAdapter())
    with frictionless.system.use_context(http_session=session):
        return frictionless.validate(str(folder / "datapackage.json"))


ENTRIES: list[dict[str, Any]] = [
    {"file": "siteA/cam1/100RECNX/IMG_0001.JPG", "datetime": "2024:05:01 06:30:00",
     "detections": [{"category": "1", "conf": 0.93, "bbox": [0.1, 0.2, 0.3, 0.4]},
                    {"category": "2", "conf": 0.51, "bbox": [0.9, 0.9, 0.3, 0.3]},  # runs off the image: clipped
                    {"category": "3", "conf": 0.05, "bbox": [0.1, 0.1, 0.1, 0.1]},  # below the threshold
                    {"category": "1", "conf": -0.7, "bbox": [0.5, 0.5, 0.1, 0.1]}]},  # a removed repeat
    {"file": "siteA/cam1/101RECNX/IMG_0002.JPG", "datetime": "2024-05-03T07:00:00+02:00", "detections": []},
    {"file": "siteA/cam2/x.png", "detections": [{"category": "3", "conf": 0.4, "bbox": [0.0, 0.0, 1.0, 1.0]}]},
    mdformat.failure_entry("top.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"),
]


def build(folder: Path, entries: list[dict[str, Any]], locations: dict[str, Any] | None = None,
          listed: dict[str, dict[str, str]] | None = None, utc_offset: str = "",
          media_where: str = "", media_base: str = "") -> camtrapdp.CamtrapBuilder:
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1",
                                 locations=locations or {}, utc_offset=utc_offset, media_base=media_base)
    with (folder / "media.csv").open("w", newline="", encoding="utf-8") as m, \
            (folder / "observations.csv").open("w", newline="", encoding="utf-8") as o:
        media, obs = csv.writer(m), csv.writer(o)
        media.writerow(camtrapdp.MEDIA_COLUMNS)
        obs.writerow(camtrapdp.OBSERVATION_COLUMNS)
        for e in entries:
            row, rows = b.add(e, (listed or {}).get(e["file"]))
            media.writerow(row)
            obs.writerows(rows)
    with (folder / "deployments.csv").open("w", newline="", encoding="utf-8") as d:
        w = csv.writer(d)
        w.writerow(camtrapdp.DEPLOYMENT_COLUMNS)
        w.writerows(b.deployment_rows())
    descriptor = b.descriptor("trapbatch-task-x", "site A", "2026-12-01T10:00:00Z",
                              [{"title": "trapbatch", "role": "contributor"}],
                              [{"name": "CC-BY-4.0", "scope": "data"}, {"name": "CC-BY-4.0", "scope": "media"}],
                              media_where=media_where)
    (folder / "datapackage.json").write_text(json.dumps(descriptor))
    return b


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_the_package_is_valid_camtrap_dp(tmp_path: Path) -> None:
    build(tmp_path, ENTRIES, {"siteA/cam1": {"latitude": 51.5, "longitude": 4.7}})
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    deployments = {r["deploymentID"]: r for r in rows(tmp_path / "deployments.csv")}
    assert set(deployments) == {"siteA/cam1", "siteA/cam2", "(root)"}  # overflow folders belong to their camera
    cam1 = deployments["siteA/cam1"]
    # cam1's EXIF times have no zone and the task gave none: written as UTC, an unknown time zone (an issue)
    assert (cam1["latitude"], cam1["timestampIssues"]) == ("51.5", "true")
    assert cam1["deploymentComments"] == camtrapdp.ISSUE_COMMENTS[2][1]
    assert cam1["deploymentStart"] == "2024-05-01T06:30:00+00:00" and cam1["deploymentEnd"] == "2024-05-03T07:00:00+02:00"
    assert deployments["siteA/cam2"]["timestampIssues"] == "true" and "0, 0" in deployments["siteA/cam2"]["deploymentComments"]
    # the package's span covers every deployment's: cam2's image has no capture time, so cam2 is the detection day
    assert json.loads((tmp_path / "datapackage.json").read_text())["temporal"] == {"start": "2024-05-01",
                                                                                   "end": "2026-12-01"}
    assert deployments["siteA/cam2"]["deploymentStart"] == "2026-12-01T10:00:00+00:00"  # none: the detection time
    observations = rows(tmp_path / "observations.csv")
    kinds = [(o["mediaID"], o["observationType"]) for o in observations]
    a, b, c = (camtrapdp.media_id(e["file"]) for e in ENTRIES[:3])
    assert kinds == [(a, "animal"), (a, "human"), (b, "blank"), (c, "vehicle")]  # nothing for the failed image
    assert {o["classificationMethod"] for o in observations} == {"machine"}
    human = observations[1]
    assert (human["bboxX"], human["bboxWidth"], human["classificationProbability"]) == ("0.9", "0.1", "0.51")
    media = {m["filePath"]: m for m in rows(tmp_path / "media.csv")}
    assert len(media) == 4 and "detection failed" in media["top.jpg"]["mediaComments"]


@pytest.mark.parametrize("locations,coordinates", [
    ({}, "No deployment has known coordinates"),
    ({"siteA/cam1": {"latitude": 51.5, "longitude": 4.7}}, "2 of 3 deployments have no known coordinates"),
    ({d: {"latitude": 51.5, "longitude": 4.7} for d in ("siteA/cam1", "siteA/cam2", "(root)")}, None)])
def test_the_description_names_what_stands_in_for_what_the_detections_cannot_know(
        tmp_path: Path, locations: dict[str, Any], coordinates: str | None) -> None:
    """The 1.0.2 profile requires ``project.samplingDesign`` and ``project.captureMethod``, and the deployments table
    ``latitude`` and ``longitude``; a results file knows none of them, so values stand in. A deployment's comments
    say so of its 0, 0, but the package's own metadata said nothing: it read as an opportunistic, motion-triggered
    survey at 0, 0. R camtrapdp's ``write_eml`` (inbo/camtrapdp R/write_eml.R, the dataset's metadata for GBIF) makes
    the description the abstract and states the placeholders as facts ("This project uses a opportunistic sampling
    design ... triggered with activity detection"). The description now says which values stand in, to be replaced
    before publishing."""
    build(tmp_path, ENTRIES, locations)
    assert validate(tmp_path).valid
    descriptor = json.loads((tmp_path / "datapackage.json").read_text())
    described = descriptor["description"]
    assert descriptor["project"]["samplingDesign"] == "opportunistic"
    assert camtrapdp.PROJECT_PLACEHOLDERS in described
    if coordinates is None:
        assert "coordinates" not in described
    else:
        assert coordinates in described and "replace them before publishing" in described
    assert described.endswith(camtrapdp.NO_ZONE)  # the notes on times stay last


def test_a_broken_package_is_caught(tmp_path: Path) -> None:
    """The validation is real: a classification method outside the schema's enum fails it."""
    build(tmp_path, ENTRIES)
    table = rows(tmp_path / "observations.csv")
    table[0]["classificationMethod"] = "robot"
    with (tmp_path / "observations.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, camtrapdp.OBSERVATION_COLUMNS)
        w.writeheader()
        w.writerows(table)
    report = validate(tmp_path)
    assert not report.valid
    assert report.flatten(["fieldName", "cell"]) == [["classificationMethod", "robot"]]


def test_the_cameras_utc_offset_places_clock_times_and_leaves_zoned_ones(tmp_path: Path) -> None:
    """EXIF times have no zone: the task's utc_offset is theirs (and a listed time's without one); a time that
    carries its own offset keeps it; without an offset they are UTC and the package's description says so."""
    build(tmp_path, LISTED_ENTRIES, listed=LISTED, utc_offset="-05:30")
    assert validate(tmp_path).valid
    media = {m["filePath"]: m["timestamp"] for m in rows(tmp_path / "media.csv")}
    assert media["siteA/cam1/100RECNX/IMG_0001.JPG"] == "2024-05-01T06:30:00-05:30"  # EXIF's clock, in the zone
    assert media["siteA/cam1/101RECNX/IMG_0002.JPG"] == "2024-05-03T07:00:00+02:00"  # its own offset stands
    assert media["siteA/cam1/IMG_0003.JPG"] == "2024-05-04T08:15:00+03:00"  # the list's, with its offset
    observed = {o["mediaID"]: o["eventStart"] for o in rows(tmp_path / "observations.csv")}
    assert observed[camtrapdp.media_id("siteA/cam1/100RECNX/IMG_0001.JPG")] == "2024-05-01T06:30:00-05:30"
    description = json.loads((tmp_path / "datapackage.json").read_text())["description"]
    assert "at UTC-05:30" in description and camtrapdp.NO_ZONE not in description
    build(tmp_path, LISTED_ENTRIES, listed={"siteA/cam1/IMG_0003.JPG": {"datetime": "2024-05-04 08:15:00"}})
    media = {m["filePath"]: m["timestamp"] for m in rows(tmp_path / "media.csv")}
    assert (media["siteA/cam1/100RECNX/IMG_0001.JPG"], media["siteA/cam1/IMG_0003.JPG"]) == (
        "2024-05-01T06:30:00+00:00", "2024-05-04T08:15:00+00:00")
    assert json.loads((tmp_path / "datapackage.json").read_text())["description"].endswith(camtrapdp.NO_ZONE)



@pytest.mark.parametrize("utc_offset,listed_offset,issues", [("", "", "true"), ("+02:00", "", "false"),
                                                              ("", "-03:00", "false")])
def test_a_time_zone_written_by_default_is_a_timestamp_issue(tmp_path: Path, utc_offset: str, listed_offset: str,
                                                             issues: str) -> None:
    """Camtrap DP's timestampIssues: "`true` if timestamps in the media resource for the deployment are known to
    have (unsolvable) issues (e.g. unknown timezone, ...)". An EXIF time has no zone: without the task's
    utc_offset or the list's, it is written as UTC, which is a guess, and its deployment says so; with either,
    the zone is known and the deployment has no issue."""
    entry = {"file": "siteA/cam1/IMG_0001.JPG", "datetime": "2024:05:01 06:30:00", "detections": []}
    listed = {entry["file"]: {"utc_offset": listed_offset}} if listed_offset else None
    build(tmp_path, [entry], listed=listed, utc_offset=utc_offset)
    assert validate(tmp_path).valid
    (deployment,) = rows(tmp_path / "deployments.csv")
    assert deployment["timestampIssues"] == issues
    assert ("time zone unknown" in deployment["deploymentComments"]) == (issues == "true")
    assert camtrapdp.NO_CAPTURE_TIME not in deployment["deploymentComments"]  # every image has its capture time
    (media,) = rows(tmp_path / "media.csv")
    assert media["timestamp"] == "2024-05-01T06:30:00" + (utc_offset or listed_offset or "+00:00")


def test_an_image_lists_utc_offset_is_that_cameras_zone_over_the_tasks(tmp_path: Path) -> None:
    """A project whose cameras span zones: a list's ``utc_offset`` column (any alias) places that image's times
    without a zone, over the task's; an unreadable one is kept in the comments and the task's zone stands."""
    listed = {"siteA/cam1/100RECNX/IMG_0001.JPG": {"Time Zone Offset": "-0700", "site": "J05"},
              "siteA/cam1/IMG_0003.JPG": {"utc_offset": "+14:30", "datetime": "2024-05-04 08:15:00"},
              "siteA/cam2/x.png": {"tz_offset": "Z", "datetime": "2024-05-05 10:00:00"}}
    build(tmp_path, LISTED_ENTRIES, listed=listed, utc_offset="+02:00")
    assert validate(tmp_path).valid
    media = {m["filePath"]: m for m in rows(tmp_path / "media.csv")}
    assert media["siteA/cam1/100RECNX/IMG_0001.JPG"]["timestamp"] == "2024-05-01T06:30:00-07:00"  # EXIF, the list's
    assert media["siteA/cam1/IMG_0003.JPG"]["timestamp"] == "2024-05-04T08:15:00+02:00"  # +14:30: none, the task's
    assert listed_part(media["siteA/cam1/IMG_0003.JPG"]["mediaComments"]) == {"utc_offset": "+14:30"}
    assert media["siteA/cam2/x.png"]["timestamp"] == "2024-05-05T10:00:00+00:00"
    assert media["siteA/cam1/101RECNX/IMG_0002.JPG"]["timestamp"] == "2024-05-03T07:00:00+02:00"  # its own offset
    assert "time_zone_offset" not in media["siteA/cam1/100RECNX/IMG_0001.JPG"]["mediaComments"].lower()


def test_a_photos_own_exif_offset_places_its_time_over_the_lists_and_the_tasks(tmp_path: Path) -> None:
    """The worker writes a photo's EXIF 2.31 offsets beside its ``datetime`` as MegaDetector's ``exif_metadata``
    (``gpu_batch.worker.results.detections_entry``). ``OffsetTimeOriginal`` (else ``OffsetTimeDigitized``, else
    ``OffsetTime``) is the zone of that photo's EXIF time, over the image list's ``utc_offset`` and the task's, and such
    a time is no "time zone unknown" (``timestampIssues`` stays false for a deployment whose every time came with its
    offset); an offset that does not read as one is passed over; an entry without ``exif_metadata`` (results written
    before) reads as before. The CSV and COCO keep EXIF's wall-clock ``datetime``, the camera's own reading, as
    before."""
    from gpu_batch.formats import coco, detections_csv

    def shot(name: str, exif: dict[str, str] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": name, "detections": [], "datetime": "2024:05:01 06:30:00"}
        return {**entry, "exif_metadata": exif} if exif is not None else entry

    entries = [shot("camA/own.jpg", {"OffsetTimeOriginal": "+02:00", "OffsetTime": "+01:00"}),
               shot("camA/fallback.jpg", {"OffsetTime": "-0330"}),
               shot("camA/blank.jpg", {"OffsetTimeOriginal": "  :  ", "OffsetTime": "+05:45"}),
               shot("camB/listed.jpg", {"OffsetTimeOriginal": "+09:00"}),
               shot("camC/old.jpg", None), shot("camD/junk.jpg", {"OffsetTimeOriginal": "local"})]
    listed = {"camB/listed.jpg": {"utc_offset": "-03:00"}}
    build(tmp_path, entries, listed=listed)  # the task gives no zone
    assert validate(tmp_path).valid
    media = {m["fileName"]: m for m in rows(tmp_path / "media.csv")}
    assert {name: m["timestamp"] for name, m in media.items()} == {
        "own.jpg": "2024-05-01T06:30:00+02:00", "fallback.jpg": "2024-05-01T06:30:00-03:30",
        "blank.jpg": "2024-05-01T06:30:00+05:45", "listed.jpg": "2024-05-01T06:30:00+09:00",
        "old.jpg": "2024-05-01T06:30:00+00:00", "junk.jpg": "2024-05-01T06:30:00+00:00"}
    issues = {d["deploymentID"]: d["timestampIssues"] for d in rows(tmp_path / "deployments.csv")}
    assert issues == {"camA": "false", "camB": "false", "camC": "true", "camD": "true"}
    # a task's utc_offset places the old entry, not the photo that has its own
    b = camtrapdp.CamtrapBuilder(0.2, mdformat.DETECTION_CATEGORIES, "2026-12-01T10:00:00", "MDv5a",
                                 utc_offset="-05:00")
    assert [b.add(e)[0][3] for e in entries[:1] + entries[4:5]] == ["2024-05-01T06:30:00+02:00",
                                                                   "2024-05-01T06:30:00-05:00"]
    assert detections_csv.capture_time(entries[0]) == detections_csv.capture_time(entries[4]) == "2024-05-01 06:30:00"
    image, _ = coco.convert_entry(entries[0], None, 0.2, mdformat.DETECTION_CATEGORIES)
    assert (image["datetime"], image["exif_metadata"]) == ("2024-05-01 06:30:00", entries[0]["exif_metadata"])


@pytest.mark.parametrize(("tags", "want", "issue"), [
    ({"OffsetTimeOriginal": "+02:00\x00"}, "+02:00", False),  # NUL-padded: EXIF ASCII ends at its first NUL
    ({"OffsetTimeOriginal": "+05:30\x00\x00\x00", "OffsetTime": "+01:00"}, "+05:30", False),
    ({"OffsetTimeOriginal": "\x00+09:00"}, "-05:00", True),  # nothing before the NUL: none of its own
    ({"OffsetTimeOriginal": "+14:00"}, "+14:00", False),  # Kiribati, the largest offset there is
    ({"OffsetTimeOriginal": "-00:00", "OffsetTime": "-00:00"}, "-05:00", True),  # RFC 3339: offset unknown
    ({"OffsetTimeOriginal": "-00:00", "OffsetTime": "+03:00"}, "+03:00", False),
    ({"OffsetTimeOriginal": "-0000"}, "-05:00", True),
    ({"OffsetTimeOriginal": "+00:00"}, "+00:00", False),  # a camera set to UTC says so
    ({"OffsetTimeOriginal": "+14:30"}, "-05:00", True),  # no such offset
    ({"OffsetTimeOriginal": 2}, "-05:00", True)])
def test_a_photos_exif_offset_as_cameras_write_it(tags: dict[str, Any], want: str, issue: bool) -> None:
    """EXIF ASCII values end at their first NUL (EXIF 2.32, 4.6.2: "The final byte is terminated with NULL"); a
    camera that pads ``OffsetTimeOriginal`` past its 7 bytes reads, through PIL, as ``"+02:00\x00"``, which
    ``str.strip`` keeps: that photo's own offset was passed over and its time written in the task's zone. ``-00:00``
    is RFC 3339's "local offset unknown" (section 4.3), not a statement that the camera ran at UTC (EXIF 2.32 fills
    an unknown offset with blanks; a camera at UTC writes ``+00:00``): such a photo's time takes the list's or the
    task's offset, and, without one, counts as a time zone unknown (``timestampIssues``)."""
    entry = {"file": "cam/a.jpg", "detections": [], "datetime": "2024:05:01 06:30:00", "exif_metadata": tags}
    placed = camtrapdp.CamtrapBuilder(0.2, mdformat.DETECTION_CATEGORIES, "2026-12-01T10:00:00", "MDv5a",
                                      utc_offset="-05:00")
    assert placed.add(entry)[0][3] == "2024-05-01T06:30:00" + want
    unplaced = camtrapdp.CamtrapBuilder(0.2, mdformat.DETECTION_CATEGORIES, "2026-12-01T10:00:00", "MDv5a")
    media = unplaced.add(entry)[0]
    assert media[3] == "2024-05-01T06:30:00" + ("+00:00" if issue else want)
    assert bool(unplaced.deployments["cam"].timestamp_issues & camtrapdp.ZONE_ASSUMED) == issue


@pytest.mark.parametrize(("tags", "want"), [
    ({"OffsetTimeDigitized": "+02:00", "OffsetTime": "+01:00"}, "+02:00"),  # an edited photo: DateTime's moved
    ({"OffsetTimeOriginal": "+03:00", "OffsetTimeDigitized": "+02:00", "OffsetTime": "+01:00"}, "+03:00"),
    ({"OffsetTimeOriginal": "-00:00", "OffsetTimeDigitized": "+02:00", "OffsetTime": "+01:00"}, "+02:00"),
    ({"OffsetTimeDigitized": "   :  ", "OffsetTime": "+01:00"}, "+01:00"),  # blanks: none, DateTime's stands in
    ({"OffsetTimeDigitized": "+02:00\x00"}, "+02:00")])
def test_the_offset_of_datetimedigitized_comes_before_that_of_datetime(tags: dict[str, str], want: str) -> None:
    """``OffsetTimeDigitized`` (0x9012) is the offset of DateTimeDigitized, which a camera writes equal to
    DateTimeOriginal (EXIF 2.32: when the image was stored as digital data, the same contents for a camera that
    records the file as it shoots); ``OffsetTime`` (0x9010) is that of DateTime, the file's last change, which
    editing software rewrites in its own computer's zone. Before, a photo without ``OffsetTimeOriginal`` took
    ``OffsetTime``: a camera at +02:00 edited on a laptop at +01:00 was written an hour off."""
    entry = {"file": "cam/a.jpg", "detections": [], "datetime": "2024:05:01 06:30:00", "exif_metadata": tags}
    assert camtrapdp.exif_offset(entry) == want
    builder = camtrapdp.CamtrapBuilder(0.2, mdformat.DETECTION_CATEGORIES, "2026-12-01T10:00:00", "MDv5a",
                                       utc_offset="-05:00")
    assert builder.add(entry)[0][3] == "2024-05-01T06:30:00" + want


def test_timestamps_and_camera_folders() -> None:
    assert camtrapdp.camtrap_timestamp("2024:05:01 06:30:00") == "2024-05-01T06:30:00+00:00"
    assert camtrapdp.camtrap_timestamp("not a time") is None
    zone = camtrapdp.utc_offset_zone("+14:00")
    assert camtrapdp.camtrap_timestamp("2024:05:01 06:30:00", zone) == "2024-05-01T06:30:00+14:00"
    assert camtrapdp.camtrap_timestamp("2024-05-01T06:30:00Z", zone) == "2024-05-01T06:30:00+00:00"
    assert camtrapdp.camera_folder("a/b/100EK113/x.jpg") == "a/b" and camtrapdp.deployment_id("x.jpg") == "(root)"


@pytest.mark.parametrize("value", ["2024:05:01 06:30:00", "2024-05-01 06:30:00.250", "0001:01:01 00:00:00",
                                   "9999-12-31T23:59:59.999999", "2024-10-27 02:30:00", "2024-05-01T06:30:00+05:30"])
def test_a_time_without_offset_is_written_in_the_zone_as_isoformat_writes_it(value: str) -> None:
    # the zone's offset text is put after the time without making the aware datetime (a fixed offset; others as
    # before): the same text as isoformat of the time in that zone, offsets with seconds and a zone with rules too
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    for zone in (timezone.utc, timezone(timedelta(hours=-3, minutes=-30)), timezone(timedelta(seconds=3661)),
                 timezone(timedelta(hours=2), "named"), ZoneInfo("Europe/Berlin")):
        parsed = datetime.fromisoformat(value.replace(":", "-", 2) if value[4] == ":" else value)
        placed = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
        assert camtrapdp.camtrap_timestamp(value, zone) == placed.replace(microsecond=0).isoformat()


@pytest.mark.parametrize("file", ["a/b/100EK113/x.jpg", "x.jpg", "a\\b\\100RECNX\\y.jpg", "a/100MEDIA/101MEDIA/z.jpg",
                                  "a/b/c.jpg", "/lead/100_BTCF/f.JPG", "site/123DSCIM/d.jpg", "site/RECNX/e.jpg",
                                  "a//b/c.jpg", "a/b/", "a\\b/c/100RECNX/"])
def test_camera_folders_are_megadetectors(file: str) -> None:
    from megadetector.utils import ct_utils

    assert camtrapdp.camera_folder(file) == ct_utils.image_file_to_camera_folder(file)


# an image list's rows for ENTRIES (and one more image), as core.imagelist reads them: text, the list's column names
LISTED: dict[str, dict[str, str]] = {
    "siteA/cam1/100RECNX/IMG_0001.JPG": {"Site": "J05", "datetime": "2024-04-01 00:00:00", "seq_id": "S1#J05#1#7",
                                         "Latitude": "-2.33", "longitude": "34.83", "camera": "CAM-17",
                                         "season": "S1", "roll": "1"},
    "siteA/cam1/101RECNX/IMG_0002.JPG": {"site": "J05", "latitude": "95", "longitude": "34.8", "season": "S1"},
    "siteA/cam1/IMG_0003.JPG": {"site": "J06", "timestamp": "2024-05-04 08:15:00+03:00",
                                "note": 'says "hi"; twice'},
    "siteA/cam2/x.png": {"datetime": "yesterday", "camera_id": "CAM-2", "season": ""},
    "top.jpg": {"site": "J05", "latitude": "-2.33", "longitude": "34.83", "camera": "CAM-99"},
}
LISTED_ENTRIES = [*ENTRIES[:3], {"file": "siteA/cam1/IMG_0003.JPG", "detections": []}, ENTRIES[3]]


def listed_part(comment: str) -> dict[str, str]:
    """The image list's columns a mediaComments holds (last, after the fixed label)."""
    assert camtrapdp.LIST_METADATA_LABEL in comment, comment
    return dict(json.loads(comment.split(camtrapdp.LIST_METADATA_LABEL, 1)[1]))


def test_an_image_lists_columns_fill_camtrap_dp_fields_and_the_package_stays_valid(tmp_path: Path) -> None:
    build(tmp_path, LISTED_ENTRIES, listed=LISTED)
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    deployments = {r["deploymentID"]: r for r in rows(tmp_path / "deployments.csv")}
    # a deployment is a camera folder at one location: the listed location splits a folder's images
    assert set(deployments) == {"siteA/cam1@J05", "siteA/cam1@J06", "siteA/cam2", "(root)@J05"}
    j05 = deployments["siteA/cam1@J05"]
    assert (j05["locationID"], j05["locationName"], j05["latitude"], j05["longitude"], j05["cameraID"]) == \
        ("J05", "J05", "-2.33", "34.83", "CAM-17")
    assert "0, 0" not in j05["deploymentComments"] and j05["timestampIssues"] == "true"  # EXIF's time, no zone
    assert (deployments["(root)@J05"]["locationID"], deployments["(root)@J05"]["cameraID"]) == ("J05", "CAM-99")
    cam2 = deployments["siteA/cam2"]
    assert (cam2["locationID"], cam2["cameraID"], cam2["timestampIssues"]) == ("", "CAM-2", "true")
    media = {m["filePath"]: m for m in rows(tmp_path / "media.csv")}
    first, second, x, third, top = (media[e["file"]] for e in LISTED_ENTRIES)
    # the entry's own EXIF time stands over the list's, which is kept in the comments
    assert first["timestamp"] == "2024-05-01T06:30:00+00:00"
    assert listed_part(first["mediaComments"]) == {"datetime": "2024-04-01 00:00:00", "season": "S1", "roll": "1"}
    # a latitude out of range is no coordinate: kept with its partner, the deployment keeps the first image's
    assert listed_part(second["mediaComments"]) == {"latitude": "95", "longitude": "34.8", "season": "S1"}
    # a listed time (with its offset) is the timestamp when the entry has none; text with quotes and ";" survives
    assert third["timestamp"] == "2024-05-04T08:15:00+03:00" and third["deploymentID"] == "siteA/cam1@J06"
    assert listed_part(third["mediaComments"]) == {"note": 'says "hi"; twice'}
    assert camtrapdp.NO_CAPTURE_TIME not in third["mediaComments"]
    # an unreadable time: the completion time stands in, said so, and the list's value kept
    assert x["mediaComments"].startswith(camtrapdp.NO_CAPTURE_TIME)
    assert listed_part(x["mediaComments"]) == {"datetime": "yesterday"}
    assert "detection failed" in top["mediaComments"] and camtrapdp.LIST_METADATA_LABEL not in top["mediaComments"]
    # the sequence is the observations' event
    events = {o["mediaID"]: o["eventID"] for o in rows(tmp_path / "observations.csv")}
    assert events[first["mediaID"]] == "S1#J05#1#7" and events[second["mediaID"]] == ""
    descriptor = json.loads((tmp_path / "datapackage.json").read_text())
    assert [34.83, -2.33] in descriptor["spatial"]["coordinates"][0]


def test_without_a_list_rows_are_unchanged(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    build(tmp_path / "a", ENTRIES)
    build(tmp_path / "b", ENTRIES, listed={e["file"]: {"blank": ""} for e in ENTRIES})
    for name in ("media.csv", "observations.csv", "deployments.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


ODD_ENTRIES = [
    {"file": 'a,b/c"d/IMG\r\n1.JPG', "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0.1, 0.2, 0.3]}]},
    {"file": "x/ \u2028é\x00/y.PNG", "datetime": "2024:05:01 06:30:00",
     "detections": [{"category": "9", "conf": 1.5, "bbox": [-0.5, 2, 0.7, 1e-7]},
                    {"category": "2", "conf": 1, "bbox": [0.1, 0.1]},
                    {"category": "3", "conf": 0.3, "bbox": [0.999999, 0.5, 1e-5, 0.25]}]},
    {"file": "x/ \u2028é\x00/z,.jpeg", "detections": None, "failure": 'odd, "quoted"\nfailure'},
    {"file": ".hidden", "detections": [{"category": "1", "conf": "high", "bbox": [0.1, 0.1, 0.1, 0.1]}]},
]
ODD_LISTED = {ODD_ENTRIES[0]["file"]: {"site": "S,1", "seq_id": 'ev"1', "camera": "c\n1", "lat": "1.5", "lon": "2"},
              ODD_ENTRIES[1]["file"]: {"site": "S,1", "seq_id": "e,2", "datetime": "not, a time", "note": '"x"'},
              ODD_ENTRIES[3]["file"]: {"lat": "91", "lon": "2", "date time": "2024-05-01T06:30:00"}}


@pytest.mark.parametrize("listed", [None, LISTED, ODD_LISTED])
def test_add_lines_is_csv_writer_over_add(listed: dict[str, dict[str, str]] | None) -> None:
    def builder() -> camtrapdp.CamtrapBuilder:
        return camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                        completed_at="2026-12-01T10:00:00", classified_by='Mega, "Detector"')
    by_rows, by_lines = builder(), builder()
    for e in [*ENTRIES, *LISTED_ENTRIES, *ODD_ENTRIES]:
        metadata = (listed or {}).get(e["file"])
        row, rows = by_rows.add(e, metadata)
        media, observations = by_lines.add_lines(e, metadata)
        out = io.StringIO(newline="")
        csv.writer(out).writerow(row)
        assert media == out.getvalue()
        out = io.StringIO(newline="")
        csv.writer(out).writerows(rows)
        assert observations == out.getvalue()
    assert by_rows.counts == by_lines.counts and by_rows.deployments == by_lines.deployments
    assert by_rows.deployment_rows() == by_lines.deployment_rows()


def test_photos_without_capture_time_take_their_deployments_first_in_their_rows() -> None:
    """``stand_in_media`` and ``link_observations`` over the rows as written (a name and a failure with quotes,
    commas and line breaks included): a photo without a capture time in a deployment with one gets the deployment's
    deploymentStart (a second before its first capture time) instead of the detection time, in its media row and its
    observations, and no event; one of a deployment without any keeps the detection time (its deployment's span);
    every other line is left byte for byte."""
    from core.camtrap_events import EventIndex, link_observations

    det = [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}]
    entries: list[dict[str, Any]] = [
        {"file": "siteA/cam1/a.jpg", "detections": det},  # before the deployment's first capture time is known
        {"file": 'siteA/cam1/b,"c"\r\n.jpg', "detections": None, "failure": 'odd, "quoted"\nfailure'},
        {"file": "siteA/cam1/d.jpg", "datetime": "2024:05:02 08:00:00", "detections": []},
        {"file": "siteA/cam1/e.jpg", "datetime": "2024:05:01 06:30:00", "detections": det},
        {"file": "siteA/cam2/x.jpg", "detections": det},  # a camera without any capture time
    ]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:04:05", classified_by="MegaDetector v5a.0.1",
                                 utc_offset="+02:00")
    written = [b.add_lines(e) for e in entries]
    assert b.stand_ins() == {"siteA/cam1": "2024-05-01T06:29:59+02:00"}
    media_text = csvline.line(camtrapdp.MEDIA_COLUMNS) + "".join(m for m, _ in written)
    moved: dict[str, str] = {}
    out = "".join(camtrapdp.stand_in_media(io.StringIO(media_text, newline=""), b.stand_ins(), moved))
    a, odd, x = (camtrapdp.media_id(entries[i]["file"]) for i in (0, 1, 4))
    assert moved == {a: "2024-05-01T06:29:59+02:00", odd: "2024-05-01T06:29:59+02:00"}
    before, after = (list(csv.reader(io.StringIO(t, newline=""))) for t in (media_text, out))
    assert len(after) == len(before) == 6
    for was, now in zip(before, after):
        if now[0] in moved:
            assert now[3] == "2024-05-01T06:29:59+02:00" and was[3] == "2026-12-01T10:04:05+00:00"
            assert was[10].startswith(camtrapdp.NO_CAPTURE_TIME)
            assert now[10] == camtrapdp.FIRST_CAPTURE_STANDS_IN + was[10][len(camtrapdp.NO_CAPTURE_TIME):]
            assert now[:3] + now[4:10] == was[:3] + was[4:10]
        else:
            assert now == was
    assert after[2][4] == camtrapdp.media_file_path(entries[1]["file"]) and "failed: odd" in after[2][10]
    assert out.split("\r\n")[-2] == media_text.split("\r\n")[-2]  # cam2's row: the detection time, as written
    assert [r[3] for r in after if r[0] == x] == ["2026-12-01T10:04:05+00:00"]
    observations = "".join(o for _, o in written)
    linked = list(csv.reader(io.StringIO("".join(link_observations(
        iter(io.StringIO(observations, newline="")), EventIndex(), set(), moved)), newline="")))
    assert [(r[2], r[3], r[4], r[5]) for r in linked if r[2] in (a, x)] == [
        (a, "", "2024-05-01T06:29:59+02:00", "2024-05-01T06:29:59+02:00"),
        (x, "", "2026-12-01T10:04:05+00:00", "2026-12-01T10:04:05+00:00")]
    rows = {r[0]: r for r in b.deployment_rows()}
    cam1 = dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, rows["siteA/cam1"]))
    assert (cam1["deploymentStart"], cam1["deploymentEnd"], cam1["timestampIssues"]) == (
        "2024-05-01T06:29:59+02:00", "2024-05-02T08:00:00+02:00", "true")
    assert camtrapdp.FIRST_CAPTURE_FOR_SOME in cam1["deploymentComments"]
    assert camtrapdp.NO_CAPTURE_TIME in dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, rows["siteA/cam2"]))[
        "deploymentComments"]
    descriptor = b.descriptor("trapbatch-task-x", "site A", "2026-12-01T10:04:05Z", [{"title": "t"}])
    assert descriptor["temporal"] == {"start": "2024-05-01", "end": "2026-12-01"}  # cam2: the detection day


def test_the_packages_time_span_starts_on_the_day_of_a_stand_in_before_a_midnight_first_capture() -> None:
    """A deployment whose first capture is at midnight and that has a photo without capture time starts a second
    before, on the day before (``stand_in_time``): the package's ``temporal`` starts that day too, so it covers every
    deploymentStart and media timestamp, as Camtrap DP's "Start date of the first deployment" says."""
    entries = [{"file": "siteA/cam1/a.jpg", "datetime": "2024:05:01 00:00:00", "detections": []},
               {"file": "siteA/cam1/b.jpg", "detections": []}]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:04:05", classified_by="MegaDetector v5a.0.1",
                                 utc_offset="+02:00")
    for e in entries:
        b.add_lines(e)
    [row] = b.deployment_rows()
    assert dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, row))["deploymentStart"] == "2024-04-30T23:59:59+02:00"
    descriptor = b.descriptor("trapbatch-task-x", "site A", "2026-12-01T10:04:05Z", [{"title": "t"}])
    assert descriptor["temporal"] == {"start": "2024-04-30", "end": "2024-05-01"}


def test_capture_times_at_the_edge_of_the_calendar_do_not_stop_the_exports() -> None:
    """The worker keeps any EXIF time that parses as ``YYYY:MM:DD HH:MM:SS`` (``preprocess.exif_capture_time``), so
    a camera's clock reset to ``0001:01:01 00:00:00`` reaches the exports, and an image list may give such a time too.
    A second before it (``stand_in_time``, for a photo of that camera without capture time) and a clock correction
    that moves it earlier are before Python's first datetime: each raised OverflowError, which failed the task's whole
    exports. The stand-in is then that first time itself, and a correction that leaves the calendar makes the capture
    time unknown (said in the media row, with its stand-in and in no event), as the package can write no such time."""
    entries = [{"file": "cam1/a.jpg", "datetime": "0001:01:01 00:00:00", "detections": []},
               {"file": "cam1/b.jpg", "detections": []},  # no capture time: a stand-in before cam1's first
               {"file": "cam2/c.jpg", "datetime": "0001:01:01 00:10:00", "detections": []},
               {"file": "cam2/d.jpg", "datetime": "2024:06:01 06:00:00", "detections": []}]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:04:05", classified_by="MegaDetector v5a.0.1",
                                 utc_offset="+02:00", clock_shifts={"cam2": -3600})
    media = {e["file"]: dict(zip(camtrapdp.MEDIA_COLUMNS, b.add(e)[0])) for e in entries}
    deployments = {r[0]: dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, r)) for r in b.deployment_rows()}
    assert deployments["cam1"]["deploymentStart"] == "0001-01-01T00:00:00+02:00"
    assert b.stand_ins() == {"cam1": "0001-01-01T00:00:00+02:00", "cam2": "2024-06-01T04:59:59+02:00"}
    c, d = media["cam2/c.jpg"], media["cam2/d.jpg"]
    assert c["timestamp"] == "2026-12-01T10:04:05+00:00" and c["mediaComments"].startswith(camtrapdp.NO_CAPTURE_TIME)
    assert "clock_corrections" in c["mediaComments"] and "years 1-9999" in c["mediaComments"]
    assert d["timestamp"] == "2024-06-01T05:00:00+02:00"  # the rest of the camera is corrected
    assert deployments["cam2"]["deploymentStart"] == "2024-06-01T04:59:59+02:00"  # c's stand-in, a second before
    assert deployments["cam2"]["timestampIssues"] == "true"


def test_boxes_are_clamped_and_formatted_as_before() -> None:
    """The box fields against the rule as first written (each number clamped with min/max, then ``.6g``)."""
    import random

    def num(v: float) -> str:
        return f"{min(max(v, 0.0), 1.0):.6g}"

    rng = random.Random(2)
    edge = [0, 1, 0.0, 1.0, -0.0, -1, 2, 0.5, 1e-7, 1.0000001, -1e-300, float("inf"), -float("inf"), 1e-320]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MD")
    for i in range(5000):
        box = [rng.choice(edge) if rng.random() < 0.3 else rng.uniform(-0.3, 1.3) for _ in range(4)]
        _, rows = b.add({"file": f"a/{i}.jpg", "detections": [{"category": "1", "conf": 0.5, "bbox": box}]})
        x0, y0 = min(max(box[0], 0.0), 1.0), min(max(box[1], 0.0), 1.0)
        x1, y1 = min(max(box[0] + box[2], 0.0), 1.0), min(max(box[1] + box[3], 0.0), 1.0)
        want = [num(x0), num(y0), num(x1 - x0), num(y1 - y0)] if x1 > x0 and y1 > y0 else ["", "", "", ""]
        assert rows[0][18:22] == want, box


def test_first_facts_are_what_a_builder_fed_the_same_rows_holds() -> None:
    """``first_facts`` (the enumeration's cheap pass over a list) against ``CamtrapBuilder`` over the same rows:
    the same deployments in the same order with the same location and first coordinates and camera, whatever the
    rows give (GPS per image, out-of-range and half coordinates, aliases, a camera that changes, no row at all)."""
    import random

    from gpu_batch.formats.camtrapdp import CamtrapBuilder, first_facts
    from gpu_batch.formats.entries import DETECTION_CATEGORIES

    rng = random.Random(11)
    rows: list[tuple[str, dict[str, str] | None]] = []
    for i in range(400):
        name = f"site{i % 3}/cam{i % 5}/IMG_{i:04d}.JPG" if i % 17 else f"root{i}.jpg"
        row: dict[str, str] = {}
        if rng.random() < 0.8:
            row["Site" if i % 2 else "location"] = f"L{i % 4}"
        if rng.random() < 0.7:
            row["lat" if i % 3 else "latitude"] = rng.choice([f"-2.{i:04d}", "95", "", "north"])
            if rng.random() < 0.9:
                row["longitude"] = f"34.{i:04d}"
        if rng.random() < 0.5:
            row["camera"] = rng.choice(["A", "B", ""])
        if rng.random() < 0.3:
            row["datetime"] = "2024-05-01 10:00:00"
        rows.append((name, row or (None if i % 2 else {})))
    builder = CamtrapBuilder(0.2, DETECTION_CATEGORIES, "2026-12-03T00:00:00Z", "MegaDetector v5a.0.1")
    for name, row in rows:
        builder.add_lines({"file": name, "detections": []}, row)
    held = [[dep, d.location, d.latitude, d.longitude, d.camera] for dep, d in builder.deployments.items()]
    assert [[f[0], f[4], f[5], f[6], f[7]] for f in first_facts(rows)] == held
    assert any(h[2] is not None for h in held) and any(h[4] for h in held) and len(held) > 10


def test_a_package_always_names_a_contributor(tmp_path: Path) -> None:
    """The Data Package schema wants at least one contributor with a title; a task with no ``caller`` and no
    TRAPBATCH_EXPORT_ATTRIBUTION wrote an empty list, which a validator with that schema refuses."""
    from types import SimpleNamespace

    from activities.exports import contributors
    from core.zooniverse import ManifestOptions

    def ctx(caller: str, attribution: str) -> Any:
        return SimpleNamespace(request={"container": "photos", **({"caller": caller} if caller else {})},
                               manifest=ManifestOptions(threshold=0.2, attribution=attribution))

    assert contributors(ctx("ana", "")) == [{"title": "ana", "role": "contact"}]
    assert contributors(ctx("ana", "Univ. of X")) == [{"title": "ana", "role": "contact"},
                                                      {"title": "Univ. of X", "role": "rightsHolder"}]
    (unnamed,) = contributors(ctx("", ""))
    assert unnamed["role"] == "rightsHolder" and "photos" in unnamed["title"] and "TRAPBATCH_EXPORT_ATTRIBUTION" in \
        unnamed["title"]
    build(tmp_path, ENTRIES)
    descriptor = json.loads((tmp_path / "datapackage.json").read_text())
    for people, valid in (([unnamed], True), ([], False)):  # the stand-in schema holds the rule
        (tmp_path / "datapackage.json").write_text(json.dumps({**descriptor, "contributors": people}))
        assert validate(tmp_path).valid is valid


def write_package_descriptor(folder: Path, media: str, data: str) -> dict[str, Any]:
    """``datapackage.json`` as the exports write it (``activities.exports.write_descriptor``) for a task whose
    licence settings are ``media`` and ``data``, beside ``build``'s tables in ``folder``; returns it."""
    from types import SimpleNamespace

    from activities.exports import write_descriptor
    from core.zooniverse import ManifestOptions

    written: dict[str, Any] = {}
    store = SimpleNamespace(write_json=lambda container, name, doc: written.update(doc=doc))
    ctx = SimpleNamespace(task_id="task-x", variant="", title="site A", completed_at="2026-12-01T10:00:00",
                          license=media, data_license=data, request={"caller": "ana"}, container="c",
                          enumeration={"container": "photos"},
                          manifest=ManifestOptions(threshold=0.2, attribution="Univ. of X"))
    b = build(folder, ENTRIES)
    write_descriptor(store, ctx, b)  # type: ignore[arg-type]
    (folder / "datapackage.json").write_text(json.dumps(written["doc"]))
    return dict(written["doc"])


@pytest.mark.parametrize("media,data,entries", [
    ("CC-BY-4.0", "", [{"name": "CC-BY-4.0", "scope": "data"}, {"name": "CC-BY-4.0", "scope": "media"}]),
    ("https://creativecommons.org/licenses/by/4.0/", "CC0-1.0",
     [{"name": "CC0-1.0", "scope": "data"},
      {"path": "https://creativecommons.org/licenses/by/4.0/", "scope": "media"}]),
    ("CC BY 4.0", "", [{"name": "CC-BY-4.0", "scope": "data"}, {"name": "CC-BY-4.0", "scope": "media"}]),
    ("", "", None),
])
def test_licences_are_data_package_licences(tmp_path: Path, media: str, data: str,
                                            entries: list[dict[str, str]] | None) -> None:
    """A licence setting is an identifier (the Data Package schema's ``name``: ``^([-a-zA-Z0-9._])+$``) or a URL
    (its ``path``); Camtrap DP wants one for the data and one for the media once any is given: the media licence
    (TRAPBATCH_EXPORT_LICENSE) stands for the data too unless TRAPBATCH_EXPORT_DATA_LICENSE names another, as the
    Camtrap DP example does (CC0-1.0 data, CC BY media). The package validates against the real rule."""
    descriptor = write_package_descriptor(tmp_path, media, data)
    assert descriptor.get("licenses") == entries
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    # a name as people write it (spaces, a line break the pattern's "$" would let through) has hyphens written
    assert camtrapdp.license_entry("CC-BY-4.0\n", "media") == {"name": "CC-BY-4.0", "scope": "media"}
    assert camtrapdp.license_entry("CC BY-NC 4.0", "data") == {"name": "CC-BY-NC-4.0", "scope": "data"}


@pytest.mark.parametrize("value", ["https://example.org/../licence", "CC-BY-4.0;CC0-1.0", "~/licence.txt"])
def test_a_licence_the_data_package_schema_refuses_is_claimed_by_no_package_and_stops_nothing(
        tmp_path: Path, value: str) -> None:
    """A value the Data Package schema's licence rule refuses as a name or a path made an invalid package; refused
    where settings are read, it stopped every activity and route of a deployment that had it (running tasks and
    the closing of their pool jobs included). The settings take it; the package claims no licence, still valid."""
    from core.settings import Settings

    for name in ("TRAPBATCH_EXPORT_LICENSE", "TRAPBATCH_EXPORT_DATA_LICENSE"):
        settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                      "TRAPBATCH_EXPORT_LICENSE": "CC0-1.0", name: value})
        assert value in (settings.export_license, settings.export_data_license)
    for media, data in ((value, ""), ("CC-BY-4.0", value), ("", "CC0-1.0")):  # a data licence needs a media one
        descriptor = write_package_descriptor(tmp_path, media, data)
        report = validate(tmp_path)
        assert report.valid, report.flatten(["type", "note"])
        assert "licenses" not in descriptor
    (tmp_path / "datapackage.json").write_text(json.dumps({**descriptor, "licenses": [
        {"name": value, "scope": "data"}, {"name": value, "scope": "media"}]}))  # as the exports wrote it
    assert not validate(tmp_path).valid  # the real rule refuses it


def test_licence_settings_are_taken_as_given() -> None:
    from core.settings import Settings

    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    for value in ("", "CC-BY-4.0", "CC0-1.0", "ODC-By-1.0", "cc-by-nc-4.0", "CC BY 4.0",
                  "https://creativecommons.org/licenses/by/4.0/"):
        assert Settings.from_env({**base, "TRAPBATCH_EXPORT_LICENSE": value}).export_license == value
    both = Settings.from_env({**base, "TRAPBATCH_EXPORT_LICENSE": "CC-BY-4.0",
                              "TRAPBATCH_EXPORT_DATA_LICENSE": "CC0-1.0"})
    assert (both.export_license, both.export_data_license) == ("CC-BY-4.0", "CC0-1.0")
    assert Settings.from_env({**base, "TRAPBATCH_EXPORT_DATA_LICENSE": "CC0-1.0"}).export_data_license == "CC0-1.0"


def test_clock_corrections_shift_a_cameras_times_and_say_so(tmp_path: Path) -> None:
    entries = [{"file": "siteA/cam1/100RECNX/a.jpg", "datetime": "2000:01:01 00:12:00", "detections": []},
               {"file": "siteA/cam2/b.jpg", "datetime": "2024:06:01 06:00:00", "detections": []},
               {"file": "siteB/c.jpg", "datetime": "2024:06:01 06:00:00", "detections": []},
               {"file": "top.jpg", "datetime": "2024:06:01 06:00:00", "detections": []},
               {"file": "siteA/cam1/d.jpg", "detections": []}]  # no capture time: nothing to correct
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1",
                                 utc_offset="+02:00",
                                 clock_shifts={"siteA/cam1": 770537880, "siteA": -3600, "(root)": 60})
    media = [b.add(e)[0] for e in entries]
    stamps = [m[3] for m in media]
    assert stamps[:4] == ["2024-06-01T06:30:00+02:00",  # its camera folder's (overflow folder removed)
                          "2024-06-01T05:00:00+02:00",  # the folder above's
                          "2024-06-01T06:00:00+02:00",  # none
                          "2024-06-01T06:01:00+02:00"]  # (root)
    assert media[0][10] == "camera clock corrected by +770537880 s (clock_corrections)"
    assert media[2][10] == "" and "corrected" not in media[4][10]
    deployments = {d[0]: d for d in b.deployment_facts()}
    assert deployments["siteA/cam1"][1:3] == ["2024-06-01T06:30:00+02:00"] * 2  # the span is the corrected times'
    built = build(tmp_path, entries)  # and a package of such rows stays valid (build: no corrections)
    assert built.counts["media"] == 5
    row, _ = b.add_lines(entries[0])
    assert ",2024-06-01T06:30:00+02:00," in row and "corrected by +770537880 s" in row


def test_a_corrected_clock_is_no_timestamp_issue_but_is_said(tmp_path: Path) -> None:
    """Camtrap DP 1.0.2's timestampIssues: "`true` if timestamps in the media resource for the deployment are known
    to have (unsolvable) issues". A clock the request corrected (clock_corrections) is a solved one: R camtrapdp's own
    correction, ``shift_time`` (inbo/camtrapdp R/shift_time.R), sets ``timestampIssues`` to FALSE for the deployments
    it shifts. A reader that leaves out deployments with issues (activity patterns, detection histories) must not
    lose the very cameras whose times were put right; their deploymentComments still say they were corrected, and an
    unsolved issue beside the correction (a photo without a capture time) still makes it true."""
    entries = [{"file": "cam1/a.jpg", "datetime": "2000:01:01 00:12:00", "detections": []},
               {"file": "cam1/b.jpg", "datetime": "2000:01:01 00:13:00", "detections": []},
               {"file": "cam2/c.jpg", "datetime": "2000:01:01 00:12:00", "detections": []},
               {"file": "cam2/d.jpg", "detections": []},  # no capture time: an issue no correction solves
               {"file": "cam3/e.jpg", "datetime": "2024:06:01 06:00:00", "detections": []}]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1",
                                 utc_offset="+02:00", clock_shifts={"cam1": 770537880, "cam2": 770537880})
    for e in entries:
        b.add(e)
    deployments = {r[0]: dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, r)) for r in b.deployment_rows()}
    cam1, cam2, cam3 = deployments["cam1"], deployments["cam2"], deployments["cam3"]
    assert cam1["timestampIssues"] == "false"
    assert "camera clock corrected (clock_corrections)" in cam1["deploymentComments"]
    assert cam2["timestampIssues"] == "true" and "clock corrected" in cam2["deploymentComments"]
    assert camtrapdp.FIRST_CAPTURE_FOR_SOME in cam2["deploymentComments"]
    assert (cam3["timestampIssues"], cam3["deploymentComments"]) == ("false", camtrapdp.NO_COORDINATES)
    build(tmp_path, entries)  # and a package of such rows stays valid (build: no corrections)
    assert validate(tmp_path).valid


AWKWARD_NAMES = ["Cerro Alto../IMG_0005.JPG", "cam1/IMG_0004..JPG", ".hidden cam/IMG_0001.JPG", "~backup/IMG_2.JPG",
                 "St. John's.../a.jpg", "50% cover?/IMG+0002.JPG", "line\nbreak/IMG_3.JPG", "Ñandú/Zoë's cam #2/IMG 1.JPG"]


def test_awkward_camera_folder_names_keep_the_package_valid_and_their_blob_names(tmp_path: Path) -> None:
    """Camtrap DP 1.0.2 media-table-schema.json: filePath must match ``^(?=^[^./~])(^((?!\\.{2}).)*$).*$`` (no
    leading ``.``, ``/`` or ``~``, no ``..``, no line break). Real camera folders break it, and one such name made the
    whole survey's package invalid. ``unquote`` gives each blob name back; ordinary names are written as they are."""
    from urllib.parse import unquote

    build(tmp_path, [{"file": name, "datetime": "2024:05:01 06:30:00", "detections": []} for name in AWKWARD_NAMES])
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    media = rows(tmp_path / "media.csv")
    assert [unquote(m["filePath"]) for m in media] == AWKWARD_NAMES
    assert [m["mediaID"] for m in media] == [camtrapdp.media_id(n) for n in AWKWARD_NAMES]
    assert media[-1]["filePath"] == AWKWARD_NAMES[-1]  # spaces, '#', accents: as written
    assert media[5]["filePath"] == "50%25 cover?/IMG+0002.JPG"
    assert camtrapdp.media_file_path("siteA/cam1/IMG_0001.JPG") == "siteA/cam1/IMG_0001.JPG"


def test_awkward_blob_names_as_media_urls_keep_the_package_valid_and_give_their_names_back(tmp_path: Path) -> None:
    """Camtrap DP 1.0.2 media-table-schema.json: filePath is a "URL or relative path to the media file, respectively
    for externally hosted files or files that are part of the package"; the images are hosted outside the package,
    so filePath is the image's URL. Its pattern (no leading ``.``, ``/``, ``~``, no ``..``, no line break) holds for
    every awkward name: the URL starts with https, and a run of dots, a line break, a space, ``#``, ``%``, ``?`` and
    accents are percent-encoded as azure-storage-blob encodes a blob client's URL; the part after the container
    percent-decodes to the blob name."""
    from urllib.parse import quote, unquote

    base = "https://partner.blob.core.windows.net/camera-traps/"
    build(tmp_path, [{"file": name, "datetime": "2024:05:01 06:30:00", "detections": []} for name in AWKWARD_NAMES],
          media_base=base)
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    paths = [m["filePath"] for m in rows(tmp_path / "media.csv")]
    assert all(p.startswith(base) and ".." not in p and "\n" not in p for p in paths)
    assert [unquote(p[len(base):]) for p in paths] == AWKWARD_NAMES
    assert paths[-1] == base + "%C3%91and%C3%BA/Zo%C3%AB%27s%20cam%20%232/IMG%201.JPG"
    assert paths[5] == base + "50%25%20cover%3F/IMG%2B0002.JPG"
    assert paths[0] == base + "Cerro%20Alto%2E%2E/IMG_0005.JPG"
    # as the SDK quotes a blob name in its URL (azure-storage-blob's _blob_client_helpers._format_url), dots apart
    assert [p[len(base):] for p in paths if "%2E" not in p] == [quote(n, safe="~/") for n in AWKWARD_NAMES
                                                               if ".." not in n]
    assert camtrapdp.media_url(base, "siteA/cam1/IMG_0001.JPG") == base + "siteA/cam1/IMG_0001.JPG"


@pytest.mark.parametrize("account", ["https://partner.blob.core.windows.net", ""])
def test_the_description_says_the_media_file_paths_are_urls_of_the_images_container(tmp_path: Path,
                                                                                   account: str) -> None:
    """The images are not in the package: filePath is each one's URL (``media_url``), and the package's description
    (what R camtrapdp's write_eml makes the EML abstract) says so, naming the container and account, with no
    credential in it (filePublic is false: a reader needs their own access)."""
    where = camtrapdp.media_location("camera-traps", account)
    build(tmp_path, [{"file": n, "datetime": "2024:05:01 06:30:00", "detections": []} for n in AWKWARD_NAMES],
          media_where=where, media_base=f"{account or 'http://127.0.0.1:10000/devstoreaccount1'}/camera-traps/")
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    described = json.loads((tmp_path / "datapackage.json").read_text())["description"]
    assert "The media files are not in this package" in described and "filePublic is false" in described
    assert "each media filePath is the URL of an image in the container camera-traps of" in described
    assert described.endswith(camtrapdp.NO_ZONE) and "sig=" not in described
    if account:
        assert "the storage account https://partner.blob.core.windows.net" in described
    else:  # trapbatch's own account: named as such
        assert "trapbatch's own storage account" in described


def test_clock_corrections_that_match_no_camera_folder_are_named_with_what_they_may_have_meant() -> None:
    """Blob names are case-sensitive and compared code point by code point: ``cam1`` does not correct ``Cam1/``, nor
    a decomposed ``Zoe\u0308`` a composed ``Zo\u00eb/``. Such a correction changed nothing without a word."""
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1",
                                 clock_shifts={"cam1": 60, "siteA": 5, "Zoe\u0308": 3600, "nowhere": 1, "(root)": 2,
                                               "siteA/cam2/100RECNX": 9})
    for file in ("Cam1/a.jpg", "siteA/cam2/100RECNX/b.jpg", "Zo\u00eb/c.jpg", "top.jpg"):
        b.add({"file": file, "datetime": "2024:06:01 06:00:00", "detections": []})
    assert b.unmatched_clock_shifts() == ["Zoe\u0308 (did you mean 'Zo\u00eb'?)", "cam1 (did you mean 'Cam1'?)",
                                          "nowhere", "siteA/cam2/100RECNX"]  # an overflow folder is no camera's
    assert camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                    completed_at="", classified_by="").unmatched_clock_shifts() == []


def test_many_unmatched_clock_corrections_keep_the_tasks_status_under_its_16_kb() -> None:
    """A request may name 1,000 folders of 1,024 characters; the status, where the exports' output goes, holds at
    most 16 KB (devhost README, row 8): past it the task failed at its last step with its results already served."""
    from activities.exports import UNMATCHED_SHOWN, unmatched_clock_corrections

    shifts = {f"{'x' * 1000}-{i:04d}": 60 for i in range(1000)}
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector", clock_shifts=shifts)
    b.add({"file": "cam/a.jpg", "datetime": "2024:06:01 06:00:00", "detections": []})
    out: dict[str, Any] = {}
    unmatched_clock_corrections("task-1", b, out)  # type: ignore[arg-type]
    assert len(out["clock_corrections_unmatched"]) == UNMATCHED_SHOWN
    assert out["clock_corrections_unmatched_count"] == 1000
    assert len(json.dumps(out).encode("utf-16-le")) < 8 * 1024
    few: dict[str, Any] = {}
    unmatched_clock_corrections("task-1", camtrapdp.CamtrapBuilder(
        threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES, completed_at="", classified_by="",
        clock_shifts={"nowhere": 1}), few)  # type: ignore[arg-type]
    assert few == {"clock_corrections_unmatched": ["nowhere"]}


@pytest.mark.parametrize("prefix, depth, file, camera", [
    ("2024/", 1, "2024/camera-01/2024-06-01/IMG_1.JPG", "2024/camera-01"),  # the prefix's folders stay in the id
    ("2024", 1, "2024/camera-01/2024-06-01/IMG_1.JPG", "2024/camera-01"),  # the folder the prefix names
    ("2024/cam", 1, "2024/camera-01/2024-06-01/IMG_1.JPG", "2024/camera-01"),  # a prefix that chose cameras
    ("2024/camera-01/", 1, "2024/camera-01/2024-06-01/IMG_1.JPG", "2024/camera-01/2024-06-01"),
    ("", 1, "camera-01/2024-06-01/IMG_1.JPG", "camera-01"),
    ("", 2, "site-a/camera-01/2024-06-01/IMG_1.JPG", "site-a/camera-01"),
    ("", 5, "camera-01/2024-06-01/IMG_1.JPG", "camera-01/2024-06-01"),  # deeper than the path: the folders it has
    ("2024/", 3, "2024/camera-01/IMG_1.JPG", "2024/camera-01"),
    ("2024/", 1, "2024/IMG_1.JPG", "2024"),  # no folder below the prefix: the prefix's folder
    ("", 1, "IMG_1.JPG", "(root)"),  # an image at the top: the root deployment, as today
    ("", 1, "camera-01/100RECNX/IMG_1.JPG", "camera-01"),  # overflow folders lie below the camera
    ("", 2, "camera-01/100RECNX/IMG_1.JPG", "camera-01/100RECNX"),  # ... and are folders like any other then
    ("", None, "camera-01/2024-06-01/100RECNX/IMG_1.JPG", "camera-01/2024-06-01"),  # no depth: MegaDetector's rule
    ("2024/", None, "2024/camera-01/2024-06-01/IMG_1.JPG", "2024/camera-01/2024-06-01"),
])
def test_a_camera_depth_makes_the_first_folders_below_the_prefix_the_camera(prefix: str, depth: int | None,
                                                                             file: str, camera: str) -> None:
    """``camera_depth``: camera/day folders are one camera, not a camera a day (trap effort, occupancy)."""
    rule = camtrapdp.CameraRule(prefix, depth)
    assert camtrapdp.deployment_id(file, "", rule) == camera
    assert camtrapdp.deployment_id(file, "ridge", rule) == f"{camera}@ridge"  # an image list's location still splits


def test_a_camera_depth_gives_one_deployment_per_camera_over_its_days(tmp_path: Path) -> None:
    """Camera/day folders with ``camera_depth`` 1: a deployment per camera spanning its days, its media and
    observations under it; an image list's location still makes its own deployment; the package stays valid."""
    entries = [{"file": f"2024/{cam}/2024-06-0{day}/IMG_{n}.JPG", "datetime": f"2024:06:0{day} 0{n}:00:00",
                "detections": []} for cam in ("cam-1", "cam-2") for day in (1, 2, 3) for n in (1, 2)]
    builder = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                       completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1",
                                       utc_offset="+02:00", cameras=camtrapdp.CameraRule("2024/", 1))
    listed = {"2024/cam-2/2024-06-03/IMG_2.JPG": {"location": "ridge"}}
    media = [builder.add(e, listed.get(e["file"]))[0] for e in entries]
    spans = {r[0]: (r[6], r[7]) for r in builder.deployment_rows()}
    assert spans == {"2024/cam-1": ("2024-06-01T01:00:00+02:00", "2024-06-03T02:00:00+02:00"),
                     "2024/cam-2": ("2024-06-01T01:00:00+02:00", "2024-06-03T01:00:00+02:00"),
                     "2024/cam-2@ridge": ("2024-06-03T02:00:00+02:00", "2024-06-03T02:00:00+02:00")}
    assert [m[1] for m in media] == ["2024/cam-1"] * 6 + ["2024/cam-2"] * 5 + ["2024/cam-2@ridge"]
    facts = camtrapdp.first_facts([(e["file"], listed.get(e["file"])) for e in entries],
                                  camtrapdp.CameraRule("2024/", 1))
    assert [f[0] for f in facts] == list(builder.deployments)


def test_coco_locations_follow_the_camera_rule() -> None:
    """COCO's ``location`` is the Camtrap DP deployment's camera (without a list's location, which wins)."""
    from gpu_batch.formats import coco

    rule = camtrapdp.CameraRule("", 1)
    entry = {"file": "cam-1/2024-06-01/IMG_1.JPG", "detections": []}
    assert coco.convert_entry(entry, None, 0.2, mdformat.DETECTION_CATEGORIES)[0]["location"] == "cam-1/2024-06-01"
    assert coco.convert_entry(entry, None, 0.2, mdformat.DETECTION_CATEGORIES, None, rule)[0]["location"] == "cam-1"
    assert coco.convert_entry(entry, None, 0.2, mdformat.DETECTION_CATEGORIES, {"location": "ridge"},
                              rule)[0]["location"] == "ridge"
    images, annotations = io.StringIO(), io.StringIO()
    writer = coco.CocoWriter(images, annotations, 0.2, mdformat.DETECTION_CATEGORIES, cameras=rule)
    writer.add(mdformat.failure_entry("cam-2/d/x.jpg", mdformat.FAILURE_IMAGE_ACCESS), None)
    writer.flush()
    assert json.loads(images.getvalue())["location"] == "cam-2"


def test_a_photo_cut_short_says_so_in_its_media_comments_and_the_package_stays_valid(tmp_path: Path) -> None:
    """A JPEG without its end is detected as far as it goes, the rest grey: its "blank" may be an animal in the part
    never written. The media table's ``mediaComments`` (a string, "Comments or notes about the media file"; the 1.0.2
    schema's example is "corrupted file") says so, beside any other note; its observation with nothing detected is
    ``unknown``, not ``blank`` (valid: the observationType vocabulary has it)."""
    from gpu_batch.formats.entries import mark_cut_short

    blank = ENTRIES[1]["file"]
    build(tmp_path, list(mark_cut_short([dict(e) for e in ENTRIES], {blank})))
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    media = {m["filePath"]: m for m in rows(tmp_path / "media.csv")}
    assert media[blank]["mediaComments"] == camtrapdp.CUT_SHORT_COMMENT
    assert "cut short" not in media[ENTRIES[0]["file"]]["mediaComments"]
    mid = camtrapdp.media_id(blank)
    assert [(o["observationType"], o["count"]) for o in rows(tmp_path / "observations.csv")
            if o["mediaID"] == mid] == [("unknown", "")]
    # add_lines, the exports' hot path, writes the same row
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at="2026-12-01T10:00:00", classified_by="MegaDetector v5a.0.1")
    line, _ = b.add_lines(next(iter(mark_cut_short([dict(ENTRIES[1])], {blank}))))
    assert next(csv.reader([line]))[-1] == camtrapdp.CUT_SHORT_COMMENT


def test_a_deployments_span_is_by_the_instant_not_the_text(tmp_path: Path) -> None:
    """A camera that sets its clock back at the end of summer time writes 02:10+01:00 (01:10 UTC) after
    02:30+02:00 (00:30 UTC): compared as text its deployment started at 01:10 UTC and ended at 00:30 UTC (negative
    trap effort in camtrapR), with photos outside it. The single pass, the combine of parts' facts (in either
    order) and the stand-in of a photo without capture time all take the earliest and the latest instant."""
    from core import exportparts

    entries: list[dict[str, Any]] = [
        {"file": "cam1/a.jpg", "datetime": "2024-10-27T02:30:00+02:00", "detections": []},
        {"file": "cam1/b.jpg", "datetime": "2024-10-27T02:10:00+01:00", "detections": []},
        {"file": "cam1/c.jpg", "datetime": "2024-10-27T02:20:00+01:00", "detections": []},
        {"file": "cam1/d.jpg", "detections": []},  # no capture time: the deployment's first stands in
    ]
    b = build(tmp_path, entries)
    assert validate(tmp_path).valid
    cam1 = rows(tmp_path / "deployments.csv")[0]
    assert (cam1["deploymentStart"], cam1["deploymentEnd"]) == ("2024-10-27T02:29:59+02:00",
                                                                "2024-10-27T02:20:00+01:00")
    assert b.stand_ins() == {"cam1": "2024-10-27T02:29:59+02:00"}  # a second before the first: in no event

    def facts(part: list[dict[str, Any]]) -> list[list[Any]]:
        one = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                       completed_at="2026-12-01T10:00:00", classified_by="MD")
        for e in part:
            one.add(e)
        return one.deployment_facts()

    for parts in ([entries[:1], entries[1:]], [entries[1:], entries[:1]]):
        combined = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                            completed_at="2026-12-01T10:00:00", classified_by="MD")
        exportparts.combine_deployments(combined, [facts(p) for p in parts])
        assert combined.deployment_rows()[0][6:8] == [cam1["deploymentStart"], cam1["deploymentEnd"]]
        untimed = parts.index(entries[1:])  # the part holding d.jpg
        assert exportparts.stand_ins([facts(p) for p in parts])[untimed] == {"cam1": "2024-10-27T02:29:59+02:00"}
    # the same instant with two offsets: the smaller text whichever comes first
    assert camtrapdp.earlier("2024-06-01T06:00:00+00:00", "2024-06-01T07:00:00+01:00")
    assert not camtrapdp.earlier("2024-06-01T07:00:00+01:00", "2024-06-01T06:00:00+00:00")
    # a time without offset (no camtrap_timestamp's) beside one with: compared as text, not a TypeError from
    # comparing a naive datetime with an aware one; and a stand-in for text that is no time is that text
    assert camtrapdp.earlier("2024-06-01T06:00:00+00:00", "2024-06-01T07:00:00")
    assert not camtrapdp.earlier("2024-06-01T07:00:00", "2024-06-01T06:00:00+00:00")
    assert camtrapdp.stand_in_time("not a time") == "not a time"
