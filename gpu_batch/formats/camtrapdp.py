"""Camtrap DP export of a results file: deployments from camera folders, media, and machine observations with boxes.

Why: Camera Trap Data Package (TDWG, https://camtrap-dp.tdwg.org, version 1.0.2 here) is how camera-trap data goes
to GBIF, Agouti, Wildlife Insights and camtraptor; a partner can open it without knowing MegaDetector's format.
``tests/unit/test_camtrapdp.py`` validates what this module writes with ``frictionless`` against the 1.0.2 profile
and table schemas (../shared/reference/camtrap-dp/).

What maps to what:

* a **deployment** per camera folder: the folder of the image with camera overflow folders (``100RECNX``,
  ``100EK113``, ``100_BTCF``, ``100MEDIA``, ``100DSCIM``) removed, as MegaDetector's
  ``ct_utils.image_file_to_camera_folder`` does; its start and end are its first and last capture times (the
  detection time for a deployment without any);
* a **media** row per image (failed ones too: the file exists), ``filePath`` the image's URL, ``filePublic`` false
  (the images stay in the owner's storage, read with the reader's own access: no SAS is written anywhere). Camtrap
  DP 1.0.2's ``filePath`` is a "URL or relative path to the media file, respectively for externally hosted files or
  files that are part of the package" (media-table-schema.json; its ``skos:broadMatch`` is Audubon Core's
  ``accessURI``): the images are hosted outside the package, in the task's container, so it is their URL
  (``media_url``: ``<account blob endpoint>/<container>/<blob name percent-encoded>``, the account the request's
  ``source_account_url``, else trapbatch's own, ``activities.exports.ExportContext.media_base``), and the package's
  description says so (``media_location``). A builder without ``media_base`` writes the blob name, a relative path
  (``media_file_path``), as packages written before did. The workers' merge views hold their media lines with a
  placeholder for the base (``gpu_batch.formats.mergeview.MEDIA_BASE``) that the exports fill in; views of an
  earlier version, without it, are not used, and an exports part written before the URLs is run again by the
  combine (``activities.exportparts``): a package never mixes URLs and relative paths;
* **observations** at media level: one per detection at or above the threshold (``animal`` / ``human`` /
  ``vehicle``, ``count`` 1, the box as MegaDetector's normalized ``bboxX``/``bboxY``/``bboxWidth``/``bboxHeight``
  clipped to the image, ``classificationMethod`` ``machine``, ``classifiedBy`` the MegaDetector version (a model
  of no known release: its file, ``core.mdformat.classified_by``), ``classificationProbability`` the confidence),
  and one ``blank`` observation per image without any (``unknown`` for a photo cut short: ``CUT_SHORT_COMMENT``).
  Failed images and removed repeats (negative confidence) get none;
* **event-level observations** (a camera's visits) are added by the app's exports from these rows
  (``core.camtrap_events``: the worker's views cannot know a camera's other shards).

What the results do not know, and how it is said instead of invented: capture time (an entry's ``datetime``, the
EXIF ``DateTimeOriginal`` the worker writes as MegaDetector does with ``--include_image_timestamp``, is used when
present). Camtrap DP requires a media ``timestamp``, so an image without one gets a stand-in, said in its
``mediaComments``, and its deployment gets ``timestampIssues`` true. Which stand-in (``stand_in_media``): within a
deployment that has capture times, one second before its first one (``stand_in_time``), which is then its
``deploymentStart``: the package never says a photo was taken outside its deployment, the deployment's span (its
survey effort) stays its capture times' (one second more) instead of stretching to the day detection ran, years
later maybe, and such an image is in no event (its order in time is unknown), as the description says (``EVENTS_NOTE``)
and as readers find it. Why not the first capture time itself: that is the first event's ``eventStart``, and readers
link media to events by time alone (R camtrapdp's ``read_camtrapdp`` assigns a photo every event-level observation
of its deployment with ``eventStart <= timestamp <= eventEnd``: inbo/camtrapdp, R/read_camtrapdp.R, "Add eventID to
media"), so the photo would join the first visit. Only a deployment without any capture time takes the detection
completion time, for its images and its span alike (it has no event). The rows are written as the entries stream,
before a deployment's first capture time is known (it may be in another exports part), so the detection time is
written first and ``stand_in_media`` puts the stand-in in once the deployments are combined, with the observations'
``eventStart``/``eventEnd`` (``core.camtrap_events.link_observations``). The cameras' time
zone (EXIF's DateTimeOriginal has none) is the photo's own EXIF offset where it has one (``exif_offset``), else the
task's ``utc_offset``, else UTC, as the package's description says, and a
deployment whose times were placed in UTC for want of a zone gets ``timestampIssues`` true too: the deployments
schema names "unknown timezone" as such an issue (each reason is said in its ``deploymentComments``:
``ISSUE_COMMENTS``). A camera whose clock was wrong is corrected by the request's ``clock_corrections``
(``clock_shifts`` here), and its media rows and deployment's comments say so; a corrected clock is a solved issue,
not one of ``timestampIssues`` (``UNSOLVED``). Coordinates (required by Camtrap DP) are taken from
``locations`` when the caller gives them, else written as 0, 0 with a ``deploymentComments`` note to replace them
before publishing; the package's description says how many deployments have such stand-ins, and that the project's
``samplingDesign`` and ``captureMethod`` (required too) stand in (``PROJECT_PLACEHOLDERS``).

An explicit image list's metadata (``core.imagelist``), when the caller gives an image's row: the columns
``gpu_batch.formats.listfields`` recognises fill Camtrap DP fields, and the rest is kept in the media row:

* a capture time (``datetime``, ``timestamp``...) is the media ``timestamp`` when the entry has no readable
  ``datetime`` of its own (a time without offset is in the task's ``utc_offset``, else UTC, as for EXIF);
* a location (``location``, ``site``...) is the deployment's ``locationID`` and ``locationName``, and part of its
  id: images of one camera folder at two locations are two deployments (``<folder>@<location>``), since a
  deployment is one camera at one place;
* ``latitude`` / ``longitude`` (in range, both given) and a camera (``camera_id``, ``camera``...) fill the
  deployment's ``latitude``, ``longitude`` and ``cameraID`` (the first image of the deployment that gives them);
* a sequence (``seq_id``, ``event_id``...) is the ``eventID`` of the image's observations, and the photos of its
  deployment without one taken within its span join it (``core.camtrap_events``: a deployment's events never
  overlap in time);
* an offset from UTC (``utc_offset``, ``timezone_offset``...: ``+02:00``) is the zone of that image's capture times
  that have none (EXIF's, the list's), over the task's ``utc_offset``: a project whose cameras span zones; a photo
  whose EXIF gives its own offset (``OffsetTimeOriginal``, else ``OffsetTimeDigitized``, else ``OffsetTime``: the
  entry's ``exif_metadata``, ``exif_offset``) keeps that one for its EXIF time, over both, and such a time is never
  "time zone unknown";
* every other column, and a recognised one that cannot be read (a time, a coordinate out of range), goes into the
  media's ``mediaComments``, last, as ``image list: {"season": "S1", ...}`` (a JSON object after that fixed label):
  the 1.0 media table has no other free field, and a column it does not define fails the package's validation.

The tables are data, not spreadsheet cells: names are written exactly (no formula guard, unlike the CSV).

The package's ``created`` is the results' ``detection_completion_time``: when this generation's results were
merged (``activities.merge``: the fan-in orchestration's ``current_utc_datetime``, the same on every replay), not the
time ``datapackage.json`` was written. The Data Package spec's "datetime on which this package was created" is read
as when its content came to be: the exports are a function of those results and the request. Why not the writing
time: the exports are idempotent, the same results giving the same bytes (activity retries, an orchestration
replayed, the single activity and the fanned-out parts and combine, a results zip rebuilt only when a file changed),
which a clock read while writing would break. A re-run (``clock_corrections`` with ``only_new``: no image detected
again) is a generation of its own with its own merge, so its package's ``created`` is the re-run's merge time; the
repeats-removed variant's results are merged by their own orchestration (``orchestrations.repeats``), so its package's
``created`` is when that variant was merged.

Must not: do I/O; hold more than the per-deployment aggregates (one small record per camera folder).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable, Iterator, Mapping, Sequence

from gpu_batch.formats import csvline, listfields
from gpu_batch.formats.entries import is_cut_short

VERSION = "1.0.2"
_BASE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/"
PROFILE_URL = _BASE + "camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
SCHEMA_URLS = {name: f"{_BASE}{name}-table-schema.json" for name in TABLES}

DEPLOYMENT_COLUMNS = ["deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
                      "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay",
                      "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance",
                      "timestampIssues", "baitUse", "featureType", "habitat", "deploymentGroups", "deploymentTags",
                      "deploymentComments"]
MEDIA_COLUMNS = ["mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
                 "fileMediatype", "exifData", "favorite", "mediaComments"]
OBSERVATION_COLUMNS = ["observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
                       "observationLevel", "observationType", "cameraSetupType", "scientificName", "count",
                       "lifeStage", "sex", "behavior", "individualID", "individualPositionRadius",
                       "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth", "bboxHeight",
                       "classificationMethod", "classifiedBy", "classificationTimestamp",
                       "classificationProbability", "observationTags", "observationComments"]
# MegaDetector category names -> Camtrap DP observationType
OBSERVATION_TYPES = {"animal": "animal", "person": "human", "vehicle": "vehicle"}
_OVERFLOW = [re.compile(p) for p in (r"/\d+RECNX/", r"/\d+EK\d+/", r"/\d+_BTCF/", r"/\d+MEDIA/", r"/\d+DSCIM/")]
_MEDIATYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif"}
# mediaComments (Camtrap DP 1.0 media table: "Comments or notes about the media file", a string; its example is
# "corrupted file") of a photo cut short (``entries.CUT_SHORT``). Where nothing was detected in what it holds, its
# observation is ``unknown``, not ``blank``: the 1.0.2 observations schema's observationType ``unknown`` is where
# "neither humans nor AI can say what was recorded", which is its grey part; so its event is never blank either
# (``core.camtrap_events``: an ``unknown`` row, counted in camera-visits' and camera-days' unknown_visits)
CUT_SHORT_COMMENT = ("file cut short (JPEG without its end: damaged.csv): detected as far as it goes, the rest "
                     "grey, so with nothing detected it is unknown, not blank")
NO_CAPTURE_TIME = "capture time unknown: the detection completion time stands in for it"
# the same, once the deployment's start (a second before its first capture time: stand_in_time) replaced the
# detection time (stand_in_media), and the deployment's comment on such images
FIRST_CAPTURE_STANDS_IN = ("capture time unknown: its deployment's start (deploymentStart, one second before its "
                           "first capture time) stands in for it, in no event")
FIRST_CAPTURE_FOR_SOME = ("capture time unknown for some images: deploymentStart, one second before the first "
                          "capture time, stands in for theirs (in no event)")
# Camtrap DP timestamps carry a zone and EXIF's do not: without the task's utc_offset they are written as UTC, said
# here and, per deployment, by timestampIssues (ZONE_ASSUMED)
NO_ZONE = ("Capture times without a time zone (the cameras' clocks, as EXIF writes them) are written as UTC where "
           "neither the photo (EXIF OffsetTimeOriginal), the task (utc_offset) nor the image list (a utc_offset "
           "column) gave the cameras' offset.")
NO_COORDINATES = "coordinates unknown (0, 0 stand in): replace latitude and longitude before publishing"
# the description's word on the project facts the 1.0.2 profile requires (``project``) and a results file cannot know,
# said as the coordinates' stand-ins are (``descriptor``): the package's metadata is what a catalogue shows of it (R
# camtrapdp's write_eml makes the description the EML abstract and writes "This project uses a opportunistic
# sampling design ... triggered with activity detection" from these: inbo/camtrapdp R/write_eml.R)
PROJECT_PLACEHOLDERS = ("The project's samplingDesign (opportunistic) and captureMethod (activityDetection), which "
                        "Camtrap DP requires, stand in: the detections know neither the survey's design nor how its "
                        "cameras were triggered; replace them before publishing.")
ROOT_DEPLOYMENT = "(root)"
# the description's word on counting: the same animals are observed at both levels, and readers keep every row of
# either (camtrapR's readcamtrapDP makes its record table of all observations, its filter_observations argument
# filters by observationType only: jniedballa/camtrapR R/readcamtrapDP.R; R camtrapdp's filter_observations filters
# on any column: inbo/camtrapdp R/filter_observations.R)
LEVELS_NOTE = ("Media-level observations (each box in each image) and event-level ones (each visit) describe the "
               "same animals, and readers keep both: count one level, e.g. in R camtrapdp::filter_observations(x, "
               "observationLevel == \"event\"), or the rows of camtrapR's readcamtrapDP record table whose "
               "observationLevel is \"event\".")
# the description's word on event-level observations (core.camtrap_events), when there are any
EVENTS_NOTE = (" Event-level observations group each deployment's images taken at most {interval} s apart (or by the "
               "image list's sequence, which also takes the images without one taken within its span); their count "
               "is the most detections of that kind in one image of the event. "
               "Images without a capture time are in no event. A photo cut short (its file ends early: "
               "mediaComments says so) in which nothing was detected is unknown, not blank, and so is its event. "
               + LEVELS_NOTE)
LIST_METADATA_LABEL = "image list: "  # mediaComments: the image list's other columns follow, as a JSON object
# that object as json.dumps(rest, ensure_ascii=False) writes it (people read it; tests and docs spell it), from one
# shared encoder (json.dumps builds one per call); deliberately not gpu_batch.formats.jsonio's compact form
_COMMENT_JSON = json.JSONEncoder(ensure_ascii=False)
# gpu_batch.formats.listfields concepts the Camtrap DP tables have a field for
LIST_FIELDS = ("datetime", "location", "latitude", "longitude", "camera_id", "seq_id", "utc_offset")


FACT_CONCEPTS = ("latitude", "longitude", "camera_id")  # what a deployment takes from its first image that gives it


# The Data Package 1.0 schema the Camtrap DP profile builds on (specs.frictionlessdata.io/schemas/data-package.json,
# $ref'd by the profile) on a ``licenses`` item: a ``name`` or a ``path``; the name "MUST be an Open Definition license
# identifier", ``"pattern": "^([-a-zA-Z0-9._])+$"`` (SPDX ids such as CC-BY-4.0 and CC0-1.0 match), the path "A fully
# qualified URL, or a POSIX file path", ``"pattern": "^(?=^[^./~])(^((?!\\.{2}).)*$).*$"``, as for media.filePath.
_LICENSE_NAME = re.compile(r"[-a-zA-Z0-9._]+")  # fullmatch: Python's "$" would also take a final line break
_LICENSE_URL = re.compile(r"https?://[^\s]+")
LICENSE_HINT = ("give an SPDX licence identifier such as CC-BY-4.0 or CC0-1.0 (letters, digits, '-', '.', '_' only), "
                "or the licence's URL, e.g. https://creativecommons.org/licenses/by/4.0/")


def license_entry(value: str, scope: str) -> dict[str, str] | None:
    """A Camtrap DP ``licenses`` item of ``scope`` (``data`` or ``media``) for a licence setting: an identifier as
    its ``name`` (a name written with spaces, ``CC BY 4.0`` as people write it, with hyphens: ``CC-BY-4.0``), a URL
    as its ``path``; None for a value the Data Package schema refuses as either, which would make the package
    invalid (the package then claims no licence, and the exports say so in the log)."""
    if _LICENSE_URL.fullmatch(value) and ".." not in value:
        return {"path": value, "scope": scope}
    name = "-".join(value.split())
    if _LICENSE_NAME.fullmatch(name):
        return {"name": name, "scope": scope}
    return None


def wants_first_facts(columns: Sequence[str] | tuple[str, ...]) -> bool:
    """Whether an image list's columns can give deployments coordinates or a camera (``_deployment_fields``): a
    deployment's first values then decide its images' comments, and the workers' views need the task's
    (``gpu_batch.layout.list_facts_blob``)."""
    return any((found := listfields.concept_of(c)) is not None and found[0] in FACT_CONCEPTS for c in columns)


FACT_FIELDS = ("location", *FACT_CONCEPTS)  # the list fields that decide a deployment and its first values


def first_facts(rows: Iterable[tuple[str, Mapping[str, str] | None]],
                cameras: CameraRule | None = None) -> list[list[Any]]:
    """``CamtrapBuilder.deployment_facts`` of images with these list rows in this order, as far as the deployments'
    ids, locations and first coordinates and camera go (start, end and timestamp issues left empty): what a builder
    fed the same rows would hold (``CamtrapBuilder._facts``: same fields, same rules), without making the rows
    (a third of the cost: ``activities.image_list`` runs it over a whole list). ``cameras``: the task's camera
    rule (``CameraRule``; None: MegaDetector's)."""
    rule = cameras or MEGADETECTOR_CAMERAS
    deployments: dict[str, _Deployment] = {}
    for file, row in rows:
        if not row:
            deployments.setdefault(deployment_id(file, "", rule), _Deployment("", ""))
            continue
        known, rest = listfields.split(row, FACT_FIELDS)
        location = known["location"][1] if "location" in known else ""
        dep = deployment_id(file, location, rule)
        span = deployments.get(dep)
        if span is None:
            span = deployments[dep] = _Deployment("", "", location=location)
        if known:
            CamtrapBuilder._deployment_fields(span, known, rest)
    return [[dep, "", "", False, d.location, d.latitude, d.longitude, d.camera] for dep, d in deployments.items()]


def camera_folder(file: str) -> str:
    """The camera folder of an image (MegaDetector's ``image_file_to_camera_folder``)."""
    name = file.replace("\\", "/")
    return _camera_folder_of_head(name[:name.rfind("/") + 1])


@functools.lru_cache(maxsize=4096)
def _camera_folder_of_head(head: str) -> str:
    """``camera_folder`` for every image whose name is ``head`` and a file name (``head``: the name up to its last
    '/', all of it that ``posixpath.dirname`` reads), so a folder's images, which come together, share one answer."""
    folder = posixpath.dirname(head)
    if not folder:
        return ""
    name = folder + "/x"
    for pattern in _OVERFLOW:
        name = pattern.sub("/", name)
    return posixpath.dirname(name)


MAX_CAMERA_DEPTH = 32  # a request's camera_depth: folders below its prefix that name a camera (core.requests)


@dataclass(frozen=True, slots=True)
class CameraRule:
    """Which folder of an image is its camera (its deployment's folder), for every export that groups by camera.

    ``depth`` None is MegaDetector's rule (``camera_folder``: the image's folder less overflow folders). Why
    another: collections kept as ``camera/day/IMG.jpg`` would make each day folder a camera, and a day-long
    deployment is wrong for trap effort and occupancy. With ``depth`` (a request's ``camera_depth``) the camera is
    the image's first ``depth`` folders below ``prefix`` (the request's; the folder it ends in is not counted), kept
    with the folders of the prefix, as deployment ids have always been the blob name's folders: prefix ``2024/``,
    depth 1, ``2024/camera-01/2024-06-01/IMG_1.JPG`` -> ``2024/camera-01`` (``_prefix_folders``: a prefix ending inside
    a folder's name). An image with fewer folders has the ones it has; none is the root deployment. Overflow folders
    do not matter then: they lie below the camera."""

    prefix: str = ""
    depth: int | None = None

    def folder(self, file: str) -> str:
        """The camera folder of ``file`` ("" for an image at the top: ``ROOT_DEPLOYMENT``)."""
        if self.depth is None:
            return camera_folder(file)
        name = file.replace("\\", "/")
        folder = posixpath.dirname(name)
        return _depth_folder(folder, _prefix_folders(self.prefix.replace("\\", "/"), name) + self.depth) \
            if folder else ""


def _prefix_folders(prefix: str, name: str) -> int:
    """How many folders of blob ``name`` the prefix names, so that the ones below it are counted: each folder it
    closes with '/', and the one it ends with when ``name`` goes on with '/' there (prefix ``2024`` for
    ``2024/cam/IMG.jpg``, as an image list's paths are below it: ``core.imagelist.blob_name``). A prefix that ends
    inside a name (``2024/cam`` for ``2024/camera-01/...``) chose among those folders: that one is the first below
    it."""
    folders = prefix.count("/")
    if prefix and not prefix.endswith("/") and name.startswith(prefix) and name[len(prefix):len(prefix) + 1] == "/":
        folders += 1
    return folders


@functools.lru_cache(maxsize=4096)
def _depth_folder(folder: str, keep: int) -> str:
    """The first ``keep`` folders of ``folder`` (all of them when it has fewer): images come folder by folder."""
    return "/".join(folder.split("/")[:keep])


MEGADETECTOR_CAMERAS = CameraRule()


def deployment_id(file: str, location: str = "", cameras: CameraRule = MEGADETECTOR_CAMERAS) -> str:
    """The camera folder by ``cameras`` (``(root)`` for none), with ``@<location>`` when the image list gives a
    location."""
    folder = cameras.folder(file) or ROOT_DEPLOYMENT
    return f"{folder}@{location}" if location else folder


# Camtrap DP 1.0.2 media-table-schema.json, filePath: "pattern": "^(?=^[^./~])(^((?!\\.{2}).)*$).*$": no leading
# ".", "/" or "~", no ".." anywhere, and no line break ("." matches none: "\n" in Python, also "\r", U+2028 and U+2029
# in JavaScript validators). Camera folders break each rule ("Cerro Alto../", ".hidden cam/", "~backup/").
_PATH_ESCAPES = re.compile(r"[%\x00-\x1f\x7f\u2028\u2029]")
_PATH_NEEDS = re.compile(r"[%\x00-\x1f\x7f\u2028\u2029]|\.\.")


def media_file_path(file: str) -> str:
    """The blob name as Camtrap DP's ``filePath`` ("URL or relative path to the media file"): unchanged, but for what
    its pattern refuses and ``%``, which are percent-encoded (``%`` itself, control characters and line separators,
    each dot of a run of dots, a leading ``.``, ``~`` or ``/``). ``urllib.parse.unquote`` gives the blob name back,
    and almost every name (spaces, ``#``, accents included) reads as written."""
    if file[:1] not in (".", "~", "/") and _PATH_NEEDS.search(file) is None:
        return file
    out = _PATH_ESCAPES.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), file)
    out = re.sub(r"\.{2,}", lambda m: "%2E" * len(m.group()), out)
    return f"%{ord(out[0]):02X}{out[1:]}" if out[:1] in (".", "~", "/") else out


