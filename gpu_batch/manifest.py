"""The shard manifest and shard result documents: the contract between the Functions app and the GPU worker.

Why this module exists: the orchestration never holds image lists (they would bloat the Durable history), so a shard
travels as a small JSON document in blob storage. Both sides (``activities`` writing it, ``gpu_batch.worker`` reading
it, ``activities.merge`` reading the results) import these shapes from here, so the format is defined once.
It must stay importable without torch or azure packages.

Failed entries of a results document carry MegaDetector's ``failure`` string plus trapbatch's ``failure_kind`` and
``failure_reason`` (retryable or permanent, and why): they are defined once, at the end of this module, because the
worker writes them and the app's coverage, resubmission and merge read them. So is the small coverage summary a
worker writes after its last flush (``coverage_summary``), with which the poll and the resubmission count a shard's
coverage without parsing its results (``combine_coverage``; ``activities.shard_results``).

Where these documents live (``layout.manifest_blob`` / ``layout.attempt_results_blob``) is ``gpu_batch.layout``'s
business, like every other blob name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

MANIFEST_VERSION = 1


def has_dot_segment(name: str) -> bool:
    """Whether a blob name has a ``.`` or ``..`` folder. Why it matters: Azure's clients send a blob's name as its URL
    path and the HTTP layer resolves such segments before sending (urllib3's ``parse_url``), so ``a/../b.jpg`` reads
    ``b.jpg`` (one photo under two names, or a blob outside the prefix, or with a bearer token or an account SAS, which
    do not sign the path, in another container) and a shared-key signature no longer matches the path sent (403).
    Azure Storage itself keeps such names as written (a REST client that sends ``%2E%2E`` creates ``a/../b.jpg``), so a
    listing can return them; they can only be refused. Shared by the app (requests, image lists, listings) and the
    worker (``gpu_batch.worker.sources``), hence here."""
    return any(part in (".", "..") for part in name.split("/"))


@dataclass(frozen=True, slots=True)
class ViewBasis:
    """What a later attempt's merge view covers besides its own results (``ShardManifest.merge_view_basis``): the
    blob of the shard's first manifest, which lists every image of the shard, and the earlier attempts' results
    blobs, oldest first, all in the manifest's ``output_container``. Why names and not contents: the worker reads
    them when its attempt has finished, and the view names the ETags it read (``gpu_batch.formats.mergeview``)."""

    manifest: str
    results: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "results": list(self.results)}

    @classmethod
    def from_dict(cls, data: Any) -> "ViewBasis":
        results = data.get("results") if isinstance(data, Mapping) else None
        if (not isinstance(results, list) or not all(isinstance(r, str) and r for r in results)
                or not isinstance(data.get("manifest"), str) or not data["manifest"]):
            raise ValueError("shard manifest 'merge_view_basis' must be {'manifest': blob name, 'results': "
                             "[blob names]}")
        return cls(data["manifest"], tuple(results))


@dataclass(frozen=True, slots=True)
class ViewList:
    """The image list's rows a merge view's export lines are made with (``ShardManifest.merge_view_list``): the
    shard's list document (``layout.shard_list_blob``, in the manifest's ``output_container``) and the list's metadata
    columns in the task's order (Zooniverse's rows carry them in that order). Why a name and not the rows: the
    document is written once by the enumeration, and the view names the ETag it read, which the exports check."""

    blob: str
    columns: tuple[str, ...]
    # the deployments' first coordinates and camera over the whole list (``layout.list_facts_blob``), when its columns
    # give any: the view's Camtrap DP lines start each deployment from them, as the exports' single pass ends with them
    given: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"blob": self.blob, "columns": list(self.columns), **({"given": self.given} if self.given else {})}

    @classmethod
    def from_dict(cls, data: Any) -> "ViewList":
        columns = data.get("columns") if isinstance(data, Mapping) else None
        if (not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
                or not isinstance(data.get("blob"), str) or not data["blob"]
                or not isinstance(data.get("given", ""), str)):
            raise ValueError("shard manifest 'merge_view_list' must be {'blob': blob name, 'columns': [names], "
                             "'given': blob name (optional)}")
        return cls(data["blob"], tuple(columns), str(data.get("given") or ""))


# MegaDetector's output threshold (run_detector.DEFAULT_OUTPUT_CONFIDENCE_THRESHOLD): the lowest confidence a shard's
# results keep when the app names none. One constant: the app's TRAPBATCH_DETECTION_THRESHOLD default
# (core.settings) and the lowest preview threshold a request may ask for (core.requests) are this number.
DEFAULT_DETECTION_THRESHOLD = 0.005
# The devices a worker runs on (its ``--device``, TRAPBATCH_DEVICE): core.settings refuses any other at the app's
# start, so a typo stops the app with the choices instead of failing every shard of the local pool with exit 2.
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class ShardManifest:
    """One unit of GPU work: run ``model`` over ``images`` (blob names in ``source_container``).

    ``output_container``/``output_blob`` say where the worker writes its results document (MegaDetector batch format:
    ``{"images": [...], "detection_categories": ..., "info": ...}``), flushing it every few seconds so that a restarted
    attempt can skip images already done.
    """

    task_id: str
    shard_id: str
    attempt: int
    source_container: str
    images: tuple[str, ...]
    output_container: str
    output_blob: str
    model: str
    detection_threshold: float = DEFAULT_DETECTION_THRESHOLD
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Images in another storage account (``storage_refs``): its URL and the *name* of the secret that opens it.
    source_account_url: str = ""
    source_credential_secret: str = ""
    # The task's CSV and preview threshold, set by the app on a shard's first manifest: with it the worker writes, when
    # the attempt finishes every image, the merge's view of its results (``gpu_batch.formats.mergeview``).
    merge_view_threshold: float | None = None
    # On a resubmitted attempt: the shard's first manifest and earlier results, so that its view covers the whole
    # shard (with ``merge_view_threshold``; ``ViewBasis``). None on a first attempt, whose view covers its manifest.
    merge_view_basis: ViewBasis | None = None
    # An image-list task with metadata columns: the list's rows of the shard, with which the view's export lines
    # (COCO, Camtrap DP, Zooniverse) are made (``ViewList``). None: lines without metadata, as for any other task.
    merge_view_list: ViewList | None = None
    # The listing that cut the shard: the ``listing_run`` in the input of the app's call that wrote this manifest
    # (``activities.enumerate``), copied by the reuse step into attempt 0 (``activities.reuse``). The app alone reads
    # it, to tell an attempt 0 made from its own listing from an earlier one's
    # (``activities.replaced_images.drop_earlier_reuse``); a worker ignores it. "": none (a run without an id, a
    # manifest of before), and left out of the document, which is then the same as before.
    listing_run: str = ""

    def to_dict(self) -> dict[str, Any]:
        optional: dict[str, Any] = ({} if self.merge_view_threshold is None
                                    else {"merge_view_threshold": self.merge_view_threshold})
        if self.listing_run:
            optional["listing_run"] = self.listing_run
        if self.merge_view_basis is not None:
            optional["merge_view_basis"] = self.merge_view_basis.to_dict()
        if self.merge_view_list is not None:
            optional["merge_view_list"] = self.merge_view_list.to_dict()
        return {
            "version": MANIFEST_VERSION,
            "task_id": self.task_id,
            "shard_id": self.shard_id,
            "attempt": self.attempt,
            "source_container": self.source_container,
            "images": list(self.images),
            "output_container": self.output_container,
            "output_blob": self.output_blob,
            "model": self.model,
            "detection_threshold": self.detection_threshold,
            "extra": dict(self.extra),
            "source_account_url": self.source_account_url,
            "source_credential_secret": self.source_credential_secret,
            **optional,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShardManifest":
        """The manifest in ``data``; keys it does not know are ignored (every release read the fields by name), so
        a worker of an earlier release, still on the pool's nodes, reads a manifest with a field added since (an
        optional one, such as ``listing_run``) as before."""
        version = data.get("version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ValueError(
                f"shard manifest version {version!r} is not supported (expected {MANIFEST_VERSION}); "
                "the worker and the Functions app come from different releases: redeploy both"
            )
        images = data["images"]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise ValueError("shard manifest 'images' must be a list of blob names")
        return cls(
            task_id=str(data["task_id"]),
            shard_id=str(data["shard_id"]),
            attempt=int(data["attempt"]),
            source_container=str(data["source_container"]),
            images=tuple(images),
            output_container=str(data["output_container"]),
            output_blob=str(data["output_blob"]),
            model=str(data["model"]),
            detection_threshold=float(data.get("detection_threshold", DEFAULT_DETECTION_THRESHOLD)),
            extra=dict(data.get("extra") or {}),
            source_account_url=str(data.get("source_account_url") or ""),
            source_credential_secret=str(data.get("source_credential_secret") or ""),
            merge_view_threshold=(float(data["merge_view_threshold"])
                                  if data.get("merge_view_threshold") is not None else None),
            merge_view_basis=(ViewBasis.from_dict(data["merge_view_basis"])
                              if data.get("merge_view_basis") is not None else None),
            merge_view_list=(ViewList.from_dict(data["merge_view_list"])
                             if data.get("merge_view_list") is not None else None),
            listing_run=str(data.get("listing_run") or ""),
        )


# ---------------------------------------------------------------- per-image failures in a shard results document
#
# A failed entry keeps MegaDetector's own ``failure`` string (``"image access failure"``: the image could not be
# read or decoded; ``"inference failure"``: it was read but not detected), so every MegaDetector tool reads it, and
# trapbatch adds two fields that say whether running the image again can help:
#
#     {"file": "cam1/IMG_0001.JPG", "failure": "image access failure", "detections": null,
#      "failure_kind": "retryable", "failure_reason": "auth"}
#
# ``failure_kind``:
#     "retryable"  the image was not the problem; the next attempt runs it again (it counts as *missing*: not covered
#                  by ``activities.shard_results.shard_coverage``, resubmitted, and in the merge replaced by any later
#                  attempt's result; still retryable after the last attempt, the merged entry keeps its reason)
#     "permanent"  the image itself is the problem; it is final and never run again
#
# ``failure_reason`` (``FAILURE_REASONS`` maps each to its kind):
#     download       retryable  the storage read failed (connection reset, server error, an error the SDK did not name)
#     auth           retryable  the storage account refused the read: 401/403 (an expired or rotated SAS, a missing
#                               role) or no credential could be obtained
#     throttled      retryable  the storage account is busy: 429/503 (ServerBusy)
#     account_not_found retryable the images' storage account's host name does not exist in DNS (EAI_NONAME /
#                               EAI_NODATA: deleted, or misspelt in the request's source_account_url;
#                               ``gpu_batch.storage_refs.unresolvable_host``), not a resolver that did not answer
#                               (``download``). Retryable: a lookup can say so for a while of an account that exists,
#                               and a restored account's images must be read, not kept failed; once such reads have
#                               failed for ``gpu_batch.worker.sources.GONE_AFTER_S`` the worker stops the shard (exit 5,
#                               ``gpu_batch.exit_codes.SOURCE``), as every image of it would fail alike; a shard
#                               left with only such images sooner waits that long at its end, asking DNS again
#                               (``BlobImageSource.wait_for_host``)
#     timeout        retryable  the read timed out (client timeout, 408/504)
#     inference      retryable  read and decoded, but the network's batch failed (GPU error, out of memory on one
#                               image), or the worker's memory ran out while decoding it; failure "inference failure"
#     not_processed  retryable  no attempt wrote any result for the image (merged output only; "inference failure")
#     worker_error   retryable  decoding or letterboxing it raised what no bad file makes the decoder raise (a
#                               TypeError, AttributeError, RuntimeError...: a worker bug or a broken node, not the
#                               photo); "image access failure", as MegaDetector writes for any exception while loading
#                               an image; the worker logs its traceback once per shard
#     not_found      permanent  the blob or file no longer exists (404)
#     archived       permanent  the blob is in the Archive tier, or being rehydrated from it (409 BlobArchived /
#                               BlobBeingRehydrated: "offline and can't be read", archive-rehydrate-overview.md);
#                               rehydration takes hours, so no attempt of this task can read it: rehydrate it to Hot or
#                               Cool, then post the request again
#     undecodable    permanent  the bytes are not an image PIL can open (zero bytes, corrupt, not an image)
#     listed_not_found permanent a name in the request's image list that the container does not hold (found missing
#                               at enumeration: never sent to the pool; core.imagelist)
#     unsupported    permanent  an image MegaDetector refuses: a pixel mode other than RGB/RGBA/L (CMYK, palette),
#                               16-bit grayscale ("inference failure", as in MegaDetector), over PIL's pixel limit,
#                               or too thin to letterbox
#
# Entries written before these fields existed have a ``failure`` and no kind: they count as permanent (final), which
# is how every failure was treated then. Counts by reason use "unclassified" for them.

FAILURE_KIND = "failure_kind"
FAILURE_REASON = "failure_reason"
RETRYABLE = "retryable"
PERMANENT = "permanent"

# What to do when another account refuses a read (failure reason ``auth``; listings and image lists too). Both
# identities read there, each with its own token: the app (enumeration, image lists, preview thumbnails) and every GPU
# node (the images themselves), so a role for the app alone lets the task start and then fails every shard
# (infra/app/rbac.bicep names them id-api-* and id-nodes-*).
NO_ACCESS_HINT = ("the SAS the request names (credential_secret) needs read and list permission on that container; "
                  "without a secret, both of trapbatch's managed identities, the app's (id-api-*) and the GPU "
                  "nodes' (id-nodes-*), need 'Storage Blob Data Reader' on that storage account (or container)")

REASON_DOWNLOAD = "download"
REASON_AUTH = "auth"
REASON_THROTTLED = "throttled"
REASON_TIMEOUT = "timeout"
REASON_INFERENCE = "inference"
REASON_NOT_PROCESSED = "not_processed"
REASON_WORKER_ERROR = "worker_error"
REASON_NOT_FOUND = "not_found"
REASON_UNDECODABLE = "undecodable"
REASON_UNSUPPORTED = "unsupported"
REASON_LISTED_NOT_FOUND = "listed_not_found"
REASON_ARCHIVED = "archived"
REASON_ACCOUNT_NOT_FOUND = "account_not_found"
REASON_UNCLASSIFIED = "unclassified"  # never written: what counts by reason call a failure without a reason

FAILURE_REASONS: Mapping[str, str] = {
    REASON_DOWNLOAD: RETRYABLE, REASON_AUTH: RETRYABLE, REASON_THROTTLED: RETRYABLE, REASON_TIMEOUT: RETRYABLE,
    REASON_INFERENCE: RETRYABLE, REASON_NOT_PROCESSED: RETRYABLE, REASON_WORKER_ERROR: RETRYABLE,
    REASON_ACCOUNT_NOT_FOUND: RETRYABLE,
    REASON_NOT_FOUND: PERMANENT, REASON_UNDECODABLE: PERMANENT, REASON_UNSUPPORTED: PERMANENT,
    REASON_LISTED_NOT_FOUND: PERMANENT, REASON_ARCHIVED: PERMANENT,
}


def failure_fields(reason: str) -> dict[str, str]:
    """The trapbatch fields of a failed entry for ``reason`` (one of ``FAILURE_REASONS``)."""
    return {FAILURE_KIND: FAILURE_REASONS[reason], FAILURE_REASON: reason}


def is_failure(entry: Mapping[str, Any]) -> bool:
    return entry.get("failure") is not None


def failure_kind(entry: Mapping[str, Any]) -> str | None:
    """None for a successful entry, else ``RETRYABLE`` or ``PERMANENT``.

    The entry's own ``failure_kind`` decides; without a valid one, its reason's kind; without either (an entry from
    a worker older than these fields), ``PERMANENT``.
    """
    if not is_failure(entry):
        return None
    kind = entry.get(FAILURE_KIND)
    if kind in (RETRYABLE, PERMANENT):
        return str(kind)
    return FAILURE_REASONS.get(str(entry.get(FAILURE_REASON)), PERMANENT)


def failure_reason(entry: Mapping[str, Any]) -> str | None:
    """None for a successful entry, else its ``failure_reason`` (``REASON_UNCLASSIFIED`` when it has none)."""
    if not is_failure(entry):
        return None
    reason = entry.get(FAILURE_REASON)
    return reason if isinstance(reason, str) and reason else REASON_UNCLASSIFIED


def is_final(entry: Mapping[str, Any]) -> bool:
    """Whether the image of this entry must not be run again: a success or a permanent failure."""
    return failure_kind(entry) != RETRYABLE


# ---------------------------------------------------------------- the coverage summary of a finished attempt
#
# Why: the poll must know, for each completed shard attempt, how many of the shard's images have a final result.
# Parsing every attempt's whole results document for that (a second full parse per image; the merge parses them
# again) was most of the poll's CPU. So the worker, after the last flush of its results, writes beside them
# (``layout.attempt_coverage_blob``) a few counts and the few names it left not final, and the app reads those.
#
#     {"version": 1, "results_etag": "0x8DC...", "manifest_etag": "0x8DB...",
#      "images": 1000, "images_digest": "<sha256>", "final": 997, "permanent": 2, "foreign": 0,
#      "retryable": ["cam1/IMG_0007.JPG"], "unwritten": ["cam1/IMG_0999.JPG", "cam2/IMG_0001.JPG"]}
#
# ``images``/``images_digest``: the attempt's manifest (distinct names; ``names_digest``); ``final``/``permanent``:
# its manifest images whose entry is final / a permanent failure; ``retryable``/``unwritten``: the names of its
# manifest images whose entry is a retryable failure / that have no entry (both null when together they exceed
# ``COVERAGE_NAMES_LIMIT``: then the reader parses the results, as for an attempt without a summary); ``foreign``:
# entries for names outside its manifest (never written by this worker; any makes the reader parse the results).
#
# Identity (why the results blob's ETag): a summary describes one exact results document, and must never be trusted
# for another (a restart of the attempt rewrote the results, the worker died between the two writes, a fault
# rewrote them). The worker writes its results blob itself (``gpu_batch.worker.sources.BlobSink``, on Batch with
# the nodes' managed identity: Batch's output files carry only the logs), so the ETag that Put Blob returns is known
# to it, and the reader gets the current ETag of every blob of the shard from the one listing it makes anyway.
# Blob storage updates a blob's ETag on every write ("Azure Storage assigns an identifier to every object stored. This
# identifier is updated every time an update operation is performed on an object": MicrosoftDocs/azure-docs,
# articles/storage/blobs/concurrency-manage.md, "Optimistic concurrency"). A digest of the bytes would need the
# reader to compare it with a stored Content-MD5, which the service keeps for a blob written in one Put Blob, but
# for one committed from blocks only when the client sends x-ms-blob-content-md5 with Put Block List ("Windows Azure
# Blob MD5 Overview", learn.microsoft.com/archive/blogs/windowsazurestorage/windows-azure-blob-md5-overview); the SDK
# uploads anything above ``max_single_put_size`` (64 MiB) in blocks, so large results would have none, and a file
# output (local mode) has neither: it gets no summary, the app never reads one. ``manifest_etag`` is
# the ETag of the manifest blob as the worker read it: the reader checks that the oldest attempt ran exactly the
# shard's manifest, and ``images_digest`` that each later attempt ran exactly the names the earlier ones left not
# final (``combine_coverage``), so the counts add up to what parsing every attempt gives, or the reader parses.

COVERAGE_VERSION = 1
COVERAGE_NAMES_LIMIT = 1000  # names not final above which a summary lists none (the reader then parses)


def names_digest(names: Iterable[str]) -> str:
    """SHA-256 of the distinct names, sorted, as a compact JSON list: one canonical form for the worker and the app."""
    text = json.dumps(sorted(set(names)), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def coverage_summary(entries: Mapping[str, Mapping[str, Any]], images: Iterable[str], results_etag: str,
                     manifest_etag: str, limit: int = COVERAGE_NAMES_LIMIT) -> dict[str, Any]:
    """The summary of the results document holding ``entries`` (by file name) for a manifest of ``images``, which
    Put Blob stored with ETag ``results_etag``; ``manifest_etag`` is the manifest blob's as the worker read it."""
    wanted = list(dict.fromkeys(images))
    final = permanent = 0
    retryable: list[str] = []
    unwritten: list[str] = []
    for name in wanted:
        entry = entries.get(name)
        kind = failure_kind(entry) if entry is not None else None
        if entry is None:
            unwritten.append(name)
        elif kind == RETRYABLE:
            retryable.append(name)
        else:
            final += 1
            permanent += kind == PERMANENT
    wanted_set = set(wanted)
    listed = len(retryable) + len(unwritten) <= limit
    return {"version": COVERAGE_VERSION, "results_etag": plain_etag(results_etag),
            "manifest_etag": plain_etag(manifest_etag), "images": len(wanted), "images_digest": names_digest(wanted),
            "final": final, "permanent": permanent, "foreign": sum(1 for n in entries if n not in wanted_set),
            "retryable": retryable if listed else None, "unwritten": unwritten if listed else None}


