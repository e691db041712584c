"""``GET /api/openapi.json``: the HTTP API described in OpenAPI 3.1, so clients can be generated and fuzzers can check it.

The task request's schema is written here beside the one validation that matters (``core.requests``) and is checked
against it twice: ``request_schema`` refuses to build when its fields differ from ``core.requests.ALLOWED_FIELDS`` (a
field added to the request without its schema fails at import, and so every test), and tests/unit/test_openapi.py
feeds the same bodies to this schema and to ``parse_task_request`` and requires them to agree. The bounds (lengths,
maxima, the container name rule) are the validation's own constants. tests/integration/test_openapi.py runs
schemathesis against devhost with this description: no 5xx, no answer outside the documented status codes and schemas.

JSON Schema 2020-12 is OpenAPI 3.1's schema dialect (``nullable`` is gone: ``type: [..., "null"]``), per the
OpenAPI Specification 3.1.0, "Schema Object".
"""
from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import azure.functions as func

from api.edge import http_edge, json_response
from core import requests as rq
from core.contracts import TASK_LIST_LIMIT, Stage
from core.repeats import MAX_FOLDER_DETECTIONS, RepeatOptions
from core.stall import AFTER_TASK_RUNS, REPEAT_RUNS
from gpu_batch import layout

bp = df.Blueprint()  # as api/starters.py: DFApp registers durable blueprints

TASK_ID_PATTERN = r"^task-[0-9a-f]{20}$"  # core.ids.is_task_id
_STR = {"type": ["string", "null"]}


def _int(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": ["integer", "null"], "minimum": minimum, "maximum": maximum}


def _text(max_len: int) -> dict[str, Any]:
    # no control characters (core.requests._CONTROL_RE)
    return {**_STR, "maxLength": max_len, "pattern": r"^[^\u0000-\u001f\u007f]*$"}


# One entry per core.requests.ALLOWED_FIELDS name; request_schema() refuses any difference.
REQUEST_FIELDS: dict[str, dict[str, Any]] = {
    "container": {"type": "string", "minLength": 3, "maxLength": 63, "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$",
                  "description": "blob container holding the images", "examples": ["my-camera-traps"]},
    "prefix": {**_text(1024), "description": "only blobs under this prefix", "examples": ["2024/site-a/"]},
    "first_n": {**_int(1, rq.MAX_IMAGES), "description": "only the first N images (listing order); not with sample_n"},
    "sample_n": {**_int(1, rq.MAX_IMAGES), "description": "a seeded uniform random sample of N images"},
    "seed": {**_int(0, rq.MAX_SEED), "description": "the sample's seed (only with sample_n; default 0)"},
    "model": {**_text(1024), "description": "MDV5A, MDV5B, MDV1000-REDWOOD, MDV1000-SPRUCE or blob://<models "
              "container>/<name>; default: the app's TRAPBATCH_MODEL", "examples": ["MDV5A"]},
    "request_name": {**_text(200), "description": "a label; not part of the task id"},
    "caller": {**_text(200), "description": "a label (replaced by the verified caller where callers sign in)"},
    "images_per_shard": {**_int(1, rq.MAX_IMAGES_PER_SHARD), "description": "shard size (default: the app's)"},
    "source_account_url": {**_text(300), "description": "the images' storage account blob endpoint (https; no SAS)"},
    "credential_secret": {**_STR, "maxLength": 127, "pattern": r"^([0-9A-Za-z-]{1,127})?$",
                          "description": "name of the Key Vault secret that opens source_account_url"},
    "max_failed_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                            "description": "share of images that may fail for the task to end 'completed'"},
    "preview_threshold": {"type": ["number", "null"], "minimum": rq.MIN_PREVIEW_THRESHOLD, "maximum": 1,
                          "description": "confidence from which a detection counts in the preview, CSV and exports "
                          "(default: the app's setting, else the model's typical threshold); not part of the task id"},
    "dry_run": {"type": ["boolean", "null"], "description": "enumerate and estimate only (stage 'estimated'); "
                "submits nothing to the pool; part of the task id"},
    "notify_url": {**_text(2000), "description": "https address that receives one signed JSON POST when the task "
                   "ends (hosts allowed by the app's TRAPBATCH_NOTIFY_HOSTS)"},
    "notify_url_secret": {**_STR, "maxLength": 127, "pattern": r"^([0-9A-Za-z-]{1,127})?$",
                          "description": "name of the Key Vault secret holding the address to notify, for one that "
                          "carries a secret (sig=, code=, a webhook's path); it starts with the app's "
                          "TRAPBATCH_NOTIFY_URL_SECRET_PREFIX (default notify-url-); not with notify_url"},
    "previews_expire_days": {**_int(1, rq.MAX_PREVIEWS_EXPIRE_DAYS), "description": "days after the task ends that "
                             "its preview pages come off the public website (a durable timer); not part of the task "
                             "id"},
    "image_list": {**_text(1024), "description": "a blob in 'container' listing exactly the images to run: a JSON "
                   "array of paths or of objects ({\"file\": ..., flags, metadata}), or a CSV with a path column "
                   "(path, file, filename, image_path or image_path_rel), optional flag columns (invalid, "
                   "image_is_invalid, image_no_upload, image_was_deleted: a truthy value leaves the row out) and "
                   "metadata columns (carried into the COCO, Camtrap DP and Zooniverse exports). Paths are "
                   "relative to 'prefix' and may not have '.' or '..' folders. Names "
                   "the container does not hold end as failures of reason 'listed_not_found'. The list's content "
                   "hash is part of the task id; with first_n only its first N rows run; not with sample_n. A "
                   "missing, unreadable, empty, malformed or too large list is a 400",
                   "examples": ["lists/season-1.csv"]},
    "rerun": {"type": ["boolean", "null"], "description": "run a task that finished (or failed) again as a new "
              "generation: its own pool job and results; the previous results stay served until it completes; 409 "
              "while the task runs; not part of the task id"},
    "only_new": {"type": ["boolean", "null"], "description": "a re-run (implies rerun) that reuses the served "
                 "generation's final results of images whose name and ETag are unchanged and sends only new or "
                 "changed images (and those without a final result) to the pool; the new results file holds every "
                 "image once (images deleted since are dropped); a served generation enumerated before ETags were "
                 "recorded reuses nothing; the status counts 'reused'; not part of the task id"},
    "utc_offset": {**_STR, "pattern": rq.UTC_OFFSET_PATTERN, "description": "the offset from UTC of the cameras' "
                   "clocks (+HH:MM or -HH:MM, Z for UTC): the Camtrap DP export writes capture times without a zone "
                   "(EXIF's) in it; default: taken as UTC, as the package's description says; not part of the task "
                   "id", "examples": ["+02:00"]},
    "event_interval_s": {"type": ["number", "null"], "minimum": 0, "maximum": rq.MAX_EVENT_INTERVAL_S,
                         "description": "seconds between two photos of a camera past which the Camtrap DP export's "
                         "event-level observations count two events (60: bursts, as MegaDetector's sequences; 1800: "
                         "a 30-minute independence interval); default: the app's TRAPBATCH_EVENT_INTERVAL_S (60); not "
                         "part of the task id", "examples": [60, 1800]},
    "zooniverse_visit_frames": {"type": ["integer", "null"], "minimum": 1, "maximum": rq.MAX_VISIT_FRAMES,
                                "description": "Zooniverse subjects made of visits instead of single images: each "
                                "camera's photos grouped by time as the Camtrap DP export's events (event_interval_s), "
                                "at most this many frames a subject in capture-time order, and at most the app's "
                                "TRAPBATCH_ZOONIVERSE_MAX_FRAMES (a longer visit is several subjects, each saying "
                                "its #capture_part); an image list's own captures (capture_id, or season, site, roll and "
                                "capture) win; default: a subject per image; not part of the task id",
                                "examples": [3]},
    "camera_depth": {"type": ["integer", "null"], "minimum": 1, "maximum": rq.MAX_CAMERA_DEPTH,
                     "description": "which folders are a camera: an image's first camera_depth folders below the "
                     "prefix (1 for camera-01/2024-06-01/IMG_1.JPG: the day folders are one camera), for every "
                     "export that groups by camera (Camtrap DP deployments, media and events, COCO location and "
                     "sequences, camera-visits.csv, camera-days.csv); an image list's location still splits a "
                     "camera; default: the image's folder less camera overflow folders (MegaDetector's rule); not "
                     "part of the task id", "examples": [1]},
    "clock_corrections": {
        "type": ["object", "null"], "maxProperties": rq.MAX_CLOCK_CORRECTIONS,
        # a name with a character other than '/' and no control character (the validation strips the slashes)
        "propertyNames": {"minLength": 1, "maxLength": 1024,
                          "pattern": "^[^\\x00-\\x1f\\x7f]*[^/\\x00-\\x1f\\x7f][^\\x00-\\x1f\\x7f]*$"},
        "additionalProperties": {"oneOf": [
            {"type": "integer", "minimum": -rq.MAX_CLOCK_SHIFT_S, "maximum": rq.MAX_CLOCK_SHIFT_S},
            {"type": "object", "required": ["camera", "actual"], "additionalProperties": False,
             "properties": {"camera": {"type": "string", "pattern": rq.CLOCK_TIME_PATTERN},
                            "actual": {"type": "string", "pattern": rq.CLOCK_TIME_PATTERN}}}]},
        "description": "cameras whose clock was wrong: camera folder (as in the results' file names; it covers the "
        "folders below it, the longest one holding an image decides) -> the seconds to add to its clock, or the time "
        "a photo shows and the true time it was taken ({\"camera\": \"2000:01:01 00:12:00\", \"actual\": "
        "\"2024-06-01 06:30:00\"}); the Camtrap DP export's timestamps, deployment spans and events use the "
        "corrected times (the results, CSV and COCO keep the camera's clock as written); not part of the task id",
        "examples": [{"site-a/cam-3": 3600}]},
}


# One entry per core.requests.REPEAT_SEARCH_FIELDS name (repeat_search_schema() refuses any difference); the bounds
# are the validation's constants. MegaDetector's names (RepeatDetectionOptions) are given in camelCase.
REPEAT_SEARCH_PROPERTIES: dict[str, dict[str, Any]] = {
    "occurrence_threshold": {**_int(rq.MIN_OCCURRENCE_THRESHOLD, rq.MAX_OCCURRENCE_THRESHOLD),
                             "description": "occurrenceThreshold: images of one folder a box must recur in to be a "
                                            "repeated place (default 20)"},
    "iou_threshold": {"type": ["number", "null"], "minimum": rq.MIN_SEARCH_IOU, "maximum": 1,
                      "description": "iouThreshold: IoU from which two boxes are the same place (default 0.9; below "
                                     f"{rq.MIN_SEARCH_IOU} the search would no longer grow linearly with the folder)"},
    "confidence_min": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                       "description": "confidenceMin: detections below this take no part (default 0.1)"},
    "confidence_max": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                       "description": "confidenceMax: detections above this take no part (default 1.0); not below "
                                      "confidence_min"},
    "min_suspicious_detection_size": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                                      "description": "minSuspiciousDetectionSize: boxes smaller than this fraction of "
                                                     "the image take no part (default 0)"},
    "max_suspicious_detection_size": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1,
                                      "description": "maxSuspiciousDetectionSize: boxes larger than this fraction of "
                                                     "the image take no part (default 0.2); not below "
                                                     "min_suspicious_detection_size"},
    "max_folder_detections": {**_int(1, MAX_FOLDER_DETECTIONS),
                              "description": "maxImagesPerFolder, by eligible detections (what a folder's search time "
                                             "grows with, squared): a folder with more is not searched but named in "
                                             "the list's skipped_folders (default: the app's "
                                             "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS, 800000 unless set; at most "
                                             f"{MAX_FOLDER_DETECTIONS}: one activity's time limit and memory)"},
}