def media_url(base: str, file: str) -> str:
    """The image's URL as Camtrap DP's ``filePath``: ``base`` (``<account blob endpoint>/<container>/``) and the blob
    name percent-encoded as azure-storage-blob encodes it in a blob client's URL (``quote(blob_name, safe='~/')``
    in 12.31's ``_blob_client_helpers._format_url``; written out here, as this module imports no ``urllib``: every
    UTF-8 byte but ASCII letters, digits, ``_.-~`` and ``/``), so a space, ``#``, ``%``, ``?`` or a non-ASCII letter is
    encoded and ``urllib.parse.unquote`` of the path after ``base`` gives the name back; and every dot of a run of
    dots as ``%2E``: the filePath pattern refuses ``..`` anywhere (an ``https`` URL passes its other rules). No CSV
    quoting is ever needed: ``,`` and ``"`` are encoded too."""
    path = _URL_ESCAPES.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), file)
    return base + _DOTS.sub(lambda m: "%2E" * len(m.group()), path)


_URL_ESCAPES = re.compile(r"[^A-Za-z0-9_.\-~/]+")
_DOTS = re.compile(r"\.{2,}")


def media_location(container: str, account_url: str = "") -> str:
    """The package description's word on where the media files are: not in the package, each ``filePath`` is the
    image's URL (``media_url``) in ``container`` of the storage account ``account_url`` (a request's
    ``source_account_url``, which ``core.requests`` refuses with a SAS or other credential), "" for trapbatch's own
    account. No credential is written: ``filePublic`` is false, a reader needs their own access."""
    account = (f"the storage account {account_url}" if account_url
               else "trapbatch's own storage account (the one this package was written to)")
    return (f"The media files are not in this package: each media filePath is the URL of an image in the container "
            f"{container} of {account} (its blob name percent-encoded after the container: percent-decoding that "
            "part gives the name back); filePublic is false: open it with your own access to that container, "
            "no credential is written here. ")