def plain_etag(value: str) -> str:
    """An ETag without the quotes some calls return it in (Put Blob's header quotes it, a listing does not)."""
    return str(value or "").strip('"')


@dataclass(frozen=True, slots=True)
class CoverageSummary:
    """A parsed coverage summary (``coverage_summary``); ``read_coverage_summary`` makes one from the blob's bytes."""

    results_etag: str
    manifest_etag: str
    images: int
    images_digest: str
    final: int
    permanent: int
    foreign: int
    retryable: tuple[str, ...] | None
    unwritten: tuple[str, ...] | None

    def matches(self, results_etag: str) -> bool:
        """Whether this summary describes the results blob that now has ``results_etag``."""
        return bool(self.results_etag) and self.results_etag == plain_etag(results_etag)


def read_coverage_summary(data: bytes | None) -> CoverageSummary | None:
    """The summary in ``data``, or None when it is not one (absent, torn, another version, a wrong field)."""
    if not data:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != COVERAGE_VERSION:
        return None
    counts = [doc.get(k) for k in ("images", "final", "permanent", "foreign")]
    ints = [n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
    texts = [t for t in (doc.get(k) for k in ("results_etag", "manifest_etag", "images_digest")) if isinstance(t, str)]
    if len(ints) != 4 or len(texts) != 3:
        return None
    names: list[tuple[str, ...] | None] = []
    for key in ("retryable", "unwritten"):
        value = doc.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
            return None
        names.append(tuple(value) if value is not None else None)
    if (names[0] is None) != (names[1] is None):
        return None
    return CoverageSummary(texts[0], texts[1], ints[0], texts[2], ints[1], ints[2], ints[3], names[0], names[1])


@dataclass(frozen=True, slots=True)
class ShardCoverage:
    """A shard's coverage from its attempts' summaries: ``core.mdformat.coverage``'s counts, and the names of the
    shard's images that have no final result in any attempt (what a resubmission runs)."""

    counts: dict[str, int]
    not_final: frozenset[str]


def combine_coverage(shard_manifest_etag: str, summaries: Sequence[CoverageSummary],
                     shard_names: Sequence[str] | None = None) -> ShardCoverage | None:
    """The shard's coverage from the summaries of ALL its attempts that have results, oldest first, each already
    matched to its results blob (``CoverageSummary.matches``); None when they cannot give exactly what parsing the
    results gives (``core.mdformat.coverage`` over every attempt), so that the caller parses.

    Why the counts add up: the oldest attempt must have run the shard's manifest (``shard_manifest_etag``, the
    manifest blob's ETag now, is the one the worker read), and each later one exactly the names the one before left
    not final (``images_digest``); an attempt only writes entries for its own manifest (``foreign`` 0). Then no image
    is final in two attempts, so ``covered`` and ``failed`` are sums, the images still missing are those the newest
    attempt left not final, and of those the retryable ones are the names some attempt wrote a retryable failure for.
    An attempt without results (an exit 69, a crash before its first flush) has no summary and covers nothing: it
    leaves the next one what the one before it left, so it is simply not among ``summaries``. Where such attempts
    came first, the oldest summary is another attempt's manifest's, never the shard's: the caller then passes the
    shard manifest's names as read now (``shard_names``), and that attempt must have run exactly those (its
    ``images_digest``), else an image it never ran would count as covered.
    """
    if not summaries:
        return None
    if shard_names is not None:
        if summaries[0].images != len(set(shard_names)) or summaries[0].images_digest != names_digest(shard_names):
            return None
    elif not shard_manifest_etag or summaries[0].manifest_etag != plain_etag(shard_manifest_etag):
        return None
    covered = failed = 0
    retryable: set[str] = set()
    left: tuple[str, ...] | None = None
    for summary in summaries:
        if summary.foreign or summary.retryable is None or summary.unwritten is None:
            return None
        if summary.final + len(summary.retryable) + len(summary.unwritten) != summary.images:
            return None
        if left is not None and (summary.images != len(set(left)) or summary.images_digest != names_digest(left)):
            return None
        covered += summary.final
        failed += summary.permanent
        retryable.update(summary.retryable)
        left = summary.retryable + summary.unwritten
    assert left is not None
    not_final = frozenset(left)
    images = summaries[0].images
    if covered + len(not_final) != images:
        return None
    return ShardCoverage({"images": images, "covered": covered, "failed": failed,
                          "retryable": len(not_final & retryable), "missing": len(not_final)}, not_final)