class SchemaDrift(AssertionError):
    """The request schema and core.requests disagree on the fields."""


def request_schema(fields: dict[str, dict[str, Any]] | None = None,
                   allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The TaskRequest schema; ``SchemaDrift`` when its fields are not exactly ``core.requests.ALLOWED_FIELDS``."""
    fields = REQUEST_FIELDS if fields is None else fields
    allowed = rq.ALLOWED_FIELDS if allowed is None else allowed
    missing, extra = sorted(set(allowed) - set(fields)), sorted(set(fields) - set(allowed))
    if missing or extra:
        raise SchemaDrift(f"api/openapi.py REQUEST_FIELDS and core.requests.ALLOWED_FIELDS differ: without a schema "
                          f"{missing}, not accepted by the validation {extra}; describe every request field")
    return {"type": "object", "required": ["container"], "additionalProperties": False,
            "properties": {name: fields[name] for name in allowed}}


def repeat_search_schema(properties: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The body of POST /api/tasks/{id}/repeats/search; ``SchemaDrift`` when its fields are not exactly
    ``core.requests.REPEAT_SEARCH_FIELDS``."""
    properties = REPEAT_SEARCH_PROPERTIES if properties is None else properties
    missing = sorted(set(rq.REPEAT_SEARCH_FIELDS) - set(properties))
    extra = sorted(set(properties) - set(rq.REPEAT_SEARCH_FIELDS))
    if missing or extra:
        raise SchemaDrift(f"api/openapi.py REPEAT_SEARCH_PROPERTIES and core.requests.REPEAT_SEARCH_FIELDS differ: "
                          f"without a schema {missing}, not accepted by the validation {extra}")
    return {"type": "object", "additionalProperties": False,
            "description": "MegaDetector's RDE phase-1 options; fields left out take MegaDetector's defaults",
            "properties": {name: properties[name] for name in rq.REPEAT_SEARCH_FIELDS}}


def _error() -> dict[str, Any]:
    return {"type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"}, "hint": {"type": "string"}}}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/"
                                                                                              f"{schema}"}}}}


def _errors(*codes: int, also: dict[int, str] | None = None) -> dict[str, Any]:
    """The error answers of a route: ``codes``, each ``{error, hint}`` (core.errors; the edge, api.edge), with
    ``also`` adding what else a code means on this route; 500, 502 and 503 on every route."""
    why = {400: "invalid request (the body names the field and the fix)", 401: "no or wrong function key, or no "
           "verified caller", 403: "another caller's task, or a source account not allowed", 404: "no such task "
           "or container", 409: "the task is not in a stage that allows this", 413: "body over 64 KiB (the hint "
           "names the field that takes most of it, where one does)", 415: "body not sent as JSON (Content-Type: "
           "application/json)", 429: "too many running tasks for this caller: ask again after Retry-After seconds",
           500: "trapbatch's own settings are missing or wrong (ConfigError: the hint names the setting), its storage "
                "account's host name does not resolve (a misspelt or deleted account in AzureWebJobsStorage), or an "
                "unforeseen failure ('internal error (<kind>)': retry, and report it with the time of the request if "
                "it persists; the function log has the details)",
           502: "trapbatch's own storage refused the app's identity (a role assignment is missing) or answered "
                "something trapbatch cannot use: a deployment problem, not the request's; the hint says what to check",
           503: "trapbatch's storage or task hub, or the images' storage account or Key Vault, is busy or "
                "unreachable: ask again after Retry-After seconds "
                "(GET /api/tasks also when its instance list took too long to read: the body says how to purge old "
                "instances)"}
    for code, more in (also or {}).items():
        why[code] = f"{why[code]}; {more}"
    retry_after: dict[str, Any] = {"Retry-After": {"description": "seconds to wait before asking again",
                                                   "schema": {"type": "integer", "minimum": 0}}}
    # 401 without a key is the Functions host's own answer, before the app runs: no body at all (devhost does the same)
    answers: dict[str, dict[str, Any]] = {
        str(c): ({"description": why[c]} if c == 401 else _answer(why[c], "Error")) for c in codes}
    if "429" in answers:  # core.errors.TooManyActiveTasks: Retry-After 60
        answers["429"]["headers"] = retry_after
    # every route reads the task hub or storage, whose failures answer 503 (core.errors TaskHubUnavailable,
    # StorageUnavailable, and SourceBusy for the images' account: Retry-After 30, which the CLI waits and asks again),
    # and storage that refused trapbatch's identity or answered oddly 502 (core.errors StorageAccessDenied,
    # StorageError: adapters.storage_errors maps every storage SDK error at the edge)
    # and anything else 500 (api.edge.as_trapbatch_error: core.errors ConfigError, StorageHostUnresolvable, and
    # InternalError for an exception nobody foresaw), each {error, hint} as every error
    answers["500"] = _answer(why[500], "Error")
    answers["502"] = _answer(why[502], "Error")
    answers["503"] = {**_answer(why[503], "Error"), "headers": retry_after}
    return answers


