"""The task request: the one untrusted input (HTTP body or a ``*.json`` dropped into ``incoming``).

Validation happens here, once, at the edge; everything downstream receives a normalized ``TaskRequest``. Every error
names the field and says how to fix it, because the person reading it is usually an ecologist with a JSON file.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from datetime import datetime
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from core.errors import RequestInvalid, RequestTooLarge, UnsupportedContentType, without_secrets
from core.ids import task_instance_id
from core.notify import ADDRESS_CHARS, host_name_problem, secret_path_receiver, secret_query_params
from core.repeats import DEFAULT_MAX_FOLDER_DETECTIONS, MAX_FOLDER_DETECTIONS, RepeatOptions
from core.shards import has_dot_segment
from core.status_size import shorten
from gpu_batch.formats import camtrapdp, listfields
from gpu_batch.manifest import DEFAULT_DETECTION_THRESHOLD

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
ALLOWED_FIELDS = ("container", "prefix", "first_n", "sample_n", "seed", "model", "request_name", "caller",
                  "images_per_shard", "source_account_url", "credential_secret", "max_failed_fraction",
                  "preview_threshold", "dry_run", "notify_url", "previews_expire_days", "image_list", "rerun",
                  "only_new", "utc_offset", "event_interval_s", "clock_corrections", "zooniverse_visit_frames",
                  "camera_depth", "notify_url_secret")
# Fields added after tasks were stored: written by ``to_dict`` only when set, so a request without one keeps the
# stored form (tasks/<id>/request.json, the orchestration's input) it always had.
LATER_FIELDS = ("camera_depth", "notify_url_secret")
# Fields the edge sets, never the body: the image list's content hash (api/starters.py reads the list). They travel
# with the request (to_dict / from_dict) so the enumeration can check it reads the list the id was made from.
EDGE_FIELDS = ("image_list_sha256",)
# Fields that define *what* is computed; request_name and caller are labels and do not change the task id.
IDENTITY_FIELDS = ("container", "prefix", "first_n", "sample_n", "seed", "model", "images_per_shard")
# Identity fields added later: part of the id only when set, so earlier requests keep their task ids.
# dry_run is one: an estimate is a task of its own, whose id never collides with the real run's.
# image_list and its content hash are one: the same list blob with other rows is another task.
OPTIONAL_IDENTITY_FIELDS = ("source_account_url", "credential_secret", "dry_run", "image_list", "image_list_sha256")
_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")  # Key Vault secret names
MAX_IMAGES_PER_SHARD = 100_000
MAX_IMAGES = 1_000_000_000  # first_n / sample_n: far above any camera-trap collection, far below overflow
MAX_SEED = 2**32 - 1
MAX_PREVIEWS_EXPIRE_DAYS = 365  # previews_expire_days: a year; a longer-lived public page should be deleted by hand
MAX_BODY_BYTES = 64 * 1024  # a task request is a few hundred bytes, a long clock_corrections some tens of KB; the
# request travels in the task's and every listing part's inputs, so it stays small (README, clock_corrections)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Each shard is one worker process on a GPU node, and each pays about 10 s before its first result (interpreter and
# torch imports ~7 s, model ~1 s, first batch ~2 s; H100, bench/RESULTS.md). At ~250 img/s a 1,000-image shard would
# spend 70 % of its time starting; 10,000 images keep that near 20 %. A failed shard loses little either way: the
# worker flushes every few seconds and a resubmitted attempt skips what is done.
DEFAULT_IMAGES_PER_SHARD = 10_000


@dataclass(frozen=True, slots=True)
class TaskRequest:
    container: str
    prefix: str = ""
    first_n: int | None = None
    sample_n: int | None = None
    seed: int | None = None
    model: str = ""
    request_name: str = ""
    caller: str = ""
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD
    source_account_url: str = ""  # images in another storage account (gpu_batch.storage_refs)
    credential_secret: str = ""  # name of the Key Vault secret for that account; never the secret itself
    # The share of images that may fail (unreadable, or still failing after every attempt) for the task to end
    # "completed" rather than "completed_with_errors"; None: the app's TRAPBATCH_MAX_FAILED_FRACTION. Not part of the
    # task id: it judges the outcome, it does not change the work.
    max_failed_fraction: float | None = None
    # The confidence from which a detection counts in the preview page, the CSV and the exports; None: the app's
    # TRAPBATCH_PREVIEW_THRESHOLD, else the model's typical threshold (Settings.threshold_for). Not part of the task
    # id: the detections (every one down to TRAPBATCH_DETECTION_THRESHOLD) are the same at any threshold.
    preview_threshold: float | None = None


    # Enumerate and estimate only (core/estimate.py): the task ends in stage "estimated" and submits nothing.
    dry_run: bool = False
    # Where to POST one signed JSON notification when the task ends (core/notify.py); hosts must be in the app's
    # TRAPBATCH_NOTIFY_HOSTS. Not part of the task id: it says whom to tell, not what to compute.
    notify_url: str = ""
    # The *name* of a secret in the app's secret store (the one TRAPBATCH_NOTIFY_SECRET is read from) whose value is
    # the address to tell, for an address that carries a secret (a Logic Apps trigger's sig=, a chat webhook's
    # path): read only when the notification is sent (activities/notify.py), so the address is never in the request,
    # the orchestration's history or the status. Instead of notify_url; not part of the task id either.
    notify_url_secret: str = ""
    # Days after the task ends that its preview folder comes off the public website (a durable timer, see
    # orchestrations/expiry.py); None: the pages stay until DELETE /api/tasks/{id}/previews. Not part of the task id:
    # it says how long to publish, not what to compute.
    previews_expire_days: int | None = None
    # A blob in ``container`` listing exactly the images to run (core/imagelist.py); paths relative to ``prefix``.
    image_list: str = ""
    image_list_sha256: str = ""  # set by the edge from the list's bytes (EDGE_FIELDS), part of the task id
    # Verbs, not part of the task id (``identity``): run a task that already finished again, as a new generation with
    # its own state and results (``orchestrations.task``); ``only_new`` (a re-run too) reuses the served generation's
    # results of the images whose name and ETag are unchanged and runs only the others (``activities.reuse``).
    rerun: bool = False
    only_new: bool = False
    # The cameras' offset from UTC (``+02:00``): Camtrap DP wants each capture time with a zone and EXIF gives a
    # camera's clock without one (gpu_batch.formats.camtrapdp); "": taken as UTC, as the package says. Not part of
    # the task id: it says how to write the times, not what to detect.
    utc_offset: str = ""
    # Seconds between two photos of a camera past which they are two events in the Camtrap DP export's event-level
    # observations (core.camtrap_events); None: the app's TRAPBATCH_EVENT_INTERVAL_S. Not part of the task id either.
    event_interval_s: float | None = None
    # Camera folder -> seconds to add to that camera's clock (its images' and every camera's below it; the longest
    # folder that holds an image decides), for cameras whose clock was wrong: Camtrap DP's timestamps, deployment
    # spans and events use the corrected times (gpu_batch.formats.camtrapdp). None: none. Not part of the task id.
    clock_corrections: dict[str, int] | None = None
    # Zooniverse subjects made of visits (photos grouped by time as the exports' events, ``event_interval_s``), at
    # most this many frames a subject in capture-time order (a longer visit is several subjects), as volunteers
    # classify a capture rather than a frame (core.captures); None: a subject per image. An image list's own
    # captures (capture_id, or season/site/roll/capture) win. Not part of the task id: it says how to export.
    zooniverse_visit_frames: int | None = None
    # Which folders of an image are its camera, for every export that groups by camera (deployments, events, visits,
    # camera-days, COCO's location): its first ``camera_depth`` folders below ``prefix``
    # (gpu_batch.formats.camtrapdp.CameraRule), for collections kept as camera/day/IMG.jpg, where each day folder
    # would be a camera; None: MegaDetector's rule (the image's folder less overflow folders). Not part of the task
    # id: it says how to group the results, not what to detect.
    camera_depth: int | None = None

    @property
    def task_id(self) -> str:
        return task_instance_id(self.identity())

    def task_id_for(self, owner: str = "") -> str:
        """The task id of this request started by the verified caller ``owner`` (api/callers.py): the owner is part
        of the id, so two callers posting the same request get two tasks. No owner: ``task_id``, as before."""
        return task_instance_id({**self.identity(), "owner": owner}) if owner else self.task_id

    def identity(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in IDENTITY_FIELDS},
                **{k: getattr(self, k) for k in OPTIONAL_IDENTITY_FIELDS if getattr(self, k)}}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*ALLOWED_FIELDS, *EDGE_FIELDS)
                if k not in LATER_FIELDS or getattr(self, k) not in (None, "")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskRequest":
        return cls(**{k: data[k] for k in (*ALLOWED_FIELDS, *EDGE_FIELDS) if k in data})


TASK_EXAMPLE = '{"container": "my-camera-traps"}'
RERENDER_EXAMPLE = '{"threshold": 0.35}'  # POST /api/tasks/{id}/previews
REMOVAL_EXAMPLE = '{"keep": ["r00002"]}'  # POST /api/tasks/{id}/repeats
SEARCH_EXAMPLE = '{"occurrence_threshold": 10}'  # POST /api/tasks/{id}/repeats/search
TERMINATE_EXAMPLE = '{"reason": "stalled since Monday"}'  # POST /api/tasks/{id}/terminate
# What fills a task request's body near MAX_BODY_BYTES is a long clock_corrections: say how to make it shorter
TASK_BODY_HINT = ("send only the fields of a task request; many clock_corrections fit as seconds (\"cam-3\": 3600) "
                  "rather than camera/actual times, and one folder corrects every camera folder below it")


def parse_json_body(raw: bytes, content_type: str | None = None, example: str = TASK_EXAMPLE,
                    too_large_hint: str = TASK_BODY_HINT) -> Any:
    """The JSON value of a request body, refused with a 4xx (never a 5xx) when it is not one a person would send.

    ``content_type`` None skips the media-type check (a dropped ``*.json`` blob has no header worth trusting).
    ``example`` is a body of the route's own (a re-render's ``{"threshold": 0.35}``), which the hints show: a task
    request's example told someone who sent a malformed threshold to send a container. ``too_large_hint`` says what
    to leave out when the body is over ``MAX_BODY_BYTES``."""
    hint = (f"send e.g. {example} with Content-Type: application/json" if content_type is not None
            else f"write a JSON object, e.g. {example}")
    if content_type is not None and not content_type.split(";")[0].strip():  # curl -d sets one; a bare client may not
        raise UnsupportedContentType("the request has no Content-Type: send Content-Type: application/json", hint)
    if content_type is not None and content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedContentType(f"the request body must be JSON, not {content_type!r}", hint)
    if len(raw) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"the request body has {len(raw)} bytes, more than the {MAX_BODY_BYTES} a request may "
                              "have", too_large_hint_for(_loads_or_none(raw), too_large_hint))
    try:
        return json.loads(raw)
    except UnicodeDecodeError:  # bytes: json.loads detects UTF-8/16/32; anything else is not text
        raise RequestInvalid("the request body is not UTF-8 text", hint) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        if "integer string conversion" in str(exc):  # Python's int-digits limit (sys.set_int_max_str_digits)
            raise RequestInvalid("the request body has a number of more than 4,300 digits",
                                 f"no field takes one that long; {hint}") from None
        raise RequestInvalid("the request body is not valid JSON", hint) from None


# An oversized body is still read to name its largest field, up to this size; beyond it the route's hint is given
# unread (parsing megabytes to phrase a refusal is work an anonymous sender could make the app do at will).
MAX_SIZED_BODY_BYTES = 16 * MAX_BODY_BYTES
SHOWN_NAME_CHARS = 80  # of a field name the 413's hint repeats


def _loads_or_none(raw: bytes) -> Any:
    if len(raw) > MAX_SIZED_BODY_BYTES:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError): the route's hint
        return None


def too_large_hint_for(body: Any, route_hint: str) -> str:
    """What to shrink in a body over ``MAX_BODY_BYTES``: the field that takes most of it, by name, unless the
    route's own hint already speaks of that field (a task request's long ``clock_corrections``). Why: every 413 of
    a task request talked about clock_corrections, also when a 100 KB ``request_name`` was what made it large."""
    if not isinstance(body, dict) or not body:
        return route_hint
    # measured with NaN/Infinity allowed: ``json.loads`` reads them from a body, and ``encoded_size``'s ValueError
    # made an oversized body's 413 a 500
    # a field's bytes are its name's and its value's, as the body has them
    try:
        sizes = {str(name): len(json.dumps([name, value]).encode("utf-8")) for name, value in body.items()}
    except RecursionError:  # a field nested as deep as json.loads allows, measured a level deeper: was a 500
        return route_hint
    name = max(sizes, key=lambda k: sizes[k])
    # named only when it is most of the body: of many small fields (20,000 unknown ones) the largest, a few bytes,
    # was told to be shortened, where the route's hint ("send only the fields of ...") says what to do
    # whether the route's hint speaks of it: among the hint's words, not a regex of the name, the sender's (a 900 KB
    # name cost 1.3 s to compile, and ``re`` caches 512 patterns: gigabytes held by distinct bodies)
    if 2 * sizes[name] < sum(sizes.values()) or name in re.findall(r"\w+", route_hint):
        return route_hint
    # the name cut short: it is the sender's, as long as the body (read up to MAX_SIZED_BODY_BYTES) lets it be
    return (f"{shorten(name, SHOWN_NAME_CHARS)!r} takes {sizes[name]} of its bytes: shorten it or leave it out (a "
            f"request is {MAX_BODY_BYTES} bytes at most)")


def encoded_size(body: Any) -> int:
    """The bytes ``body`` takes as a request body the way the CLI sends it (``requests``' ``json=``: ``json.dumps``
    with its defaults, UTF-8), to refuse one over ``MAX_BODY_BYTES`` before it is sent."""
    return len(json.dumps(body, allow_nan=False).encode("utf-8"))


def _opt_int(body: Mapping[str, Any], name: str, minimum: int, maximum: int = MAX_IMAGES) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestInvalid(f"'{name}' must be an integer, got {value!r}", f"e.g. \"{name}\": 100")
    if value < minimum:
        raise RequestInvalid(f"'{name}' must be at least {minimum}, got {value}", f"use a value >= {minimum}")
    if value > maximum:
        raise RequestInvalid(f"'{name}' must be at most {maximum}, got {value}", f"use a value <= {maximum}")
    return value


def _opt_str(body: Mapping[str, Any], name: str, max_len: int = 1024) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestInvalid(f"'{name}' must be a string, got {type(value).__name__}", f'e.g. "{name}": "..."')
    if len(value) > max_len:
        raise RequestInvalid(f"'{name}' is longer than {max_len} characters", "shorten it")
    if _CONTROL_RE.search(value):
        raise RequestInvalid(f"'{name}' contains control characters", "use printable text only")
    return value


def _source_account_url(body: Mapping[str, Any]) -> str:
    url = _opt_str(body, "source_account_url", 300).strip().rstrip("/")
    if not url:
        return ""
    parsed = urlsplit(url)
    if parsed.query or parsed.fragment or "sig=" in url.lower() or parsed.username or parsed.password:
        raise RequestInvalid("'source_account_url' must not carry a SAS token or other credentials",
                             "store the SAS token (or a connection string) as a Key Vault secret and give its name "
                             "as 'credential_secret'; requests are kept in plain tables")
    local = parsed.hostname in ("127.0.0.1", "localhost")
    if parsed.scheme != "https" and not (parsed.scheme == "http" and local):
        raise RequestInvalid(f"'source_account_url' {url!r} is not an https storage account URL",
                             'e.g. "https://partnerphotos.blob.core.windows.net" (http only for a local Azurite)')
    return url


DEFAULT_PORTS = {"https": 443, "http": 80}


def normalize_account_url(url: str) -> str:
    """``scheme://host[:port]/path`` with the host lower-cased, no default port and no trailing slash: how allow-list
    entries and requested accounts are compared (Azurite keeps the account name in the path)."""
    parts = urlsplit(url.strip())
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: compared as written (the account check refuses it anyway)
        port = None
    if port is not None and port == DEFAULT_PORTS.get(scheme) and parts.hostname:
        netloc = netloc.rsplit(":", 1)[0]
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def same_storage_account(url: str, other: str) -> bool:
    """Whether two blob endpoint URLs reach one storage account.

    Why more than comparing URLs: Azure answers for an account at several hosts (``<name>-secondary`` for read-access
    geo-redundancy, ``<name>.privatelink.blob...`` through a private endpoint, the DNS-zone form
    ``<name>.zNN.blob.storage.azure.net``), and an account's name is unique in its cloud; a blob host names the
    account in its first label. Other hosts (custom domains, the emulator's account in the path) compare as URLs."""
    def account(u: str) -> str:
        host = urlsplit(u.strip()).hostname or ""
        if ".blob." not in f"{host}.":
            return normalize_account_url(u)
        name = host.split(".", 1)[0]
        return name.removesuffix("-secondary")

    return account(url) == account(other)


def _opt_fraction(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RequestInvalid(f"'{name}' must be a number from 0 to 1, got {value!r}",
                             f'e.g. "{name}": 0.01 (up to 1 % of the images may fail)')
    return float(value)


# nothing below MegaDetector's output threshold (run_detector.DEFAULT_OUTPUT_CONFIDENCE_THRESHOLD) is in the results
MIN_PREVIEW_THRESHOLD = DEFAULT_DETECTION_THRESHOLD


def _opt_threshold(body: Mapping[str, Any], name: str, optional: bool = True) -> float | None:
    """A confidence threshold: a number from ``MIN_PREVIEW_THRESHOLD`` (nothing below it is in the results, so a
    lower one would promise detections that were never kept) to 1."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_PREVIEW_THRESHOLD <= value <= 1:
        raise RequestInvalid(f"'{name}' must be a number from {MIN_PREVIEW_THRESHOLD} to 1, got {value!r}",
                             f'e.g. "{name}": 0.2 (MegaDetector v5\'s typical threshold)'
                             + ("; leave it out for the model's own default" if optional else ""))
    return float(value)


# What a request whose notification address carries a secret does instead (core.notify.secret_query_params)
NOTIFY_SECRET_HINT = ("store the address as a secret in the app's Key Vault (docs/deploy.md, 'Signed notifications': "
                      "az keyvault secret set --vault-name $AZURE_APP_KEY_VAULT_NAME -n notify-url-<name> "
                      "--value '<address>') and give its name as 'notify_url_secret' (requests are kept in plain "
                      "tables)")


def _notify_url(body: Mapping[str, Any]) -> str:
    url = _opt_str(body, "notify_url", ADDRESS_CHARS).strip()
    if not url:
        return ""
    # before any message that repeats the address: a secret it carries must not reach the answer or the log
    secret = secret_query_params(url)
    if secret:
        raise RequestInvalid(f"'notify_url' carries what looks like a secret in its query ({', '.join(secret)}), "
                             "which would be kept in plain text with the task", NOTIFY_SECRET_HINT)
    receiver = secret_path_receiver(url)
    if receiver is not None:
        raise RequestInvalid(f"'notify_url' is {receiver}'s address, whose path is its secret (whoever reads it can "
                             "post to the channel), which would be kept in plain text with the task",
                             NOTIFY_SECRET_HINT)
    parsed = urlsplit(url)
    if parsed.username or parsed.password or parsed.fragment:
        raise RequestInvalid("'notify_url' must not carry credentials or a fragment",
                             "give a plain https address; the notification is signed with the app's secret")
    local = parsed.hostname in ("127.0.0.1", "localhost")
    if not parsed.hostname or (parsed.scheme != "https" and not (parsed.scheme == "http" and local)):
        raise RequestInvalid(f"'notify_url' {url!r} is not an https address",
                             'e.g. "https://hooks.example.org/trapbatch" (http only for localhost)')
    named = host_name_problem(url)
    if named is not None:
        raise RequestInvalid(f"'notify_url': {named}", "give the address of a host that can be reached")
    return url


def _notify_url_secret(body: Mapping[str, Any], notify_url: str) -> str:
    """``notify_url_secret``: a Key Vault secret's name (never the address: the message does not repeat the value,
    which may be one), and not with ``notify_url``."""
    name = _opt_str(body, "notify_url_secret", 127).strip()
    if name and not _SECRET_NAME_RE.match(name):
        raise RequestInvalid("'notify_url_secret' must be the *name* of a Key Vault secret (letters, digits, hyphens)",
                             "store the receiver's address as a secret in the app's Key Vault and give the secret's "
                             "name, never the address")
    if name and notify_url:
        raise RequestInvalid("'notify_url' and 'notify_url_secret' cannot both be set",
                             "give the address in 'notify_url' when it carries no secret, or the name of the Key Vault "
                             "secret holding it in 'notify_url_secret', not both")
    return name


def _opt_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestInvalid(f"'{name}' must be true or false, got {value!r}", f'e.g. "{name}": true')
    return value


def _did_you_mean(unknown: list[str], allowed: tuple[str, ...] | list[str]) -> str:
    """``"did you mean preview_threshold? "`` for the unknown fields close to an allowed one (a typo, ``threshold``
    for ``preview_threshold``, ``first-n`` for ``first_n``), else ``""``. Why: the hint listed 24 allowed fields,
    and which one a misspelt name meant was left to the reader."""
    meant = []
    for name in unknown[:5]:
        close = difflib.get_close_matches(name.lower().replace("-", "_"), allowed, n=1, cutoff=0.6)
        if close and close[0] not in meant:
            meant.append(close[0])
    return f"did you mean {' or '.join(meant)}? " if meant else ""


def parse_task_request(body: Any, default_model: str = "", default_images_per_shard: int = DEFAULT_IMAGES_PER_SHARD) -> TaskRequest:
    """Validate and normalize a request body; raise ``RequestInvalid`` naming the bad field."""
    if not isinstance(body, Mapping):
        raise RequestInvalid(
            "the task request must be a JSON object",
            'send e.g. {"container": "my-camera-traps", "prefix": "2024/site-a/"}',
        )
    unknown = sorted(set(body) - set(ALLOWED_FIELDS))
    if unknown:
        raise RequestInvalid(f"unknown field(s): {', '.join(unknown)}",
                             f"{_did_you_mean(unknown, ALLOWED_FIELDS)}allowed fields: {', '.join(ALLOWED_FIELDS)}")
    container = body.get("container")
    if container is not None and not isinstance(container, str):
        raise RequestInvalid(f"'container' must be a string, got {type(container).__name__}",
                             'name the blob container holding the images: {"container": "..."}')
    if not container:
        raise RequestInvalid("'container' is required", 'name the blob container holding the images: {"container": "..."}')
    if not _CONTAINER_RE.match(container):
        raise RequestInvalid(
            f"'container' {container!r} is not a valid blob container name",
            "use 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        )
    prefix = _opt_str(body, "prefix").lstrip("/")
    if has_dot_segment(prefix):
        raise RequestInvalid(f"'prefix' {prefix!r} has a '.' or '..' folder, which no readable blob name has (Azure's "
                             "clients resolve such folders before sending)",
                             'give the folder as it is named in the container, e.g. "2024/site-a/"')
    first_n = _opt_int(body, "first_n", 1)
    sample_n = _opt_int(body, "sample_n", 1)
    seed = _opt_int(body, "seed", 0, MAX_SEED)
    if first_n is not None and sample_n is not None:
        raise RequestInvalid("'first_n' and 'sample_n' cannot both be set", "choose the first N images or a random sample")
    if seed is not None and sample_n is None:
        raise RequestInvalid("'seed' only applies with 'sample_n'", "add 'sample_n' or drop 'seed'")
    if sample_n is not None and seed is None:
        seed = 0
    image_list = _image_list(body)
    if image_list and sample_n is not None:
        raise RequestInvalid("'sample_n' cannot be combined with 'image_list'",
                             "the list names exactly the images to run: shorten the list, or give 'first_n' to run "
                             "its first N rows")
    images_per_shard = _opt_int(body, "images_per_shard", 1, MAX_IMAGES_PER_SHARD)
    if images_per_shard is None:
        images_per_shard = default_images_per_shard
    model = _opt_str(body, "model").strip() or default_model
    source_account_url = _source_account_url(body)
    credential_secret = _opt_str(body, "credential_secret", 127).strip()
    if credential_secret and not _SECRET_NAME_RE.match(credential_secret):
        raise RequestInvalid("'credential_secret' must be the *name* of a Key Vault secret (letters, digits, hyphens)",
                             "store the SAS token or connection string in Key Vault and pass the secret's name")
    if credential_secret and not source_account_url:
        raise RequestInvalid("'credential_secret' needs 'source_account_url'",
                             "name the storage account the secret opens, or drop 'credential_secret'")
    notify_url = _notify_url(body)
    notify_url_secret = _notify_url_secret(body, notify_url)
    return TaskRequest(
        container=container,
        prefix=prefix,
        first_n=first_n,
        sample_n=sample_n,
        seed=seed,
        model=model,
        request_name=_opt_str(body, "request_name", 200),
        caller=_opt_str(body, "caller", 200),
        images_per_shard=images_per_shard,
        source_account_url=source_account_url,
        credential_secret=credential_secret,
        max_failed_fraction=_opt_fraction(body, "max_failed_fraction"),
        preview_threshold=_opt_threshold(body, "preview_threshold"),
        dry_run=_opt_bool(body, "dry_run"),
        notify_url=notify_url,
        notify_url_secret=notify_url_secret,
        previews_expire_days=_opt_int(body, "previews_expire_days", 1, MAX_PREVIEWS_EXPIRE_DAYS),
        image_list=image_list,
        rerun=_opt_bool(body, "rerun") or _only_new(body),
        only_new=_only_new(body),
        utc_offset=_utc_offset(body),
        event_interval_s=_event_interval(body),
        clock_corrections=_clock_corrections(body),
        zooniverse_visit_frames=_opt_int(body, "zooniverse_visit_frames", 1, MAX_VISIT_FRAMES),
        camera_depth=_camera_depth(body),
    )


MAX_CAMERA_DEPTH = camtrapdp.MAX_CAMERA_DEPTH


def _camera_depth(body: Mapping[str, Any]) -> int | None:
    """``camera_depth``: 1 to ``MAX_CAMERA_DEPTH`` folders below the prefix, None when absent."""
    value = body.get("camera_depth")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CAMERA_DEPTH:
        raise RequestInvalid(f"'camera_depth' must be a whole number of folders from 1 to {MAX_CAMERA_DEPTH}, got "
                             f"{value!r}", 'count the folders below the prefix that name a camera: "camera_depth": 1 '
                             'for camera-01/2024-06-01/IMG_1.JPG (each camera\'s day folders are one camera), 2 for '
                             'site-a/camera-01/...; leave it out for the image\'s own folder')
    return value


UTC_OFFSET_PATTERN = listfields.UTC_OFFSET_PATTERN  # api/openapi.py states it (its test feeds both the same bodies)


def _utc_offset(body: Mapping[str, Any]) -> str:
    """``utc_offset`` as ``+HH:MM`` (``Z`` is ``+00:00``), or "" when absent."""
    raw = body.get("utc_offset")
    if raw is None or raw == "":
        return ""
    offset = listfields.utc_offset(raw) if isinstance(raw, str) else None
    if offset is None:
        raise RequestInvalid(f"'utc_offset' {raw!r} is not an offset from UTC in use",
                             'give the offset from UTC of the cameras\' clocks as "+HH:MM" or "-HH:MM" (UTC-12:00 to '
                             'UTC+14:00), e.g. "+02:00" for central Europe in summer or "-05:00" for US Eastern '
                             'standard time')
    return offset


MAX_VISIT_FRAMES = 20  # frames in one Zooniverse subject made of a visit (a flipbook volunteers step through)
MAX_EVENT_INTERVAL_S = 86_400  # a day: past it, a camera's visits would merge into its whole deployment


def _event_interval(body: Mapping[str, Any]) -> float | None:
    """``event_interval_s``: seconds from 0 to ``MAX_EVENT_INTERVAL_S``, None when absent."""
    value = body.get("event_interval_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_EVENT_INTERVAL_S:
        raise RequestInvalid(f"'event_interval_s' must be a number of seconds from 0 to {MAX_EVENT_INTERVAL_S}, got "
                             f"{value!r}", 'e.g. "event_interval_s": 60 for bursts (MegaDetector\'s sequences) or '
                             '1800 for the 30-minute independence interval many occupancy studies use')
    return float(value)


MAX_CLOCK_CORRECTIONS = 1000  # camera folders one request may correct
MAX_CLOCK_SHIFT_S = 100 * 366 * 86_400  # a century: a clock that reads 1970 on a 2060 survey still fits
CLOCK_TIME_PATTERN = r"^\d{4}[-:]\d{2}[-:]\d{2}[ T]\d{2}:\d{2}:\d{2}$"  # EXIF's or ISO's form, no zone
_CLOCK_HINT = ('give each camera folder the seconds to add to its clock, or the time a photo shows and the true '
               'time it was taken, e.g. {"site-a/cam-3": 3600} or {"site-a/cam-3": {"camera": "2000:01:01 00:12:00", '
               '"actual": "2024-06-01 06:30:00"}}')


def _clock_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not re.match(CLOCK_TIME_PATTERN, value):
        return None
    try:
        return datetime.strptime(value[:10].replace(":", "-") + " " + value[11:], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _clock_corrections(body: Mapping[str, Any]) -> dict[str, int] | None:
    """``clock_corrections`` as camera folder (no trailing '/') -> whole seconds to add; None when absent."""
    raw = body.get("clock_corrections")
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or len(raw) > MAX_CLOCK_CORRECTIONS:
        raise RequestInvalid(f"'clock_corrections' must be an object of at most {MAX_CLOCK_CORRECTIONS} camera "
                             "folders", _CLOCK_HINT)
    out: dict[str, int] = {}
    for folder, value in raw.items():
        name = folder.strip("/") if isinstance(folder, str) else ""
        if not name or len(folder) > 1024 or _CONTROL_RE.search(folder):
            raise RequestInvalid(f"'clock_corrections' has a camera folder {folder!r} that is not a folder name",
                                 _CLOCK_HINT)
        if isinstance(value, Mapping) and set(value) == {"camera", "actual"}:
            shown, actual = _clock_time(value["camera"]), _clock_time(value["actual"])
            if shown is None or actual is None:
                raise RequestInvalid(f"'clock_corrections' of {folder!r}: 'camera' and 'actual' must be times as "
                                     "\"YYYY:MM:DD HH:MM:SS\" (EXIF's) or \"YYYY-MM-DD HH:MM:SS\"", _CLOCK_HINT)
            shift = (actual - shown).total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            shift = float(value)
        else:
            raise RequestInvalid(f"'clock_corrections' of {folder!r} must be seconds or {{\"camera\": ..., "
                                 f"\"actual\": ...}}, got {value!r}", _CLOCK_HINT)
        if not -MAX_CLOCK_SHIFT_S <= shift <= MAX_CLOCK_SHIFT_S or shift != int(shift):
            raise RequestInvalid(f"'clock_corrections' of {folder!r} must be whole seconds within a century, got "
                                 f"{shift:g}", _CLOCK_HINT)
        if name in out:
            raise RequestInvalid(f"'clock_corrections' names camera folder {name!r} twice", _CLOCK_HINT)
        out[name] = int(shift)
    return out or None


RERENDER_FIELDS = ("threshold",)


def parse_rerender(body: Any) -> float:
    """The threshold of ``POST /api/tasks/{id}/previews``: ``{"threshold": t}``, ``t`` as ``preview_threshold``."""
    example = 'send e.g. {"threshold": 0.35}'
    if not isinstance(body, Mapping):
        raise RequestInvalid("the request body must be a JSON object", example)
    unknown = sorted(set(body) - set(RERENDER_FIELDS))
    if unknown:
        raise RequestInvalid(f"unknown field(s): {', '.join(unknown)}", f"allowed fields: {', '.join(RERENDER_FIELDS)}")
    threshold = _opt_threshold(body, "threshold", optional=False)
    if threshold is None:
        raise RequestInvalid("'threshold' is required", example)
    return threshold


TERMINATE_FIELDS = ("reason", "target")
# What POST /api/tasks/{id}/terminate ends (its "target"): the task's run (the default), or a run after it
# (api.repeat_runs; core.stall.AFTER_TASK_RUNS): the repeat removal or the repeat search run again (GET .../repeats
# shows them), the preview re-render (POST .../previews) or the results zip build (GET .../results?zip=...), each an
# orchestration of its own that an action the Durable extension drops leaves running for ever as it does a task
TERMINATE_TARGETS = ("task", "removal", "search", "previews", "zip")
# The reason travels in the terminate's URL query (the SDK's ``terminate``: ``?reason=<quoted>``) and is stored as the
# terminated instance's output and in its history (dtfx ``ExecutionTerminatedEvent``), which every reader of the task
# hub sees: a sentence, not a document
MAX_TERMINATE_REASON_CHARS = 200


def parse_terminate(body: Any) -> str:
    """The reason of ``POST /api/tasks/{id}/terminate`` ("" when none was given): printable text of at most
    ``MAX_TERMINATE_REASON_CHARS``, with anything that looks like a credential (a URL's query, ``sig=``, a bearer
    token: ``core.errors.without_secrets``) taken out, as it is kept in the task hub's plain tables."""
    example = f"send e.g. {TERMINATE_EXAMPLE}, or no body"
    if not isinstance(body, Mapping):
        raise RequestInvalid("the request body must be a JSON object", example)
    unknown = sorted(set(body) - set(TERMINATE_FIELDS))
    if unknown:
        raise RequestInvalid(f"unknown field(s): {', '.join(unknown)}",
                             f"allowed fields: {', '.join(TERMINATE_FIELDS)}")
    reason = _opt_str(body, "reason", MAX_TERMINATE_REASON_CHARS).strip()
    try:  # a lone surrogate ("\ud800" in the JSON): the SDK quotes the reason into a URL as UTF-8, which cannot hold it
        reason.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestInvalid("'reason' is not text (it holds a lone UTF-16 surrogate)", "use printable text only") \
            from None
    return without_secrets(reason)


def terminate_target(body: Any) -> str:
    """The ``target`` of ``POST /api/tasks/{id}/terminate`` (``TERMINATE_TARGETS``; "task" when none was given): what
    to end. The body is a JSON object already (``parse_terminate`` checked it)."""
    target = body.get("target", "task") if isinstance(body, Mapping) else "task"
    if target not in TERMINATE_TARGETS:
        raise RequestInvalid(f"'target' must be one of {', '.join(TERMINATE_TARGETS)}, got {target!r}",
                             "leave it out (or \"task\") to end the task's run; \"removal\" or \"search\" end its "
                             "repeat removal or repeat search (GET /api/tasks/<id>/repeats shows them), \"previews\" "
                             "or \"zip\" its preview re-render or results zip build (GET /api/tasks/<id>/results "
                             "shows them)")
    return str(target)


def _image_list(body: Mapping[str, Any]) -> str:
    """The image list's blob name in the request's container ("" for none); the edge reads and checks the list."""
    name = _opt_str(body, "image_list").strip().lstrip("/")
    if name.endswith("/"):
        raise RequestInvalid(f"'image_list' {name!r} names a folder, not a blob",
                             'name the CSV or JSON blob in the container, e.g. "lists/season-1.csv"')
    if has_dot_segment(name):
        raise RequestInvalid(f"'image_list' {name!r} has a '.' or '..' folder, which Azure's clients resolve before "
                             "sending (another blob would be read)",
                             'name the blob as it is named in the container, e.g. "lists/season-1.csv"')
    return name


def _only_new(body: Mapping[str, Any]) -> bool:
    """``only_new`` is a re-run (it implies ``rerun``) that reuses the served generation's results of images whose
    name and ETag are unchanged (``activities.reuse``)."""
    return _opt_bool(body, "only_new")


def check_repeat_removal(body: Any) -> tuple[str, Any]:
    """The removal's shape, before the task's list is looked at: ``("keep" | "remove", value)``, or
    ``RequestInvalid`` (400) for a body no list could take (so a typo is not answered as a changed list)."""
    if not isinstance(body, Mapping):
        raise RequestInvalid("the request body must be a JSON object",
                             'send {"keep": ["r00002"]} (real animals; the rest is removed) or {"remove": ["r00001"]}')
    given = [k for k in ("keep", "remove") if k in body]
    unknown_fields = sorted(set(body) - {"keep", "remove", "search"})
    if unknown_fields:
        raise RequestInvalid(f"unknown field(s) {unknown_fields}", 'use exactly one of "keep" or "remove" (and '
                             '"search": the id of the list they come from)')
    if len(given) != 1:
        raise RequestInvalid('give exactly one of "keep" or "remove"',
                             '"keep": locations that are real animals (the rest is removed); "remove": the ones to drop')
    field_name = given[0]
    value = body[field_name]
    if not (field_name == "remove" and value == "all") and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise RequestInvalid(f"'{field_name}' must be a list of location ids" +
                             (' or "all"' if field_name == "remove" else ""), 'e.g. ["r00001", "r00004"]')
    return field_name, value


def parse_repeat_removal(body: Any, known_ids: list[str]) -> list[str]:
    """Which repeated-detection locations to remove, from ``{"remove": [ids] | "all"}`` or ``{"keep": [ids]}``.

    ``keep`` lists the locations a person found to be real animals; every other location is removed (MegaDetector's
    phase 2 works the same way: what is not taken out of the review folder is a false positive). Returns sorted ids.
    """
    field_name, value = check_repeat_removal(body)
    if field_name == "remove" and value == "all":
        chosen = list(known_ids)
    else:
        unknown = sorted(set(value) - set(known_ids))
        if unknown:
            raise RequestInvalid(f"unknown location id(s) {unknown[:10]}",
                                 "GET /api/tasks/<id>/repeats lists the task's repeated-detection locations")
        chosen = list(value) if field_name == "remove" else [i for i in known_ids if i not in set(value)]
    if not chosen:
        raise RequestInvalid("nothing to remove", "the request leaves every repeated location in place")
    return sorted(set(chosen))


# ---------------------------------------------------------------- POST /api/tasks/{id}/repeats/search
# MegaDetector's RDE phase-1 options (repeat_detections_core.RepeatDetectionOptions), by their names in snake_case, and
# the core.repeats.RepeatOptions field each sets. Fields left out take MegaDetector's defaults (RepeatOptions()).
REPEAT_SEARCH_FIELDS = {
    "occurrence_threshold": "occurrence_threshold",  # occurrenceThreshold
    "iou_threshold": "iou_threshold",  # iouThreshold
    "confidence_min": "confidence_min",  # confidenceMin
    "confidence_max": "confidence_max",  # confidenceMax
    "min_suspicious_detection_size": "min_area",  # minSuspiciousDetectionSize (fraction of the image area)
    "max_suspicious_detection_size": "max_area",  # maxSuspiciousDetectionSize
    # maxImagesPerFolder, but by eligible detections (what a folder's search time grows with, squared): a folder with
    # more is not searched but named in the list. Left out: TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS (the caller's).
    "max_folder_detections": "max_folder_detections",
}
MIN_OCCURRENCE_THRESHOLD = 2  # one occurrence would make every detection a "repeated place"
MAX_OCCURRENCE_THRESHOLD = 1_000_000
# The search's index (core.repeats._Folder) meets only candidates whose sides are within a factor 1/t and centres within
# (1 - t) of the larger side: below t = 0.5 a cell reaches across most of the image and every size class, and the
# search of a folder grows with the square of its detections. MegaDetector's default is 0.9; 0.5 is looser than any
# use of RDE we know of.
MIN_SEARCH_IOU = 0.5


def _search_number(body: Mapping[str, Any], name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value > high or value < low or (low_open and value == low):
        span = f"{'above' if low_open else 'from'} {low} to {high}"
        raise RequestInvalid(f"'{name}' must be a number {span}, got {value!r}",
                             f"leave it out for MegaDetector's default ({_search_default(name)})")
    return float(value)


def _search_default(name: str) -> Any:
    return getattr(RepeatOptions(), REPEAT_SEARCH_FIELDS[name])


def _max_folder_detections(body: Mapping[str, Any], default: int) -> int:
    """``max_folder_detections``, at most ``MAX_FOLDER_DETECTIONS`` (a folder's search must fit one activity)."""
    value = body.get("max_folder_detections")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestInvalid(f"'max_folder_detections' must be an integer of at least 1, got {value!r}",
                             f"leave it out for the app's cap ({default}), or e.g. \"max_folder_detections\": "
                             f"{MAX_FOLDER_DETECTIONS}")
    if value > MAX_FOLDER_DETECTIONS:
        raise RequestInvalid(
            f"'max_folder_detections' must be at most {MAX_FOLDER_DETECTIONS}, got {value}",
            "one activity searches a folder, in time growing with the square of its eligible detections: "
            f"{MAX_FOLDER_DETECTIONS} (minutes, and about 2 GB) is the most that fits the activity's 30-minute limit "
            "and its share of the instance's memory; split such a folder into subfolders instead")
    return value


def parse_repeat_search(body: Any, default_max_folder_detections: int = DEFAULT_MAX_FOLDER_DETECTIONS
                        ) -> RepeatOptions:
    """The phase-1 options of a repeated-detection search run again; ``RequestInvalid`` names the bad field.

    ``{}`` (or no body) is MegaDetector's defaults, which the merge used, with the app's folder cap
    (``default_max_folder_detections``: TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS, which the caller passes; this module
    reads no setting). Bounds: see ``MIN_OCCURRENCE_THRESHOLD``, ``MIN_SEARCH_IOU`` and
    ``core.repeats.MAX_FOLDER_DETECTIONS``; the sizes and confidences are fractions, each minimum at most its
    maximum."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise RequestInvalid("the request body must be a JSON object",
                             'send e.g. {"occurrence_threshold": 10, "iou_threshold": 0.85}, or {} for the defaults')
    unknown = sorted(set(body) - set(REPEAT_SEARCH_FIELDS))
    if unknown:
        raise RequestInvalid(f"unknown field(s) {unknown}", "use " + ", ".join(REPEAT_SEARCH_FIELDS))
    values: dict[str, Any] = {}
    occurrences = body.get("occurrence_threshold")
    if occurrences is not None:
        values["occurrence_threshold"] = _opt_int(body, "occurrence_threshold", MIN_OCCURRENCE_THRESHOLD,
                                                  MAX_OCCURRENCE_THRESHOLD)
    numbers = {"iou_threshold": (MIN_SEARCH_IOU, 1.0, False), "confidence_min": (0.0, 1.0, False),
               "confidence_max": (0.0, 1.0, False), "min_suspicious_detection_size": (0.0, 1.0, False),
               "max_suspicious_detection_size": (0.0, 1.0, True)}
    for name, (low, high, low_open) in numbers.items():
        value = _search_number(body, name, low, high, low_open)
        if value is not None:
            values[REPEAT_SEARCH_FIELDS[name]] = value
    values["max_folder_detections"] = _max_folder_detections(body, default_max_folder_detections)
    options = RepeatOptions(**values)
    if options.confidence_min > options.confidence_max:
        raise RequestInvalid(f"'confidence_min' ({options.confidence_min}) is above 'confidence_max' "
                             f"({options.confidence_max})", "the confidence range must not be empty")
    if options.min_area > options.max_area:
        raise RequestInvalid(f"'min_suspicious_detection_size' ({options.min_area}) is above "
                             f"'max_suspicious_detection_size' ({options.max_area})", "the size range must not be empty")
    return options


def repeat_search_fields(options: RepeatOptions) -> dict[str, Any]:
    """The options in the request's names: what ``POST /api/tasks/{id}/repeats/search`` takes to make the list again."""
    return {name: getattr(options, field) for name, field in REPEAT_SEARCH_FIELDS.items()}


# Options a list made by an older release does not record because that release had no such option: shown only when
# recorded (a list searched before the folder cap existed searched every folder, whatever today's default says).
_LATER_SEARCH_FIELDS = ("max_folder_detections",)


def recorded_search_fields(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """``repeat_search_fields`` of the options a repeats document records (its ``options``), without those of
    ``_LATER_SEARCH_FIELDS`` it does not record."""
    fields = repeat_search_fields(RepeatOptions.from_dict(recorded))
    return {name: value for name, value in fields.items()
            if name not in _LATER_SEARCH_FIELDS or REPEAT_SEARCH_FIELDS[name] in recorded}


def requested_list(body: Any) -> str | None:
    """The ``search`` id a repeat removal names (the list its ids come from), or None when it names none."""
    if not isinstance(body, Mapping) or body.get("search") is None:
        return None
    value = body["search"]
    if not isinstance(value, str) or not value or len(value) > 100 or _CONTROL_RE.search(value):
        raise RequestInvalid(f"'search' must be the list's search id, got {value!r}",
                             "send the 'search' that GET /api/tasks/<id>/repeats shows with the list")
    return value