def media_id(file: str) -> str:
    """A short stable id (the blob name can be long and hold any character)."""
    return hashlib.sha1(file.encode("utf-8")).hexdigest()[:16]


def stand_in_time(first: str) -> str:
    """The stand-in capture time of the images without one in a deployment whose first capture time is ``first``
    (as ``camtrap_timestamp`` writes it): one second before, in the same offset, which is the deployment's
    ``deploymentStart`` too. Before every event of the deployment, so in none (see the module doc); ``first`` itself
    where it cannot be read (not a time this module writes) or is the calendar's first second (a camera clock reset
    to ``0001:01:01 00:00:00``: no second before it can be written)."""
    try:
        return (datetime.fromisoformat(first) - timedelta(seconds=1)).isoformat()
    except (ValueError, OverflowError):
        return first


def stand_in_media(lines: Iterable[str], stand_ins: Mapping[str, str], moved: dict[str, str]) -> Iterator[str]:
    """Media lines (``MEDIA_COLUMNS`` as written, read with ``newline=""``; a header passes) with each image without
    a capture time of a deployment in ``stand_ins`` (``CamtrapBuilder.stand_ins``) given that deployment's
    stand-in (``stand_in_time``) instead of the detection time, and its comment saying so
    (``FIRST_CAPTURE_STANDS_IN``); ``moved``
    gets each such image's mediaID and time, for its observations (``core.camtrap_events.link_observations``). Why
    afterwards: see the module doc. Other lines are yielded as they are; a quoted field's line break keeps its
    record whole, which is written back as ``csv.writer`` writes it (``csvline``), as it was written."""
    marker = NO_CAPTURE_TIME
    rest = iter(lines)
    for record in rest:
        while record.count('"') % 2:  # inside a quoted field: the record goes on in the next line
            more = next(rest, None)
            if more is None:
                break
            record += more
        if marker not in record:
            yield record
            continue
        row = next(csv.reader([record]))
        stamp = stand_ins.get(row[1]) if len(row) == len(MEDIA_COLUMNS) and row[10].startswith(marker) else None
        if stamp is None:
            yield record
            continue
        row[3], row[10] = stamp, FIRST_CAPTURE_STANDS_IN + row[10][len(marker):]
        moved[row[0]] = stamp
        yield csvline.line(row)