def _task_status_fields() -> dict[str, Any]:
    """The fields of ``GET /api/tasks/{id}`` beside id, stage, progress and the blocks: the task orchestration's
    custom status (``core.contracts.TaskStatus``, every key of which the handler passes on) and the shard groups'
    counts the handler sums while the task detects (``api.starters._describe``). A client generated from a
    description that left them out dropped them (tests/orchestrations/test_openapi_status.py checks every status the
    orchestration tests see against this, with no field left undescribed)."""
    time = {"type": "string", "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    return {
        "started": {**time, "description": "when this run of the task started"},
        "detecting_since": {**time, "description": "stage detecting: when the pool work began (the rate and ETA "
                                                   "count from here)"},
        "finished": {**time, "description": "when the task ended (completed, cancelled, failed, expired, estimated)"},
        "generation": {"type": "string", "description": "a re-run: its run id (its results are under "
                                                        "results/<task>/runs/<run>/); absent: the task's first run"},
        "groups_run": {"type": "string", "description": "the run in the shard groups' instance ids"},
        "replaced": _replaced(),
        "pool_job": {"type": "string", "description": "the run's pool job"},
        "pool_job_error": {"type": "string", "description": "the run's pool job could not be closed after its work "
                                                            "ended (it counts against the account's active jobs): the "
                                                            "command that ends it, then the error"},
        "shards": {**count, "description": "shards the images were cut into"},
        "groups": {**count, "description": "shard groups (sub-orchestrations) running them"},
        "shards_done": {**count, "description": "stage detecting: shards finished or given up"},
        "shards_running": {**count, "description": "stage detecting: shards whose pool task runs"},
        "shards_queued": {**count, "description": "stage detecting: shards whose pool task waits in the pool's queue"},
        "images_failed": {**count, "description": "stage detecting: images whose final result is a failure so far"},
        "images_missing": {**count, "description": "stage detecting: images a finished attempt left without a "
                                                   "result (they go to the pool again)"},
        "resubmissions": {**count, "description": "shard attempts after the first"},
        "reused": {**count, "description": "an only_new re-run: images whose previous results were reused (not sent "
                                           "to the pool)"},
        "earlier": {**count, "description": "a resumed run: images an earlier run of the task had given a final "
                                            "result: those of the shards it had finished, which start done (no pool "
                                            "task), and those of the shards sent to the pool for their other images "
                                            "(in images_done, not in the rate or the cost's images)"},
        "failed": {**count, "description": "images whose result is a failure"},
        "missing": {**count, "description": "images left without a result after the merge"},
        "failed_fraction": {"type": "number", "minimum": 0, "description": "failed / images; 'completed' needs it "
                                                                          "<= max_failed_fraction and none missing"},
        "max_failed_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "failure_reasons": {"type": "object", "additionalProperties": {"type": "integer"},
                            "description": "failed images by failure reason (auth, undecodable, not_processed...)"},
        "failures_hint": {"type": "string", "description": "some images failed: how many, why and what to do"},
        "with_detections": count, "detections": count, "empty": count,
        "work_left": {"type": "string", "description": "work blobs a cleanup left: the command that deletes them, "
                                                       "then the error. Absent: none"},
        "repeated_detections": {
            "type": "object", "description": "the task's current repeated-detection list (GET .../repeats shows "
            "it): how many places, its blob, which search made it ('merge': the task's own; else a search run again, "
            "started at 'searched'), folders too large to search, or why the search failed, and what to do",
            "properties": {"locations": count, "blob": {"type": "string", "description": "empty: no list (the "
                                                                                          "search failed)"},
                           "search": {"type": "string"}, "searched": {"type": ["string", "null"]},
                           "folders_skipped": count, "detections_skipped": count, "error": {"type": "string"},
                           "hint": {"type": "string"},
                           "note": {"type": "string", "description": "the latest search's list could not be read "
                                                                     "just now: this is the merge's"},
                           "stalled": {"type": "object", "description": "the served results' repeat removal or "
                                       "search has stalled (GET .../repeats shows it, with what to do): which, "
                                       "since when, and the hint. Absent: none has", "required": ["target", "hint"],
                                       "properties": {"target": {"enum": ["removal", "search"]},
                                                      "since": {"type": "string", "format": "date-time"},
                                                      "hint": {"type": "string"}}}}},
        "previews": _previews_output(),
    }


def _liveness(where: str = "") -> dict[str, Any]:
    """``updated`` and ``stalled`` (api.starters ``_add_liveness``, core.stall), of a task's status and its list row."""
    return {
        "updated": {"type": "string", "format": "date-time", "description": "when the task last changed: its "
                    "orchestration's lastUpdatedTime, which the platform records at each of its steps" + where},
        "stalled": {"type": "object", "description": "a running task that has not changed for longer than any wait "
                    "of its stage explains (two activity timeouts, the stage's longest durable timer, 15 minutes; "
                    "awaiting_confirmation: its confirmation deadline; detecting: its shard groups' longest poll "
                    "delay): on Azure an action the Durable extension refuses is dropped without failing the task, "
                    "which would stay running for ever. since: the last change; seconds: how long ago; "
                    "limit_seconds: the stage's bound; hint: what to do (the app's logs, terminate through POST "
                    ".../terminate, post the same request again to resume). Absent: it moves, or it ended",
                    "required": ["since", "seconds", "limit_seconds", "hint"], "properties": {
                        "since": {"type": "string", "format": "date-time"},
                        "seconds": {"type": "integer", "minimum": 0},
                        "limit_seconds": {"type": "integer", "minimum": 0}, "hint": {"type": "string"}}}}


def _damaged() -> dict[str, Any]:
    """The photos cut short (core.contracts.TaskStatus.damaged; a removal's is the task's)."""
    return {"type": "object", "description": "photos cut short (JPEGs without their end-of-image marker: power lost "
            "mid-write, a partial copy), detected as far as they go with gray fill as MegaDetector does: their "
            "results stand, but copy them again from the cards. How many, the first few names, the blob listing all "
            "of them (damaged.csv, which GET .../results links) and what to do. Absent: none",
            "properties": {"count": {"type": "integer", "minimum": 1},
                           "examples": {"type": "array", "items": {"type": "string"}},
                           "blob": {"type": "string"}, "hint": {"type": "string"}}}


def _replaced() -> dict[str, Any]:
    """A re-run's promotion replaced a generation: which, and when its files are deleted (core.contracts
    .ReplacedSweepScheduled; core.replaced)."""
    return {"type": "object", "required": ["generation", "deletes_at"], "description": (
        "a re-run that completed replaced the generation served before it: its results, exports, zips and working "
        "state are deleted at deletes_at (TRAPBATCH_KEEP_REPLACED_DAYS after the promotion, default 30, never sooner "
        "than every link handed out for them has ended; later, a day at a time, while the task's running run reads "
        "them); null: kept for ever (the setting is 0), or no sweep could "
        "be scheduled (error)"), "properties": {
        "generation": {"type": "string", "description": "the replaced generation's run id; empty: the task's first"},
        "deletes_at": {"type": ["string", "null"], "format": "date-time"},
        "instance_id": {"type": "string", "description": "the sweep's orchestration, waiting until then"},
        "scheduled": {"type": "boolean", "description": "false: the sweep was started already (a retried call)"},
        "error": {"type": "string", "description": "no sweep was scheduled: why (the generation stays)"}}}


def _results_ref() -> dict[str, Any]:
    """core.contracts.ResultsRef."""
    return {"type": "object", "description": "a finished task: where its results are (GET .../results links them); "
            "when the exports failed after their retries (the results JSON and CSV stand), exports_error says why "
            "and exports_hint what to do",
            "properties": {"container": {"type": "string"}, "blob": {"type": "string"}, "csv": {"type": "string"},
                           "exports": _exports_ref(), "exports_error": {"type": "string"},
                           "exports_hint": {"type": "string"}}}


