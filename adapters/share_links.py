"""Time-limited, read-only links to result files, for people without an Azure role on trapbatch's storage.

Why: the results, the CSV and the exports live in a private container; a partner who gets a link must be able to
download one file, only read it, and only for a while. Each link is a blob-scoped SAS with read permission alone:

* in Azure (identity-based connection, no account key), a **user delegation SAS**, signed with a user delegation key
  the app's managed identity obtains (Get User Delegation Key; the identity needs
  ``Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey``, part of Storage Blob Data Owner, which
  infra/app/rbac.bicep grants it, as of Contributor and Delegator). The key, and so every link, is valid for at most 7 days from now
  (https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key: "must be within 7 days of the
  current time"); revoking the app's role or rotating the delegation keys revokes them;
* with a key connection string (Azurite locally, or an account that allows keys), an **account-key service SAS**.

Links are minted per HTTP request and returned to the caller only: they are never written to orchestration history,
statuses, blobs or logs (a link is a bearer credential; ``redact`` shows what may be logged).

Must not: grant more than read on one blob; sign with anything but the app's own credential.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from urllib.parse import quote

from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from adapters.blobs import BlobStore
from gpu_batch import layout

MAX_DAYS = 7.0  # the longest a user delegation key (and so a user delegation SAS) may be valid
_CLOCK_SKEW = timedelta(minutes=5)  # key start a little in the past: machines' clocks differ


@dataclass(frozen=True, slots=True)
class Links:
    expires: datetime
    kind: str  # "user-delegation" or "account-key"
    urls: dict[str, str]  # blob name -> link


def read_links(store: BlobStore, container: str, names: Iterable[str], days: float,
               now: datetime | None = None) -> Links:
    """A read-only link to each blob in ``names`` (in ``container``), valid ``days`` days (at most ``MAX_DAYS``)."""
    if not 0 < days <= MAX_DAYS:
        raise ValueError(f"links are valid for more than 0 and at most {MAX_DAYS:g} days, not {days}")
    now = now or datetime.now(timezone.utc)
    # the service checks "within 7 days of the current time" on its own clock: a full week by a clock a little ahead
    # of the service's would be refused (400), so a week's links end the skew allowance short of it
    latest = now + timedelta(days=MAX_DAYS) - _CLOCK_SKEW
    expires = min(now + timedelta(days=days), latest).replace(microsecond=0)
    service = store.service
    credential: Any = service.credential
    account = str(service.account_name)
    signing: dict[str, Any]
    if getattr(credential, "account_key", None):
        signing, kind = {"account_key": credential.account_key}, "account-key"
    else:
        key = service.get_user_delegation_key(now - _CLOCK_SKEW, expires)
        signing, kind = {"user_delegation_key": key}, "user-delegation"
    urls = {}
    for name in names:
        token = generate_blob_sas(account, container, name, permission=BlobSasPermissions(read=True), expiry=expires,
                                  content_disposition=attachment(name), **signing)
        urls[name] = f"{service.url.rstrip('/')}/{container}/{quote(name)}?{token}"
    return Links(expires, kind, urls)


def attachment(name: str) -> str:
    """The ``Content-Disposition`` a link's answer carries (the SAS's ``rscd``, signed with it): save as the blob's
    file name, a results variant's exports with the variant in it (``layout.download_file_name``: both variants'
    ``coco.json`` saved as one file). Why: a results file or COCO export is ``application/json`` and gigabytes at ten
    million images; a partner who clicks its link had the browser render it in the tab (its JSON viewer) instead of
    saving it, which stalls or crashes the tab. Programs (curl, azcopy, a script's GET) are not affected. A name that
    is not plain ASCII goes in ``filename*`` (RFC 6266 4.3, RFC 8187): a header holds ASCII."""
    file = layout.download_file_name(name)
    if file.isascii() and file.isprintable() and not any(c in file for c in '"\\;'):
        return f'attachment; filename="{file}"'
    return "attachment; filename*=UTF-8''" + quote(file, safe="")


def redact(url: str) -> str:
    """A link without its signature, fit for a log line."""
    return url.split("?", 1)[0] + ("?<sas>" if "?" in url else "")


VARIANTS = ("", layout.REPEATS_REMOVED)


def result_files(store: BlobStore, container: str, task_id: str) -> dict[str, dict[str, Any]]:
    """The files a task's people may download, per results variant that exists (``original`` / ``repeats-removed``):
    ``results`` and ``csv`` (blob names), ``damaged`` (the photos cut short, ``layout.damaged_blob``, when there were
    any: one list, named under both variants, since removing repeated detections changes no photo), ``readme`` (the
    variant's README, ``activities.readme``, once written), ``repeats`` (the original's only: the repeated-detection
    list, ``layout.repeats_blob``, when the search wrote one: its README names it, so the zip must hold it too),
    ``exports`` (name relative to the variant's exports folder -> blob) and ``thresholds`` (the CSVs at other
    thresholds that ``POST .../previews`` wrote: threshold -> blob)."""
    found: dict[str, dict[str, Any]] = {}
    damaged: bool | None = None
    for variant in VARIANTS:
        results = layout.results_blob(task_id, variant)
        if not store.exists(container, results):
            continue
        entry: dict[str, Any] = {"results": results}
        if store.exists(container, layout.csv_blob(task_id, variant)):
            entry["csv"] = layout.csv_blob(task_id, variant)
        if damaged is None:  # one list for both variants: looked up once
            damaged = store.exists(container, layout.damaged_blob(task_id))
        if damaged:
            entry["damaged"] = layout.damaged_blob(task_id)
        if not variant and store.exists(container, layout.repeats_blob(task_id)):
            entry["repeats"] = layout.repeats_blob(task_id)
        if store.exists(container, layout.readme_blob(task_id, variant)):
            entry["readme"] = layout.readme_blob(task_id, variant)
        prefix = layout.exports_prefix(task_id, variant)
        others = tuple(layout.exports_prefix(task_id, v) for v in VARIANTS if v and v != variant)
        # not the work folders (".parts/", ".zooniverse-parts/"): an exports step that failed before its clean-up
        # leaves them, and they are no one's download
        entry["exports"] = {name[len(prefix):]: name for name in store.list_names(container, prefix)
                            if not name.startswith(others) and not name[len(prefix):].startswith(".")}
        marker = layout.threshold_csv_prefix(task_id, variant)
        entry["thresholds"] = {name[len(marker):-len(".csv")]: name for name in store.list_names(container, marker)
                               if name.endswith(".csv")}
        found[variant or "original"] = entry
    return found


def linked(files: dict[str, dict[str, Any]], links: Links) -> dict[str, Any]:
    """``files`` with each blob name replaced by its link, plus when they stop working."""
    def url(name: str) -> str:
        return links.urls[name]

    return {"expires": links.expires.isoformat(), "kind": links.kind, "read_only": True,
            "files": {variant: {k: ({rel: url(name) for rel, name in v.items()} if isinstance(v, dict) else url(v))
                                for k, v in entry.items()}
                      for variant, entry in files.items()}}


def all_names(files: dict[str, dict[str, Any]]) -> list[str]:
    """Every blob name in ``files`` (the single files and those of its ``exports`` and ``thresholds`` groups)."""
    return [name for entry in files.values() for value in entry.values()
            for name in (value.values() if isinstance(value, dict) else [value])]