def camtrap_timestamp(value: str, zone: tzinfo = timezone.utc) -> str | None:
    """An ISO 8601 time (or MegaDetector's ``YYYY:MM:DD HH:MM:SS`` EXIF form) as Camtrap DP's
    ``%Y-%m-%dT%H:%M:%S%z``; a time without offset (a camera's clock) is taken as being in ``zone``: the task's
    ``utc_offset``, else UTC. None when it cannot be read."""
    return _capture_time(value, zone)[0]


_EXIF_DATE = re.compile(r"^\d{4}:\d{2}:\d{2} ")  # MegaDetector's EXIF form of a time (``YYYY:MM:DD HH:MM:SS``)


def _capture_time(value: str, zone: tzinfo) -> tuple[str | None, bool]:
    """``camtrap_timestamp`` of ``value``, and whether ``zone`` placed it (the value had no offset of its own): the
    caller then knows whether the zone written was known or only assumed (``ZONE_ASSUMED``)."""
    text = value.strip()
    if _EXIF_DATE.match(text):
        text = text.replace(":", "-", 2)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, False
    zoneless = parsed.tzinfo is None
    if parsed.microsecond:
        parsed = parsed.replace(microsecond=0)
    if zoneless and type(zone) is timezone:  # a fixed offset: its text after the time, as isoformat writes it, with
        return parsed.isoformat() + _offset_text(zone), True  # no datetime made in it (~2 us an image saved)
    return (parsed.replace(tzinfo=zone) if zoneless else parsed).isoformat(), zoneless