def _previews_output(**more: Any) -> dict[str, Any]:
    """core.contracts.PreviewsOutput, and ``more`` properties."""
    return {"type": "object", "description": "the preview pages (GET .../results links them): their counts, when "
            "they come off the website (expires) or why no expiry was scheduled, why nothing was written "
            "(not_published), pictures the page has none of, and a README that could not be written",
            "properties": {"container": {"type": "string"},
                           "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                           "expires": {"type": "string", "format": "date-time"}, "expiry_error": {"type": "string"},
                           "not_published": {"type": "string"}, "pictures_missing": _pictures_missing(),
                           "readme_error": {"type": "string"}, **more}}


# Where a preview page is (api.starters._preview_page): its folder and blob, its addresses and a word of caution, or,
# without pages, why (error) and what that means (hint).
PAGE_PROPERTIES: dict[str, Any] = {
    "container": {"type": "string"}, "folder": {"type": "string"}, "blob": {"type": "string"},
    "public_url": {"type": "string", "description": "the static website's address (TRAPBATCH_PUBLIC_WEB_URL set)"},
    "local_url": {"type": "string", "description": "devhost's address of the page"},
    "hint": {"type": "string"}, "error": {"type": "string", "description": "no pages: why"}}


def _instance(description: str, **properties: Any) -> dict[str, Any]:
    """An orchestration after the task as GET .../results and .../repeats show it (api.after_task._instance): its
    runtime status and custom status, a failed one's stage failed and error; null: none ran."""
    return {"type": ["object", "null"], "description": description, "properties": {
        "runtime_status": {"type": "string"}, "stage": {"type": "string"}, "error": {"type": "string"},
        "started": {"type": "string", "format": "date-time"}, "finished": {"type": "string", "format": "date-time"},
        **properties}}


def _repeat_liveness(target: str) -> dict[str, Any]:
    """``updated`` and ``stalled`` of a run after the task (``target``: a key of core.stall.AFTER_TASK_RUNS;
    api.repeat_runs ``add_liveness``, core.stall ``repeat_stalled``)."""
    what = AFTER_TASK_RUNS[target]
    return {
        "updated": {"type": "string", "format": "date-time", "description": f"when the {what} last changed: its "
                    "orchestration's lastUpdatedTime"},
        "stalled": {"type": "object", "description": f"a running {what} that has not changed for longer than its "
                    "waits explain (two activity timeouts, a busy step's retry, 15 minutes): on Azure an action the "
                    "Durable extension refuses is dropped without failing it, and until it ends no other "
                    f"{'removal or search' if target in REPEAT_RUNS else what} of the task starts. hint: what to do "
                    f"(the app's logs, POST .../terminate with {{\"target\": \"{target}\"}}, start it again). "
                    "Absent: it moves, or it ended",
                    "required": ["since", "seconds", "limit_seconds", "hint"], "properties": {
                        "since": {"type": "string", "format": "date-time"},
                        "seconds": {"type": "integer", "minimum": 0},
                        "limit_seconds": {"type": "integer", "minimum": 0}, "hint": {"type": "string"}}}}


def _removal() -> dict[str, Any]:
    """core.contracts.RemovalStatus, its page laid over its previews (api.starters.task_repeats)."""
    count = {"type": "integer", "minimum": 0}
    return _instance("the latest removal of the served results: stage, locations, detections_marked, results (the "
                     "repeats-removed files), previews (with the page once completed), and damaged as the task's "
                     "status has it (the same photos cut short and damaged.csv: removing repeated detections changes "
                     "no photo)", search=_STRING, locations=count, detections_marked=count, results=_results_ref(),
                     previews=_previews_output(**PAGE_PROPERTIES), damaged=_damaged(), work_left=_STRING,
                     cut=_STRING, **_repeat_liveness("removal"))


def _searching() -> dict[str, Any]:
    """core.contracts.RepeatSearchStatus (api.repeat_search.search_status)."""
    count = {"type": "integer", "minimum": 0}
    return _instance("the latest search run again over the served results: its list id (search), options, how far "
                     "it got, the places found, the folders it skipped; null: none ran", search=_STRING,
                     options=repeat_options(), parts=count, groups=count, detections_considered=count,
                     locations=count, folders_skipped=count, detections_skipped=count,
                     previews=_previews_output(), work_left=_STRING, **_repeat_liveness("search"))


def _results_previews() -> dict[str, Any]:
    """GET .../results' previews: the page, and the last re-render and the expiry (core.contracts.RerenderStatus,
    ExpiryStatus)."""
    return {"type": "object", "description": "the served generation's preview page, its last re-render at another "
            "threshold (null: none of this generation) and its expiry (null: none scheduled)", "properties": {
                **PAGE_PROPERTIES,
                "rerender": _instance("the last re-render (POST .../previews)", key=_STRING,
                                      threshold={"type": "number"},
                                      csv={"type": "object", "additionalProperties": {"type": "string"}},
                                      previews={"type": "object", "additionalProperties": _previews_output()},
                                      **_repeat_liveness("previews")),
                "expiry": _instance("when the pages come off the public website (previews_expire_days)",
                                    expires={"type": "string"}, deleted={"type": "integer", "minimum": 0})}}


def _links() -> dict[str, Any]:
    """adapters.share_links.linked, with the zip's link (api.after_task.extend_results) or why there are none."""
    return {"type": "object", "description": "read-only links to every file (the same layout as results.files) and "
            "the zip, until expires; without links: why (error) and what to do (hint)", "properties": {
                "expires": {"type": "string", "format": "date-time"}, "kind": _STRING, "read_only": {"type": "boolean"},
                "files": {**_variant_files("link"), "description": "as results.files, each blob's link"},
                "zip": _STRING, "zip_error": _STRING, "error": _STRING, "hint": _STRING}}


_STRING = {"type": "string"}


def _misses(what: str) -> dict[str, Any]:
    """How many of what was wanted are missing, by why, the first few names, the first error and what to do."""
    return {"type": "object", "description": what, "properties": {
        "count": {"type": "integer", "minimum": 1}, "of": {"type": "integer"},
        "reasons": {"type": "object", "additionalProperties": {"type": "integer"}},
        "examples": {"type": "array", "items": {"type": "string"}}, "error": {"type": "string"},
        "hint": {"type": "string"}}}


def _pictures_missing() -> dict[str, Any]:
    return _misses("images the page wanted a picture of and has none (activities.previews): how many of how many, "
                   "by why, the first few, the first read error and what to do. Absent: every picture was made")


def _given_up_shard() -> dict[str, Any]:
    """core.contracts.GivenUpShard: how a given-up shard's last attempt ended."""
    return {"type": "object", "properties": {
        "shard": {"type": "string"}, "attempts": {"type": "integer"},
        "exit_code": {"type": ["integer", "null"], "description": "the worker's (or the operating system's, when "
                                                                  "the pool ended it); null: none"},
        "failure_code": {"type": "string", "description": "the pool's (TaskEnded: its time limit or a terminate)"},
        "by": {"enum": ["worker", "pool"]}, "reason": {"type": "string"},
        "failure_reasons": {"type": "object", "additionalProperties": {"type": "integer"},
                            "description": "the attempt's retryable failures by reason, when the worker exited 0"}}}


def _exports_ref() -> dict[str, Any]:
    """core.contracts.ExportsOutput: where a finished task's exports are (blob names) and what they hold."""
    count = {"type": "integer", "minimum": 0}
    return {"type": "object", "description": "the COCO, Camtrap DP and Zooniverse exports beside the results: their "
            "blobs (in container) and counts", "properties": {
                "container": {"type": "string"}, "prefix": {"type": "string"}, "coco": {"type": "string"},
                "camtrap_dp": {"type": "string", "description": "the package's folder"},
                "zooniverse": {"type": "string", "description": "the manifests' folder (batch-001.csv...)"},
                "zooniverse_batches": count, "threshold": {"type": "number"}, "images": count,
                "annotations": count, "observations": count, "deployments": count, "zooniverse_subjects": count,
                "sizes_unknown": {**count, "description": "images whose size could not be read: their COCO boxes "
                                                          "stay normalized"},
                "sizes_unknown_why": _misses("why sizes are unknown: by reason, the first names, the first error "
                                             "and what to do"),
                "zooniverse_cut_short": {**count, "description": "photos cut short left out of the subjects"},
                "zooniverse_capture_images": count, "events": count, "event_observations": count,
                "camera_visits": {"type": "string"}, "camera_days": {"type": "string"}, "cameras": count,
                "clock_corrections_unmatched": {"type": "array", "items": {"type": "string"},
                                                "description": "clock_corrections folders matching no camera "
                                                               "folder, each with the folder it may have meant"},
                "clock_corrections_unmatched_count": {**count, "description": "of how many, when more than "
                                                                              "listed"}}}


# One entry per core.repeats.RepeatOptions field (repeat_options() refuses any difference): the options a
# repeated-detection list records (its document's ``options``, RepeatOptions.to_dict), in the search's own names.
REPEAT_OPTIONS_PROPERTIES: dict[str, dict[str, Any]] = {
    "confidence_min": {"type": "number", "description": "confidence_min of POST .../repeats/search"},
    "confidence_max": {"type": "number", "description": "confidence_max of POST .../repeats/search"},
    "iou_threshold": {"type": "number", "description": "iou_threshold of POST .../repeats/search"},
    "occurrence_threshold": {"type": "integer", "description": "occurrence_threshold of POST .../repeats/search"},
    "min_area": {"type": "number", "description": "min_suspicious_detection_size of POST .../repeats/search"},
    "max_area": {"type": "number", "description": "max_suspicious_detection_size of POST .../repeats/search"},
    "files_listed": {"type": "integer", "description": "file names kept per place (the first ones)"},
    "max_folder_detections": {"type": "integer", "description": "max_folder_detections of POST .../repeats/search "
                              "(absent from a list made before that option existed: every folder was searched)"},
}


def repeat_options(properties: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The options a repeated-detection list records, as GET .../repeats shows them (``options``, and the search's
    under ``searching``); raises ``SchemaDrift`` when ``properties`` and ``RepeatOptions``'s fields differ."""
    properties = REPEAT_OPTIONS_PROPERTIES if properties is None else properties
    fields = list(RepeatOptions.__slots__)
    if sorted(properties) != sorted(fields):
        raise SchemaDrift(f"api/openapi.py REPEAT_OPTIONS_PROPERTIES and core.repeats.RepeatOptions differ: without "
                          f"a schema {sorted(set(fields) - set(properties))}, not an option "
                          f"{sorted(set(properties) - set(fields))}")
    return {"type": "object", "description": "the search's options in RepeatOptions' names (the list's record)",
            "properties": {name: properties[name] for name in fields}}


def _search_options() -> dict[str, Any]:
    """The options in the names POST .../repeats/search takes (``core.requests.repeat_search_fields``): each a value,
    never null (a list made before an option existed leaves that one out)."""
    def plain(schema: dict[str, Any]) -> dict[str, Any]:
        kinds = [k for k in schema["type"] if k != "null"]
        return {"type": kinds[0] if len(kinds) == 1 else kinds}

    return {"type": "object", "description": "the options in the names POST .../repeats/search takes: send them "
            "back (changed) to search again", "properties": {
                name: plain(schema) for name, schema in REPEAT_SEARCH_PROPERTIES.items()}}


def _place() -> dict[str, Any]:
    """One repeated-detection place (core.repeats.rank_locations, its search's ``suspicious``)."""
    number = {"type": "number"}
    return {"type": "object", "required": ["id", "folder", "bbox", "count"], "properties": {
        "id": {"type": "string", "description": "the place's id (r00001...), to keep or remove it"},
        "folder": {"type": "string"}, "category": {"type": "string", "description": "the detection category"},
        "bbox": {"type": "array", "items": number, "minItems": 4, "maxItems": 4,
                 "description": "x, y, width, height (normalized) of its first detection"},
        "count": {"type": "integer", "minimum": 1, "description": "images of the folder it recurs in"},
        "conf_min": number, "conf_max": number,
        "files": {"type": "array", "items": {"type": "string"}, "description": "the first few of those images"}}}


def _skipped_folders() -> dict[str, Any]:
    """core.repeats.skipped_summary."""
    count = {"type": "integer", "minimum": 0}
    return {"type": ["object", "null"], "description": "folders not searched, each holding more than "
            "max_folder_detections eligible detections: how many (folders), their detections, the first 100 by name "
            "(listed) and the rest's count (more), and what to do (hint); null: none", "properties": {
                "folders": count, "detections": count, "more": count, "hint": _STRING,
                "listed": {"type": "array", "items": {"type": "object", "properties": {
                    "folder": _STRING, "detections": count}}}}}


def _variant_files(kind: str) -> dict[str, Any]:
    """adapters.share_links.result_files (``kind`` "blob": names) or linked (``kind`` "link"): per results variant,
    each of its files."""
    one = {"type": "string"}
    group = {"type": "object", "additionalProperties": one}
    return {"type": "object", "propertyNames": {"enum": ["original", layout.REPEATS_REMOVED]},
            "additionalProperties": {"type": "object", "properties": {
                "results": one, "csv": one, "damaged": one, "readme": one, "repeats": one,
                "exports": {**group, "description": f"name in the variant's exports folder -> {kind}"},
                "thresholds": {**group, "description": f"threshold -> the CSV's {kind}"}}}}


TASK_ID_PARAM = {"name": "task_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": TASK_ID_PATTERN}, "description": "the id POST /api/tasks gave"}