@functools.lru_cache(maxsize=256)
def _offset_text(zone: timezone) -> str:
    """How ``isoformat`` writes a fixed offset after a time (``+02:00``; the same for every time in it)."""
    return datetime(2000, 1, 1, tzinfo=zone).isoformat()[19:]


# The EXIF 2.31 tags a worker writes in an entry's ``exif_metadata`` (``gpu_batch.worker.results.detections_entry``,
# as MegaDetector's ``--include_exif_tags``), in the order they are taken: the offset of DateTimeOriginal itself,
# then that of DateTimeDigitized (which a camera writes equal to DateTimeOriginal: EXIF 2.32 defines it as when the
# image was stored as digital data, the same contents for a camera that records as it shoots), then that of DateTime
# (the file's last change, which editing software rewrites with its own computer's zone: the last resort)
EXIF_OFFSET_TAGS = ("OffsetTimeOriginal", "OffsetTimeDigitized", "OffsetTime")


def exif_offset(entry: Mapping[str, Any]) -> str | None:
    """The photo's own offset from UTC (``+HH:MM``) for its ``datetime``: the entry's ``exif_metadata``
    ``OffsetTimeOriginal``, else its ``OffsetTimeDigitized``, else its ``OffsetTime`` (``EXIF_OFFSET_TAGS``: the offset
    of DateTime, the file's last change, comes last), the first that reads as an offset (``listfields.utc_offset``: a
    camera that writes blanks or ``"   :  "`` has none); None for none, and for entries written before the worker read
    them (no ``exif_metadata``), which read as they did. It wins over the image list's ``utc_offset`` and the task's:
    those say where a project's cameras are, the photo says what its own clock was set to (a camera that follows summer
    time, or a project's cameras the list does not tell apart).

    A value is read up to its first NUL: an EXIF ASCII value ends there (EXIF 2.32, 4.6.2), and a camera that pads
    the tag past its 7 bytes reads through PIL as ``"+02:00\x00"`` (the worker keeps the text as PIL gives it,
    stripped, as MegaDetector's ``read_pil_exif`` does). ``-00:00`` is no offset: RFC 3339 (4.3) writes an unknown
    local offset so, EXIF fills an unknown one with blanks, and a camera at UTC writes ``+00:00``; taking it as UTC
    would write a time the list's or the task's offset should place, and call its zone known."""
    tags = entry.get("exif_metadata")
    if tags is None or not isinstance(tags, Mapping):  # None first: an ABC's check costs ~0.2 us an image
        return None
    for name in EXIF_OFFSET_TAGS:
        value = tags.get(name)
        if isinstance(value, str):
            text = value.split("\x00", 1)[0].strip()
            offset = listfields.utc_offset(text) if text.replace(":", "") != "-0000" else None
            if offset is not None:
                return offset
    return None


def utc_offset_zone(offset: str) -> tzinfo:
    """The fixed zone of a request's ``utc_offset`` (``+02:00``, ``-05:30``, ``Z``; ``core.requests`` checked its
    form), UTC for none."""
    if not offset or offset in ("Z", "z"):
        return timezone.utc
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


# What a deployment's media timestamps went through, as bits of ``_Deployment.timestamp_issues``: each says itself in
# ``deploymentComments``. The facts that parts and merge views carry hold the number; a fact written as ``true``
# before the bits (a merge view of an older worker) meant an image without capture time, which is bit 1.
NO_TIME = 1  # an image without a capture time: a stand-in is written (NO_CAPTURE_TIME)
CLOCK_CORRECTED = 2  # a camera clock corrected by the request's clock_corrections
ZONE_ASSUMED = 4  # a capture time without a zone was written as UTC: neither the task nor the list gave the zone
# Those that make Camtrap DP's ``timestampIssues`` true: "known to have (unsolvable) issues (e.g. unknown timezone,
# am/pm switch)" (1.0.2 deployments-table-schema.json). A corrected clock is a solved one, so it is said but no issue:
# R camtrapdp's own correction, ``shift_time``, sets timestampIssues FALSE (inbo/camtrapdp R/shift_time.R), and a
# reader that leaves out deployments with issues would otherwise lose exactly the cameras whose times were put right.
UNSOLVED = NO_TIME | ZONE_ASSUMED
ISSUE_COMMENTS = ((NO_TIME, NO_CAPTURE_TIME), (CLOCK_CORRECTED, "camera clock corrected (clock_corrections)"),
                  (ZONE_ASSUMED, "time zone unknown: capture times without one are written as UTC (no utc_offset "
                                 "given by the task or the image list)"))


@dataclass(slots=True)
class _Deployment:
    # the first and last capture time of its images ("" until one has a capture time: an image without one, a
    # failed one say, does not stretch the span to the detection time, which stands in only for a deployment with
    # no capture time at all, in ``deployment_rows``)
    start: str
    end: str
    timestamp_issues: int = 0  # NO_TIME | CLOCK_CORRECTED | ZONE_ASSUMED
    location: str = ""  # from the image list (its first image's values)
    latitude: float | None = None
    longitude: float | None = None
    camera: str = ""

    def cover(self, start: str, end: str) -> None:
        """Widen the span to ``start``..``end`` ("" for no capture time: no change), compared as instants
        (``earlier``)."""
        if start and (not self.start or earlier(start, self.start)):
            self.start = start
        if end and (not self.end or earlier(self.end, end)):
            self.end = end

    def opening(self) -> str:
        """Its ``deploymentStart`` ("" without capture times): the first capture time, or a second before it
        (``stand_in_time``) where images without one stand in there."""
        return stand_in_time(self.start) if self.start and self.timestamp_issues & NO_TIME else self.start


def earlier(a: str, b: str) -> bool:
    """Whether capture time ``a`` comes before ``b`` (both as ``camtrap_timestamp`` writes them). By the instant,
    not the text: a camera that sets its clock back at the end of summer time writes ``02:10:00+01:00`` after
    ``02:30:00+02:00``, and an image list may give some of a camera's photos an offset and leave others at the
    assumed UTC; compared as text such a deployment started after it ended (negative trap effort in camtrapR) with
    photos outside it. The same instant written with two offsets: the smaller text, so a span never depends on
    the order its images come in (the single pass and the fan-out's parts agree). Text that is no time with an
    offset is compared as text. Parses only where the offsets differ (one deployment's times mostly share one)."""
    if a[19:] == b[19:]:
        return a < b
    try:
        x, y = datetime.fromisoformat(a), datetime.fromisoformat(b)
    except ValueError:
        return a < b
    if x.tzinfo is None or y.tzinfo is None:
        return a < b
    return x < y or (x == y and a < b)