def description(base_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``base_url`` becomes its server."""
    task_ref = {"parameters": [TASK_ID_PARAM]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "trapbatch", "version": "1",
                 "description": "MegaDetector batch detection over a blob container. Every route needs a function key "
                                "(x-functions-key header). Errors are {error, hint}."},
        "servers": [{"url": base_url}] if base_url else [],
        "security": [{"functionKey": []}],
        "paths": {
            "/api/tasks": {
                "post": {"operationId": "submitTask", "summary": "start (or find) a task",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/TaskRequest"}}}},
                         "responses": {"202": _answer("started", "TaskStarted"),
                                       "200": _answer("the same request's task already runs or completed",
                                                      "TaskStarted"),
                                       **_errors(400, 401, 403, 404, 409, 413, 415, 429, also={
                                           409: "a re-run (rerun, only_new) of a task that still runs"})}},
                "get": {"operationId": "listTasks", "summary": "tasks, newest first",
                        "parameters": [{"name": "limit", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 1, "default": TASK_LIST_LIMIT}}],
                        "responses": {"200": _answer("tasks", "TaskList"), **_errors(400, 401)}},
            },
            "/api/tasks/{task_id}": {**task_ref, "get": {
                "operationId": "getTask", "summary": "stage, counts, progress, ETA, estimate, cost",
                "responses": {"200": _answer("the task's status", "TaskStatus"), **_errors(401, 403, 404)}},
                "delete": {
                    "operationId": "deleteTask", "summary": "delete the task and everything trapbatch stored for it "
                                                           "(results, exports, zips, preview pages, working state, "
                                                           "its task hub records); its images and dropped request "
                                                           "files stay (api/task_delete.py)",
                    "responses": {"200": _answer("deleted: the task is unknown from now on, and its request starts a "
                                                 "fresh task", "TaskDeleted"),
                                  "202": _answer("not done within one request (a very large task): what went stays "
                                                 "gone; send the same DELETE again to go on", "TaskDeleted"),
                                  **_errors(401, 403, 404, 409, also={
                                      409: "or an orchestration of the task still runs (its run, a repeat removal or "
                                           "search, a preview re-render, a zip build, a terminated run's shard "
                                           "groups): the error names them, the hint says what to end first"})}}},
            "/api/tasks/{task_id}/results": {**task_ref, "get": {
                "operationId": "getResults", "summary": "where the results and previews are",
                "parameters": [{"name": "zip", "in": "query", "required": False, "schema": {"enum": ["rebuild"]},
                                "description": "rebuild: build the results zip again after its last build failed "
                                               "(zip.state 'failed'); a failed build is not retried otherwise "
                                               "until its files change"}],
                "responses": {"200": _answer("blob names and addresses", "Results"),
                              **_errors(400, 401, 403, 404, 409)}}},
            "/api/tasks/{task_id}/cancel": {**task_ref, "post": {
                "operationId": "cancelTask", "summary": "stop the task's pool work at the next poll",
                "responses": {"202": _answer("cancel requested", "CancelRequested"),
                              **_errors(401, 403, 404, 409, also={
                                  409: "or the run it found running was terminated (or failed) and replaced by a "
                                       "later run of the task while the cancel was made: nothing was cancelled, no "
                                       "event sent; the error names the new run and the hint says to cancel again "
                                       "to stop it (api/cancel_marker.py); or a later run replaced it after the "
                                       "marker was written: that run was not cancelled (the error names it; cancel "
                                       "again); or another writer changed the run's cancel marker at each of its "
                                       "tries: retry"})}}},
            "/api/tasks/{task_id}/terminate": {**task_ref, "post": {
                "operationId": "terminateTask", "summary": "end the task's run now, whatever it is doing (a stalled "
                                                           "one too); its pool work runs on until the same request "
                                                           "is posted again, which ends it and resumes the task. "
                                                           "With target removal or search: the task's repeat "
                                                           "removal or repeat search run again instead; previews "
                                                           "or zip: its preview re-render or results zip build",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/TerminateRequest"}}}},
                "responses": {"202": _answer("terminate sent (the stage becomes 'terminated' once the platform has "
                                             "processed it)", "TerminateAnswer"),
                              **_errors(400, 401, 403, 404, 409, 413, 415, also={
                                  409: "the task is not running (a terminated or failed one resumes when its "
                                       "request is posted again), or it ended by itself just before the "
                                       "terminate, or a later run replaced the run it found meanwhile (the error "
                                       "names both; the terminate ended the later one if it had started); with "
                                       "another target: none is running, it ended by itself just before the "
                                       "terminate, or another replaced it meanwhile (likewise)"})}}},
            "/api/tasks/{task_id}/previews": {**task_ref, "delete": {
                "operationId": "deletePreviews", "summary": "take the task's preview pages off the public website",
                "responses": {"200": _answer("deleted", "PreviewsDeleted"),
                              **_errors(401, 403, 404, 409, also={404: "or the task has no preview pages (deleted "
                                                                       "already, or never published)"})}},
                "post": {"operationId": "rerenderPreviews", "summary": "re-render the preview pages, their counts "
                         "and a CSV at another threshold (the results are unchanged)",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/RerenderRequest"}}}},
                         "responses": {"202": _answer("re-render started", "RerenderStarted"),
                                       **_errors(400, 401, 403, 404, 409, 413, 415)}}},
            "/api/tasks/{task_id}/confirm": {**task_ref, "post": {
                "operationId": "confirmTask", "summary": "say yes to a task awaiting confirmation (its shards go to "
                                                         "the pool)",
                "responses": {"202": _answer("confirmed", "Confirmed"), **_errors(401, 403, 404, 409, also={
                    409: "or a later run of the task replaced the run awaiting confirmation while it was confirmed: "
                         "that run was not confirmed (the error names it; confirm it once it awaits confirmation)"})}}},
            "/api/tasks/{task_id}/repeats": {**task_ref, "get": {
                "operationId": "getRepeats", "summary": "repeated detections and the state of their removal",
                "responses": {"200": _answer("places", "Repeats"),
                              **_errors(401, 403, 404, 409, also={404: "or the task has no repeated-detection list "
                                                                       "(its search failed)"})}},
                "post": {"operationId": "removeRepeats", "summary": "remove chosen repeated detections",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/RepeatChoice"}}}},
                         "responses": {"202": _answer("removal started", "RemovalStarted"),
                                       **_errors(400, 401, 403, 404, 409, 413, 415, also={
                                           404: "or the task has no repeated-detection list (its search failed)",
                                           409: "or a search or removal is still running, or the ids are of a list "
                                                "a search has replaced"})}}},
            "/api/tasks/{task_id}/repeats/search": {**task_ref, "post": {
                "operationId": "searchRepeats", "summary": "search for repeated detections again with other options; "
                                                           "the new list replaces the current one",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/RepeatSearch"}}}},
                "responses": {"202": _answer("search started", "SearchStarted"),
                              **_errors(400, 401, 403, 404, 409, 413, 415)}}},
        },
        "components": {
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
            "schemas": {
                "TaskRequest": request_schema(),
                "Error": _error(),
                "TaskStarted": {"type": "object", "required": ["id", "started", "status_url"], "properties": {
                    "id": {"type": "string", "pattern": TASK_ID_PATTERN}, "started": {"type": "boolean"},
                    "status_url": {"type": "string"}, "results_url": {"type": "string"},
                    "cancel_url": {"type": "string"}, "stage": {"enum": [*Stage]}, "hint": {"type": "string"},
                    "not_applied": {"type": "array", "items": {"type": "string"}, "description": "the request's "
                                    "settings that differ from those of the task it found, which were not applied "
                                    "(a run posted with rerun takes them)"}}},
                "TaskList": {"type": "object", "required": ["tasks", "total"], "properties": {
                    "total": {"type": "integer", "minimum": 0},
                    "tasks": {"type": "array", "items": {"type": "object", "required": ["id", "stage"], "properties": {
                        "id": {"type": "string", "pattern": TASK_ID_PATTERN}, "stage": {"enum": [*Stage]},
                        "runtime_status": {"type": ["string", "null"], "description": "the orchestration's "
                                           "Durable runtime status (Running, Completed, Failed, Terminated...)"},
                        "images": {"type": ["integer", "null"]}, "created": {"type": ["string", "null"]},
                        "request_name": {"type": "string", "description": "the request's label (empty: none)"},
                        "status_url": {"type": "string"}, "owner": {"type": "string"},
                        **_liveness("; for a task detecting, whose shard groups are what moves, only once its own "
                                    "orchestration has not changed for longer than the stage's bound, when the list "
                                    "reads its groups' updates (the newest first, a few such tasks at most): "
                                    "absent otherwise, as such a task cannot be stalled"),
                        "note": {"type": "string", "description": "a task detecting, quiet by its own update, whose "
                                 "shard groups the list did not read (past the few it reads, out of time, the task "
                                 "hub busy): whether it stalled was not judged; GET /api/tasks/{id} says. Absent "
                                 "otherwise"}}}}}},
                "TaskStatus": {"type": "object", "required": ["id", "runtime_status", "stage"], "properties": {
                    "id": {"type": "string", "pattern": TASK_ID_PATTERN}, "runtime_status": {"type": "string"},
                    "stage": {"enum": [*Stage]}, "images": {"type": "integer"}, "images_done": {"type": "integer"},
                    "progress": {"type": "number"}, "images_per_second": {"type": "number"},
                    "eta_seconds": {"type": ["integer", "null"]}, "error": {"type": "string"},
                    **_task_status_fields(),
                    **_liveness("; while detecting, the newest of it and its shard groups' (the task waits on "
                                "them)"),
                    "waiting": {"type": "object", "description": "a step of the task (or of one of its shard groups) "
                                "waiting out a busy storage account or Batch service (or a pool job disabled outside "
                                "trapbatch) before it is tried again "
                                "(TRAPBATCH_BUSY_RETRY_ATTEMPTS): the step, the service's words, when it is tried "
                                "again, and, while the step retries, the attempt that comes next of how many; a shard "
                                "group whose pool steps stayed busy through their retries (an outage it waits out "
                                "while its shards run on) adds since when, and when it gives up and fails the task. "
                                "Absent: nothing waits",
                                "required": ["step", "reason", "at"], "properties": {
                                    "step": {"type": "string"}, "reason": {"type": "string"},
                                    "attempt": {"type": "integer", "minimum": 2}, "of": {"type": "integer"},
                                    "at": {"type": "string", "format": "date-time"},
                                    "since": {"type": "string", "format": "date-time"},
                                    "until": {"type": "string", "format": "date-time"}}},
                    "unreachable": {"type": "object", "description": "shards whose workers exited 69 (storage, "
                                    "the Key Vault, a model's download host or the node's identity endpoint did not "
                                    "answer) and wait to be tried again, spending no attempt: how many, the worker's "
                                    "words for the earliest such exit, since when, until when exits 69 spend no "
                                    "attempt (then they count and a shard is given up after its attempts), the "
                                    "next try, and what to check. Absent: none waits so",
                                    "required": ["shards", "reason", "since", "until", "check"], "properties": {
                                        "shards": {"type": "integer", "minimum": 1, "description": "shards "
                                                   "whose last attempt exited 69 and whose next one is not running "
                                                   "yet: those waiting out its back-off (shards_waiting) and those "
                                                   "whose next attempt is back in the pool's queue (counted in "
                                                   "shards_queued too), so not a fourth share beside them"},
                                        "reason": {"type": "string"}, "check": {"type": "string"},
                                        "since": {"type": "string", "format": "date-time"},
                                        "until": {"type": "string", "format": "date-time"},
                                        "at": {"type": "string", "format": "date-time"}}},
                    "shards_waiting": {"type": "integer", "minimum": 0, "description": "shards in no pool task, "
                                       "waiting out a worker exit 69's back-off (see unreachable); shards_done, "
                                       "shards_running, shards_queued and it add up to the submitted shards"},
                    "groups_unknown": {"type": "integer", "minimum": 1, "description": "shard groups that show no "
                                       "counts yet (starting: a group's status is stored after its first step), so "
                                       "their shards and images are in none of the counts (not done, not missing). "
                                       "Groups that ended are not among them (groups_ended_without_counts). Absent: "
                                       "every group shows its counts or has ended"},
                    "groups_ended_without_counts": {
                        "type": "integer", "minimum": 1, "description": "shard groups that ended (their instance "
                        "failed, was terminated, completed or was canceled) before any status of theirs was stored: "
                        "not starting, and never showing counts, so their shards and images are in none of the counts "
                        "(not done, not missing) and will not be. Absent: none"},
                    "shards_given_up": {"type": "object", "description": "shards given up after every attempt "
                                        "(their images are failures with reason not_processed): how many, the first "
                                        "few with how their last attempt ended (the worker's exit code and words, or "
                                        "the pool's, e.g. TaskEnded at the time limit) and what to do. Absent: none",
                                        "properties": {"count": {"type": "integer", "minimum": 1},
                                                       "examples": {"type": "array", "items": _given_up_shard()},
                                                       "hint": {"type": "string"}}},
                    "damaged": _damaged(),
                    "not_images": {"type": "object", "description": "files the listing found that are not images "
                                   "trapbatch runs (videos, other formats, sidecar and hidden files): how many, and "
                                   "the largest kinds (by extension); GET .../results lists every kind with "
                                   "examples. Absent: none", "required": ["files", "kinds"], "properties": {
                                       "files": {"type": "integer", "minimum": 1},
                                       "kinds": {"type": "object", "additionalProperties": {"type": "integer"}}}},
                    "notification": {"type": "object", "description": "a finished task whose request named a "
                                     "notify_url: whether the POST was taken (sent, the receiver's status_code) or "
                                     "why not (reason)", "properties": {
                                         "sent": {"type": "boolean"}, "status_code": {"type": "integer"},
                                         "reason": {"type": "string"}}},
                    "results": _results_ref(),
                    "drop_answer": {"type": "object", "description": "a dropped request's done file could not be "
                                    "written: which file, why and what to do (absent: written, or no dropped "
                                    "request)",
                                    "properties": {"written": {"type": "boolean"}, "file": {"type": "string"},
                                                   "reason": {"type": "string"}, "hint": {"type": "string"}}},
                    "joined_drops": {"type": "object", "description": "the done files beside the requests dropped "
                                     "while the task ran, which found it started by another request, could not all "
                                     "be written: why and what to do (absent: written, or none asked)",
                                     "properties": {"written": {"type": "boolean"}, "reason": {"type": "string"},
                                                    "hint": {"type": "string"}}},
                    "cut": {"type": "string", "description": "what of this status was shortened (the first few "
                            "examples kept, long texts cut) to fit the Durable extension's 16 KB custom status; "
                            "the orchestration's output holds it whole once it completes. Absent: nothing"},
                    "task_event": {"type": "object", "description": "a finished task, where the app publishes "
                                   "to an Event Grid topic: whether its event was taken or why not", "properties": {
                                       "sent": {"type": "boolean"}, "status_code": {"type": "integer"},
                                       "reason": {"type": "string"}}},
                    "served": {"type": "object", "description": "a re-run that has not completed: the generation "
                               "whose results the task still hands out (empty: the first run's)", "properties": {
                                   "generation": {"type": "string"}, "results_url": {"type": "string"},
                                   "hint": {"type": "string"}}},
                    "estimate": {"type": "object", "description": "core/estimate.py: the GPU-hours, wall time "
                                 "and cost of the images and shards, from the worker's rate, the pool's nodes and "
                                 "price, and a worker's start (cost null: no node price set)", "properties": {
                        "images": {"type": "integer"}, "shards": {"type": "integer"},
                        "images_per_shard": {"type": "integer"}, "gpu_hours": {"type": "number"},
                        "wall_seconds": {"type": "integer"}, "nodes_used": {"type": "integer"},
                        "cost": {"type": ["number", "null"]}, "worker_images_per_s": {"type": "number"},
                        "pool_nodes": {"type": "integer"}, "node_price_per_hour": {"type": "number"},
                        "shard_start_s": {"type": "number"}, "warm_shard_start_s": {"type": ["number", "null"]},
                        "assumes": {"type": "string"}}},
                    "cost": {"type": "object", "description": "a finished task: what its pool work cost "
                             "(core/cost.py). node_seconds is the wall time of every shard attempt's pool task, so "
                             "the figures are a lower bound of the bill (node boot, idle nodes and a task's runs cut "
                             "short by Spot preemption are not in it); "
                             "the price is TRAPBATCH_NODE_PRICE_PER_HOUR, else the list price of the pool's VM size, "
                             "else null with a note", "properties": {
                                 "images": {"type": "integer"}, "node_seconds": {"type": "number"},
                                 "attempts": {"type": "integer"}, "attempts_timed": {"type": "integer"},
                                 "images_per_node_second": {"type": ["number", "null"]},
                                 "vm_size": {"type": ["string", "null"]},
                                 "price_per_hour": {"type": ["number", "null"]},
                                 "price_source": {"type": ["string", "null"]},
                                 "usd": {"type": ["number", "null"]},
                                 "usd_per_million_images": {"type": ["number", "null"]},
                                 "measures": {"type": "string"}, "note": {"type": "string"}}}}},
                "Results": {"type": "object", "required": ["id", "stage", "results", "previews"], "properties": {
                    "id": {"type": "string"}, "stage": {"enum": [*Stage]}, "previews": _results_previews(),
                    "generation": {"type": "string", "description": "the run id of the generation served (a "
                                   "re-run's, once promoted); empty for the task's first run"},
                    "rerun": {"type": "object", "description": "present while a re-run runs: these results are the "
                              "previous generation's", "properties": {"stage": {"enum": [*Stage]},
                                                                        "hint": {"type": "string"}}},
                    "links": _links(),
                    "replaced": _replaced(),
                    "source": {"type": "object", "description": "where the task's images are: their container, and "
                               "the storage account the request named (empty: the app's own)", "properties": {
                                   "container": {"type": "string"}, "account_url": {"type": "string"}}},
                    "zip": {"type": "object", "required": ["state"], "properties": {
                        "state": {"enum": ["not_needed", "building", "ready", "failed"]},
                        "blob": {"type": "string", "description": "ready: the zip's blob, one name per build "
                                 "(results/<task>/download/<task>-results-<build>.zip; saved as "
                                 "<task>-results.zip), so links.zip serves this build's zip whatever a later build "
                                 "writes"},
                        "bytes": {"type": "integer"}, "files": {"type": "integer"},
                        "files_bytes": {"type": "integer"}, "above_bytes": {"type": "integer"},
                        "error": {"type": "string", "description": "failed: why the last build failed"},
                        "hint": {"type": "string"}, **_repeat_liveness("zip")}},
                    "results": {"type": "object", "required": ["container", "blob"], "properties": {
                        "container": {"type": "string"}, "blob": {"type": "string"}, "csv": {"type": "string"},
                        "url": {"type": "string"},
                        "exports": {"type": "object", "description": "per results variant (original, "
                                    "repeats-removed), its exports: name in the variant's exports folder -> blob",
                                    "additionalProperties": {"type": "object",
                                                             "additionalProperties": {"type": "string"}}},
                        "thresholds": {"type": "object", "description": "per results variant, the CSVs at other "
                                       "thresholds that POST .../previews wrote: threshold -> blob",
                                       "additionalProperties": {"type": "object",
                                                                "additionalProperties": {"type": "string"}}},
                        "files": {**_variant_files("blob"), "description": "per results variant (original, "
                                  "repeats-removed), "
                                  "its blob names: results, csv, exports, thresholds, damaged (damaged.csv: "
                                  "the photos cut short, when there were any; the same list under both variants, "
                                  "since removing repeated detections changes no photo), readme (README.txt, a "
                                  "variant's README.<variant>.txt: each file of the variant, what it holds and what "
                                  "opens it, and the task's facts; written when the results are published and again "
                                  "after a re-render, repeat search or removal) and, for the original, repeats "
                                  "(repeated-detections.json, when the search wrote one)"}}}}},
                "CancelRequested": {"type": "object", "required": ["id", "cancel_requested"], "properties": {
                    "id": {"type": "string"}, "cancel_requested": {"const": True}, "hint": {"type": "string"}}},
                "TerminateRequest": {"type": "object", "additionalProperties": False, "properties": {
                    "reason": {"type": "string", "maxLength": rq.MAX_TERMINATE_REASON_CHARS,
                               "description": "why, kept with the terminated run (the task hub stores it as the "
                                              "instance's output); a URL's query and anything like a credential "
                                              "is taken out"},
                    "target": {"enum": list(rq.TERMINATE_TARGETS), "default": "task",
                               "description": "what to end: the task's run (task), or its repeat removal (removal) "
                                              "or repeat search run again (search), which GET .../repeats shows, or "
                                              "its preview re-render (previews) or results zip build (zip), which "
                                              "GET .../results shows (previews.rerender, zip); each with its "
                                              "stalled"}}},
                # Two shapes, told apart by target: the task's run's (as before targets: run required, so a client
                # generated from the earlier description keeps reading it) and a run after the task's (no run)
                "TerminateAnswer": {"oneOf": [{"$ref": "#/components/schemas/Terminated"},
                                              {"$ref": "#/components/schemas/RunAfterTaskTerminated"}]},
                "Terminated": {"type": "object", "required": ["id", "terminated", "run", "stage"], "properties": {
                    "id": {"type": "string"}, "terminated": {"const": True},
                    "target": {"const": "task", "description": "what was ended: the task's run"},
                    "run": {"type": "string", "description": "the run terminated (\"\" for one started before "
                                                             "runs had ids)"},
                    "stage": {"enum": [*Stage], "description": "the stage it was in"},
                    "status_url": {"type": "string", "description": "the task's status"},
                    "hint": {"type": "string"},
                    "drop_answers": {
                        "type": "object", "required": ["written"],
                        "description": "the done files the run's end would have written (incoming/<name>.done.json "
                                       "beside the dropped request that started it and those that joined it), "
                                       "written now, best effort: the terminate stands either way. Absent: it has "
                                       "none (started over HTTP, and no dropped request joined it)",
                        "properties": {
                            "written": {"type": "boolean"},
                            "stage": {"enum": [*Stage], "description": "the stage the files say: terminated, or the "
                                                                       "end a run telling of it had (a file already "
                                                                       "naming that end is kept)"},
                            "done_file": {"type": "string", "description": "the own drop's done file"},
                            "joined": {"type": "integer", "description": "how many other dropped requests got theirs "
                                                                         "(written false: by the answer's deadline, "
                                                                         "200 s; the others have none yet)"},
                            "reason": {"type": "string", "description": "written false: why"},
                            "hint": {"type": "string", "description": "written false: what to do"}}}}},
                "RunAfterTaskTerminated": {"type": "object", "required": ["id", "terminated", "target", "stage"],
                                           "properties": {
                    "id": {"type": "string"}, "terminated": {"const": True},
                    "target": {"enum": [t for t in rq.TERMINATE_TARGETS if t != "task"],
                               "description": "what was ended"},
                    "stage": {"enum": [*Stage], "description": "the stage it was in (starting for a zip build, which "
                                                               "names none)"},
                    "status_url": {"type": "string", "description": "where its state shows: GET .../repeats "
                                                                    "(removal, search) or GET .../results (previews, "
                                                                    "zip), which show the served results' runs only "
                                                                    "(one of results a re-run has replaced since is "
                                                                    "not shown there: the hint says so)"},
                    "hint": {"type": "string"}}},
                "TaskDeleted": {"type": "object", "required": ["id", "deleted", "blobs"], "properties": {
                    "id": {"type": "string"},
                    "deleted": {"type": "boolean", "description": "true: nothing of the task is left but its "
                                                                  "deletion mark (README, 'Deleting a task'); false "
                                                                  "(202): send the DELETE again"},
                    "blobs": {"type": "object", "required": ["state", "web"], "description": "blobs this request "
                              "deleted", "properties": {
                                  "state": {"type": "integer", "minimum": 0, "description": "in the state container "
                                            "(tasks/<task>/, results/<task>/)"},
                                  "web": {"type": "integer", "minimum": 0, "description": "preview folders on the "
                                          "static website"}}},
                    "instances": {"type": "integer", "minimum": 0, "description": "task hub instances purged (the "
                                  "task's, its shard groups' and its helpers'; 200 only)"},
                    "hint": {"type": "string"}}},
                "PreviewsDeleted": {"type": "object", "required": ["id", "deleted"], "properties": {
                    "id": {"type": "string"}, "deleted": {"type": "integer", "minimum": 0},
                    "hint": {"type": "string"}}},
                "Confirmed": {"type": "object", "required": ["id", "confirmed"], "properties": {
                    "id": {"type": "string"}, "confirmed": {"const": True}, "status_url": {"type": "string"},
                    "hint": {"type": "string"}}},
                "Repeats": {"type": "object", "required": ["id", "locations", "search"], "properties": {
                    "id": {"type": "string"}, "locations": {"type": "array", "items": _place()},
                    "options": repeat_options(),
                    "search": {"type": "string", "description": "the list's id: send it with a removal"},
                    "searched": {"type": ["string", "null"]}, "search_options": _search_options(),
                    "blob": {"type": "string"},
                    "removal": _removal(), "searching": _searching(),
                    "skipped_folders": _skipped_folders()}},
                "RepeatChoice": {"type": "object", "additionalProperties": False, "properties": {
                    "keep": {"type": "array", "items": {"type": "string"}},
                    "remove": {"oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}]},
                    "search": {"type": ["string", "null"], "minLength": 1, "maxLength": 100,
                               "description": "the 'search' of the list the ids come from (GET .../repeats shows it); "
                                              "left out: the merge's own list. Another list answers 409"}},
                    "oneOf": [{"required": ["keep"], "not": {"required": ["remove"]}},
                              {"required": ["remove"], "not": {"required": ["keep"]}}]},
                "RepeatSearch": repeat_search_schema(),
                "SearchStarted": {"type": "object", "required": ["id", "search", "options"], "properties": {
                    "id": {"type": "string"}, "search": {"type": "string"}, "options": _search_options(),
                    "status_url": {"type": "string"}, "hint": {"type": "string"}}},
                "RerenderRequest": {"type": "object", "additionalProperties": False, "required": ["threshold"],
                                    "properties": {"threshold": {
                                        "type": "number", "minimum": rq.MIN_PREVIEW_THRESHOLD, "maximum": 1,
                                        "description": "confidence from which a detection counts in the page, its "
                                                       "counts and the new CSV"}}},
                "RerenderStarted": {"type": "object", "required": ["id", "threshold"], "properties": {
                    "id": {"type": "string"}, "threshold": {"type": "number"}, "status_url": {"type": "string"},
                    "csv": {"type": "object", "description": "per results variant, the CSV at this threshold (blob)",
                            "additionalProperties": {"type": "string"}}, "hint": {"type": "string"}}},
                "RemovalStarted": {"type": "object", "required": ["id", "removing"], "properties": {
                    "id": {"type": "string"}, "removing": {"type": "array", "items": {"type": "string"}},
                    "status_url": {"type": "string"}, "hint": {"type": "string"}}},
            },
        },
    }


request_schema()  # at import: a request field without a schema fails here, before any route is served
repeat_search_schema()
repeat_options()


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_edge
async def openapi_json(req: func.HttpRequest) -> func.HttpResponse:
    url = str(req.url)
    marker = url.find("/api/")
    return json_response(200, description(url[:marker] if marker >= 0 else ""))