@dataclass(slots=True)
class CamtrapBuilder:
    """Rows for one results file, entry by entry (``media_rows`` / ``observation_rows``), then the deployments and
    the package descriptor. ``completed_at`` is the results' ``detection_completion_time``."""

    threshold: float
    detection_categories: Mapping[str, str]
    completed_at: str
    classified_by: str
    locations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # the cameras' offset from UTC (the request's ``utc_offset``, ``+02:00``): capture times without one (EXIF's)
    # are in it; "" takes them as UTC, and the package's description and their deployments' timestampIssues say so
    utc_offset: str = ""
    deployments: dict[str, _Deployment] = field(default_factory=dict)
    taxa: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"media": 0, "observations": 0})
    # deployment -> [latitude, longitude, camera] known before the first image (an exports part run again with the
    # task's first facts: ``core.exportparts.parts_to_redo``); a deployment starts from them instead of from nothing
    given: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    # camera folder -> seconds to add to its clock (the request's ``clock_corrections``): an image's capture time
    # is corrected by its folder's or the nearest folder above's; the media row says so
    clock_shifts: Mapping[str, int] = field(default_factory=dict)
    # which folder of an image is its camera, so its deployment (the request's camera_depth: ``CameraRule``)
    cameras: CameraRule = MEGADETECTOR_CAMERAS
    # the images' URL prefix, ``<account blob endpoint>/<container>/`` (``media_url``): media ``filePath`` is the
    # image's URL; "" writes the blob name, a relative path (``media_file_path``), as packages before the URLs did
    media_base: str = ""
    _quoted: str | None = None  # add_lines: the observations' constant tail, quoted once
    _shifts: dict[str, int] = field(default_factory=dict)  # camera folder -> its shift (clock_shift), as looked up
    # the clock_shifts folders that corrected an image's time here (unmatched_clock_shifts; a part's output carries
    # them to the combine, whose deployments alone cannot tell a day folder below a camera_depth camera)
    clock_matched: set[str] = field(default_factory=set)
    _zone: tzinfo = timezone.utc  # utc_offset's zone (__post_init__)

    def __post_init__(self) -> None:
        self.completed_at = camtrap_timestamp(self.completed_at) or datetime(1970, 1, 1, tzinfo=timezone.utc).isoformat()
        self._zone = utc_offset_zone(self.utc_offset)

    def add(self, entry: Mapping[str, Any],
            metadata: Mapping[str, str] | None = None) -> tuple[list[Any], list[list[Any]]]:
        """The media row of one entry and its observation rows (in ``*_COLUMNS`` order); ``metadata``: its row
        of the image list, if any (see the module doc for where each column goes)."""
        media, (mid, dep, event, timestamp), boxes = self._facts(entry, metadata)
        observations = [self._observation(f"{mid}_{n}", dep, mid, event, timestamp, kind, x, y, w, h, probability)
                        for n, kind, x, y, w, h, probability in boxes]
        return media, observations

    def add_lines(self, entry: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> tuple[str, str]:
        """``add``'s rows as the CSV text ``csv.writer`` writes of them (``gpu_batch.formats.csvline``): the media line
        and the observation lines (empty for none), for the exports' hot path: the constant fields are joined, not
        checked per row (``tests/unit/test_camtrapdp.py`` compares with ``csv.writer`` over ``add``)."""
        media, (mid, dep, event, timestamp), boxes = self._facts(entry, metadata)
        field = csvline.field
        # media: the ids (hex), "false", the media type (_MEDIATYPES) and the empty fields need no quoting
        at, where = field(timestamp), field(dep)
        media_line = (f"{mid},{where},,{at},{field(media[4])},false,{field(media[6])},{media[7]},,,"
                      f"{field(media[10])}\r\n")
        if not boxes:
            return media_line, ""
        quoted = self._quoted
        if quoted is None:
            quoted = self._quoted = f",machine,{field(self.classified_by)},{field(self.completed_at)},"
        head = f",{where},{mid},{field(event)},{at},{at},media,"
        # observations: the kinds (OBSERVATION_TYPES, "unknown", "blank") and the numbers need no quoting
        lines = [f"{mid}_{n}{head}{kind},,,{'1' if kind not in ('blank', 'unknown') else ''},,,,,,,,"
                 f"{x},{y},{w},{h}{quoted}{probability},,\r\n" for n, kind, x, y, w, h, probability in boxes]
        return media_line, "".join(lines)

    def _facts(self, entry: Mapping[str, Any], metadata: Mapping[str, str] | None
               ) -> tuple[list[str], tuple[str, str, str, str], list[tuple[int, str, str, str, str, str, str]]]:
        """One entry's media row, its ``(mediaID, deploymentID, eventID, timestamp)`` and its observations as
        ``(n, observationType, bboxX, bboxY, bboxWidth, bboxHeight, classificationProbability)`` (``n`` the
        observation id's suffix: the detection's index + 1, 0 for the blank one); counts and deployments updated."""
        file = str(entry["file"])
        if metadata:
            known_fields, rest = listfields.split(metadata, LIST_FIELDS)
        else:
            known_fields, rest = {}, {}  # listfields.split of no row
        location = known_fields["location"][1] if "location" in known_fields else ""
        dep, mid = deployment_id(file, location, self.cameras), media_id(file)
        zone, zone_known = self._zone, bool(self.utc_offset)
        if "utc_offset" in known_fields:  # the image list's offset for this image's camera
            column, value = known_fields["utc_offset"]
            offset = listfields.utc_offset(value)
            if offset is None:
                rest[column] = value  # unreadable: kept, and the task's zone stands
            else:
                zone, zone_known = utc_offset_zone(offset), True
        raw_time = entry.get("datetime")
        timestamp, zoneless = None, False
        if isinstance(raw_time, str):
            own = exif_offset(entry)  # the photo's own zone (EXIF OffsetTimeOriginal) over the list's and the task's
            timestamp, zoneless = _capture_time(raw_time, zone if own is None else utc_offset_zone(own))
            zoneless = zoneless and own is None
        if "datetime" in known_fields:
            column, value = known_fields["datetime"]
            listed_time, listed_zoneless = _capture_time(value, zone) if timestamp is None else (None, False)
            if listed_time is None:
                rest[column] = value  # unreadable, or the entry's own time stands: kept, not lost
            else:
                timestamp, zoneless = listed_time, listed_zoneless
        comments = []
        # zoneless: the time was placed in the list's or the task's zone (or UTC), not in one of its own
        issues = ZONE_ASSUMED if zoneless and not zone_known else 0
        off_calendar = ""
        if timestamp is not None and self.clock_shifts:
            shift = self.clock_shift(file)
            if shift:
                try:
                    timestamp = (datetime.fromisoformat(timestamp) + timedelta(seconds=shift)).isoformat()
                except OverflowError:  # a clock reset to year 1 moved earlier: no time the package can write
                    timestamp = None
                    off_calendar = (f"camera clock correction by {shift:+d} s (clock_corrections) leaves the years "
                                    "1-9999: capture time unknown")
                else:
                    comments.append(f"camera clock corrected by {shift:+d} s (clock_corrections)")
                    issues |= CLOCK_CORRECTED
        captured = timestamp or ""
        if timestamp is None:
            timestamp = self.completed_at
            comments.append(NO_CAPTURE_TIME)  # first: stand_in_media and the events find such rows by it
            issues |= NO_TIME
            if off_calendar:
                comments.append(off_calendar)
        failed = entry.get("failure") is not None
        known = self.deployments.get(dep)
        if known is None:
            known = self.deployments[dep] = _Deployment("", "", location=location)
            if dep in self.given:
                lat, lon, camera = self.given[dep]
                if lat is not None and lon is not None:
                    known.latitude, known.longitude = float(lat), float(lon)
                known.camera = str(camera or "")
        known.cover(captured, captured)
        known.timestamp_issues |= issues
        if known_fields:
            self._deployment_fields(known, known_fields, rest)
        if failed:
            comments.append(f"detection failed: {entry['failure']}")
        elif is_cut_short(entry):
            comments.append(CUT_SHORT_COMMENT)
        if rest:
            comments.append(LIST_METADATA_LABEL + _COMMENT_JSON.encode(rest))
        path = media_url(self.media_base, file) if self.media_base else media_file_path(file)
        media = [mid, dep, "", timestamp, path, "false", file[file.rfind("/") + 1:],  # basename
                 _MEDIATYPES.get(posixpath.splitext(file)[1].lower(), "image/jpeg"), "", "", "; ".join(comments)]
        event = known_fields["seq_id"][1] if "seq_id" in known_fields else ""
        self.counts["media"] += 1
        if failed:
            return media, (mid, dep, event, timestamp), []
        boxes = []
        threshold, categories = self.threshold, self.detection_categories
        for index, det in enumerate(entry.get("detections") or []):
            conf = det.get("conf")
            if not isinstance(conf, (int, float)) or conf < threshold:
                continue
            box = det.get("bbox")
            kind = OBSERVATION_TYPES.get(categories.get(str(det.get("category")), ""), "unknown")
            x = y = w = h = ""
            if isinstance(box, list) and len(box) == 4:
                # each min(max(v, 0.0), 1.0), which is v itself (the same object) when 0 <= v <= 1
                b0, b1, b2, b3 = box
                x0 = b0 if 0.0 <= b0 <= 1.0 else min(max(b0, 0.0), 1.0)
                y0 = b1 if 0.0 <= b1 <= 1.0 else min(max(b1, 0.0), 1.0)
                x1, y1 = b0 + b2, b1 + b3
                x1 = x1 if 0.0 <= x1 <= 1.0 else min(max(x1, 0.0), 1.0)
                y1 = y1 if 0.0 <= y1 <= 1.0 else min(max(y1, 0.0), 1.0)
                if x1 > x0 and y1 > y0:
                    # the numbers' clamp to [0, 1] is the identity: x0, y0 are in it, and 0 < x1 - x0 <= x1 <= 1
                    x, y, w, h = f"{x0:.6g}", f"{y0:.6g}", f"{x1 - x0:.6g}", f"{y1 - y0:.6g}"
            boxes.append((index + 1, kind, x, y, w, h, f"{min(float(conf), 1.0):.4g}"))
        if not boxes:  # nothing detected: blank, but a photo cut short may hold an animal in its grey part
            boxes.append((0, "unknown" if is_cut_short(entry) else "blank", "", "", "", "", ""))
        self.counts["observations"] += len(boxes)
        return media, (mid, dep, event, timestamp), boxes

    def clock_shift(self, file: str) -> int:
        """The seconds ``clock_shifts`` adds to the clock of the camera that took ``file``: its camera folder's
        (``(root)`` for an image at the top), else the nearest folder above it that is named; 0 for none."""
        folder = camera_folder(file) or ROOT_DEPLOYMENT
        known = self._shifts.get(folder)
        if known is None:
            known = 0
            probe = folder
            while probe:
                if probe in self.clock_shifts:
                    known = self.clock_shifts[probe]
                    self.clock_matched.add(probe)
                    break
                probe = probe.rpartition("/")[0]
            self._shifts[folder] = known
        return known

    @staticmethod
    def _deployment_fields(known: _Deployment, fields: Mapping[str, tuple[str, str]], rest: dict[str, str]) -> None:
        """Fill a deployment's coordinates and camera from the first image's list row that gives them; values that
        cannot be read (a coordinate out of range, or only one of the two) or that differ from the deployment's
        join the image's ``rest``, so none is lost."""
        given = {k: fields[k] for k in ("latitude", "longitude") if k in fields}
        if given:
            lat = listfields.coordinate(given["latitude"][1], 90) if "latitude" in given else None
            lon = listfields.coordinate(given["longitude"][1], 180) if "longitude" in given else None
            if lat is not None and lon is not None and known.latitude is None:
                known.latitude, known.longitude = lat, lon
            elif lat is None or lon is None or (lat, lon) != (known.latitude, known.longitude):
                rest.update(given.values())
        if "camera_id" in fields:
            column, camera = fields["camera_id"]
            if not known.camera:
                known.camera = camera
            elif camera != known.camera:
                rest[column] = camera

    def _observation(self, oid: str, dep: str, mid: str, event: str, timestamp: str, kind: str, x: str, y: str,
                     w: str, h: str, probability: str) -> list[Any]:
        return [oid, dep, mid, event, timestamp, timestamp, "media", kind, "", "",
                "1" if kind not in ("blank", "unknown") else "", "", "", "", "", "", "", "", x, y, w, h, "machine",
                self.classified_by, self.completed_at, probability, "", ""]

    def _coordinates(self, dep: str, span: _Deployment) -> tuple[float, float] | None:
        """``(latitude, longitude)`` of a deployment: the caller's ``locations``, else the image list's."""
        where = self.locations.get(dep, {})
        lat, lon = where.get("latitude"), where.get("longitude")
        if isinstance(lat, (int, float)) and isinstance(lon, (int, float)):
            return float(lat), float(lon)
        if span.latitude is not None and span.longitude is not None:
            return span.latitude, span.longitude
        return None

    def unmatched_clock_shifts(self, matched: Iterable[str] = ()) -> list[str]:
        """The ``clock_shifts`` folders that are no deployment's camera folder nor a folder above one, and corrected
        no image's time here or (``matched``) in another part of the same exports: corrections that changed nothing
        (blob names are case-sensitive and compared code point by code point, so ``cam1`` is not ``Cam1/``, nor a
        composed ``Zoë`` a decomposed one), to be said instead of silently ignored. Each with the camera folder it may
        have meant, where one differs only in case or Unicode form. Why ``clock_matched`` too: with a
        ``camera_depth`` a day folder below a camera corrects its images' times but is no deployment's folder."""
        folders = {dep[:len(dep) - len(d.location) - 1] if d.location else dep for dep, d in self.deployments.items()}
        reached: set[str] = set()
        for folder in folders:
            while folder and folder not in reached:
                reached.add(folder)
                folder = folder.rpartition("/")[0]
        reached.update(self.clock_matched, matched)
        loose = {unicodedata.normalize("NFC", f).casefold(): f for f in sorted(reached, reverse=True)}
        out = []
        for key in sorted(self.clock_shifts):
            if key not in reached:
                near = loose.get(unicodedata.normalize("NFC", key).casefold())
                out.append(f"{key} (did you mean {near!r}?)" if near else key)
        return out

    def deployment_facts(self) -> list[list[Any]]:
        """The deployments as ``[id, start, end, timestamp_issues, location, latitude, longitude, camera]`` rows, in
        insertion order: what an exports part reports and a merge view carries (``core.exportparts``); start and end
        "" for a deployment none of whose images had a capture time."""
        return [[dep, d.start, d.end, d.timestamp_issues, d.location, d.latitude, d.longitude, d.camera]
                for dep, d in self.deployments.items()]

    def stand_ins(self) -> dict[str, str]:
        """The deployments with images without a capture time and with capture times of their own, each with its
        ``deploymentStart`` (``stand_in_time`` of its first capture time): those images' stand-in
        (``stand_in_media``; see the module doc)."""
        return {dep: d.opening() for dep, d in self.deployments.items() if d.timestamp_issues & NO_TIME and d.start}

    def deployment_rows(self) -> list[list[Any]]:
        return list(self.iter_deployment_rows())

    def iter_deployment_rows(self) -> Iterator[list[Any]]:
        """``deployments.csv``'s rows (``DEPLOYMENT_COLUMNS``), by deployment id, made one at a time. Why: the
        camera is MegaDetector's camera folder, so a collection in camera-day folders has a deployment per folder
        (a million at ten million images in folders of ten), and the rows made all at once held ~560 bytes a
        deployment beside the deployments themselves (``activities.exportparts.write_deployments``)."""
        for dep in sorted(self.deployments):
            span = self.deployments[dep]
            where = self.locations.get(dep, {})
            coords = self._coordinates(dep, span)
            comments = [] if coords else [NO_COORDINATES]
            for bit, text in ISSUE_COMMENTS:
                if span.timestamp_issues & bit:  # images without capture time: which stand-in they got
                    comments.append(FIRST_CAPTURE_FOR_SOME if bit == NO_TIME and span.start else text)
            row = {"deploymentID": dep, "locationID": span.location,
                   "locationName": str(where.get("locationName", span.location or dep)),
                   "latitude": coords[0] if coords else 0, "longitude": coords[1] if coords else 0,
                   "cameraID": span.camera, "deploymentStart": span.opening() or self.completed_at,
                   "deploymentEnd": span.end or self.completed_at,
                   "timestampIssues": "true" if span.timestamp_issues & UNSOLVED else "false",
                   "deploymentComments": "; ".join(comments)}
            yield [row.get(c, "") for c in DEPLOYMENT_COLUMNS]

    def descriptor(self, name: str, title: str, created: str, contributors: list[dict[str, str]],
                   licenses: list[dict[str, str]] | None = None,
                   event_interval_s: float | None = None, media_where: str = "") -> dict[str, Any]:
        """``datapackage.json``: the three tables with the canonical 1.0.2 schemas, and the required metadata;
        ``event_interval_s``: the observations include event-level ones, a camera's images at most that many
        seconds apart (``core.camtrap_events``); ``media_where``: the description's word on where the media files
        are (``media_location``), "" for none. ``created`` is given (the results' detection completion time: the
        module doc says why)."""
        # the package's time span: Camtrap DP's temporal is the "Start date of the first deployment" to the "End
        # date of the last (completed) deployment", so it covers every deployment row (deployment_rows: a deployment
        # without capture times spans the detection time), and so every media timestamp (stand_in_media)
        starts = [d.opening() or self.completed_at for d in self.deployments.values()] or [self.completed_at]
        ends = [d.end or self.completed_at for d in self.deployments.values()] or [self.completed_at]
        coords = [(float(w["longitude"]), float(w["latitude"])) for w in self.locations.values()
                  if isinstance(w.get("latitude"), (int, float)) and isinstance(w.get("longitude"), (int, float))]
        coords += [(d.longitude, d.latitude) for d in self.deployments.values()
                   if d.latitude is not None and d.longitude is not None]
        if not coords:
            coords = [(0.0, 0.0)]
        unplaced = sum(self._coordinates(dep, d) is None for dep, d in self.deployments.items())
        if not unplaced:
            placed = ""
        elif unplaced == len(self.deployments):
            placed = ("No deployment has known coordinates: 0, 0 stand in for every latitude and longitude and for "
                      "spatial (deploymentComments says so); replace them before publishing. ")
        else:
            placed = (f"{unplaced} of {len(self.deployments)} deployments have no known coordinates: 0, 0 stand in "
                      "for their latitude and longitude (deploymentComments says so), and spatial covers the others "
                      "only; replace them before publishing. ")
        xs, ys = [c[0] for c in coords], [c[1] for c in coords]
        spatial = {"type": "Polygon", "coordinates": [[[min(xs), min(ys)], [max(xs), min(ys)], [max(xs), max(ys)],
                                                       [min(xs), max(ys)], [min(xs), min(ys)]]]}
        doc: dict[str, Any] = {
            "resources": [{"name": t, "path": f"{t}.csv", "profile": "tabular-data-resource", "format": "csv",
                           "mediatype": "text/csv", "encoding": "utf-8", "schema": SCHEMA_URLS[t]} for t in TABLES],
            "profile": PROFILE_URL,
            "name": name,
            "title": title,
            "created": camtrap_timestamp(created) or created,
            "contributors": contributors,
            "description": ("MegaDetector detections (machine observations, not species identifications) made by "
                            f"{self.classified_by}; observations at or above confidence {self.threshold}. "
                            + PROJECT_PLACEHOLDERS + " " + placed + media_where
                            + (f"Capture times without a time zone (the cameras' clocks) are at UTC{self.utc_offset} "
                               "unless the photo (EXIF OffsetTimeOriginal) or the image list gave an image's own "
                               "utc_offset." if self.utc_offset
                               else NO_ZONE)
                            + (EVENTS_NOTE.format(interval=f"{event_interval_s:g}") if event_interval_s is not None
                               else "")),
            "project": {"title": title, "samplingDesign": "opportunistic", "captureMethod": ["activityDetection"],
                        "individualAnimals": False,
                        "observationLevel": ["media", "event"] if event_interval_s is not None else ["media"]},
            "spatial": spatial,
            "temporal": {"start": min(starts)[:10], "end": max(ends)[:10]},
            "taxonomic": [],
        }
        if licenses:
            doc["licenses"] = licenses
        return doc
