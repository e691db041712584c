"""Read-only links to a task's files (GET /api/tasks/{id}/results), against Azurite: they download without any
credential, refuse writes, and stop working when they expire."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from enum import Enum
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
import requests
from azure.storage.blob import UserDelegationKey

from adapters import share_links
from adapters.blobs import BlobStore, service_client
from api import starters
from gpu_batch import layout
from tests.waiting import wait_until

TASK = "task-00112233445566778899"


@pytest.fixture
def files(storage_connection: str, unique_name: str) -> tuple[BlobStore, str]:
    store = BlobStore(service_client(storage_connection))
    container = unique_name + "s"
    store.ensure_container(container)
    for variant in ("", layout.REPEATS_REMOVED):
        store.write_bytes(container, layout.results_blob(TASK, variant), f'{{"variant": "{variant}"}}'.encode())
        store.write_bytes(container, layout.csv_blob(TASK, variant), b"file,status\n")
        store.write_bytes(container, layout.coco_blob(TASK, variant), b"{}")
        store.write_bytes(container, layout.zooniverse_batch_blob(TASK, 1, variant), b"image_name_1\na b.jpg\n")
        # an exports step that failed before its clean-up left its work blobs
        store.write_bytes(container, layout.exports_prefix(TASK, variant) + ".parts/00000.observations", b"x")
    return store, container


def _status_or_none(url: str) -> int | None:
    """The status of a GET, or None when Azurite is too slow to answer within the request's deadline (CI saw one GET
    of a small blob wait over 10 s on a loaded machine): the wait's own deadline decides."""
    try:
        return requests.get(url, timeout=120).status_code
    except requests.exceptions.Timeout:
        return None


def test_links_download_anonymously_read_only_until_they_expire(files: tuple[BlobStore, str]) -> None:
    store, container = files
    found = share_links.result_files(store, container, TASK)
    assert set(found) == {"original", layout.REPEATS_REMOVED}
    # not the variant's, nor the work blobs
    assert set(found["original"]["exports"]) == {"coco.json", "zooniverse/batch-001.csv"}
    names = share_links.all_names(found)
    links = share_links.read_links(store, container, names, days=4 / 86400)  # four seconds
    assert links.kind == "account-key" and set(links.urls) == set(names)
    for name, url in links.urls.items():
        got = requests.get(url, timeout=60)  # no credential but the link itself
        assert got.status_code == 200 and got.content == store.read_bytes(container, name), name
    url = links.urls[layout.results_blob(TASK)]
    assert requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=60).status_code == 403
    assert requests.delete(url, timeout=60).status_code == 403
    assert requests.get(url.split("?")[0], timeout=60).status_code in (403, 404)  # the blob itself is private
    wait_until(lambda: _status_or_none(url) == 403, timeout=120, what="the link to expire", interval=0.5)
    assert share_links.redact(url).endswith("?<sas>") and "sig=" not in share_links.redact(url)


def test_the_list_of_photos_cut_short_is_a_file_of_both_variants_when_there_is_one(
        files: tuple[BlobStore, str]) -> None:
    """``damaged.csv`` (written by the merge only when some photos were cut short) is linked, downloaded by
    ``trapbatch results`` and zipped with the results' files; named under the repeats-removed variant too (the same
    blob: removing repeated detections changes no photo), and still one link and one download."""
    store, container = files
    assert "damaged" not in share_links.result_files(store, container, TASK)["original"]
    store.write_bytes(container, layout.damaged_blob(TASK), b"file\r\ncam/IMG_1.JPG\r\n")
    found = share_links.result_files(store, container, TASK)
    assert found["original"]["damaged"] == layout.damaged_blob(TASK) == f"results/{TASK}/damaged.csv"
    assert found[layout.REPEATS_REMOVED]["damaged"] == layout.damaged_blob(TASK)
    assert layout.damaged_blob(TASK) in share_links.all_names(found)
    links = share_links.linked(found, share_links.read_links(store, container, share_links.all_names(found), 1))
    assert links["files"]["original"]["damaged"] == links["files"][layout.REPEATS_REMOVED]["damaged"]


def test_a_link_saves_its_file_under_its_name_rather_than_showing_it(files: tuple[BlobStore, str]) -> None:
    """A results file or COCO export is application/json and gigabytes at ten million images: a partner clicking its
    link had the browser render it in the tab. The link's answer says ``attachment`` with the file's name (a name
    that is not ASCII in ``filename*``); fails without the change."""
    store, container = files
    odd = layout.exports_prefix(TASK) + "ünïcødé 森.csv"
    store.write_bytes(container, layout.coco_blob(TASK), b"{}", "application/json")
    store.write_bytes(container, odd, b"x\n")
    links = share_links.read_links(store, container, [layout.coco_blob(TASK), odd], days=1)
    got = requests.get(links.urls[layout.coco_blob(TASK)], timeout=60)
    assert got.status_code == 200 and got.headers["Content-Disposition"] == 'attachment; filename="coco.json"'
    got = requests.get(links.urls[odd], timeout=60)
    assert got.status_code == 200 and got.content == b"x\n"
    assert got.headers["Content-Disposition"] == (
        "attachment; filename*=UTF-8''%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E6%A3%AE.csv")


def test_the_repeats_removed_variants_exports_save_under_names_of_their_own(files: tuple[BlobStore, str]) -> None:
    """Both variants' exports are named alike in their folders (``exports/coco.json``,
    ``exports/repeats-removed/coco.json``): their links saved under one name, so a partner who downloaded both kept
    one (the browser's "coco (1).json" at best). The variant's are saved with the variant in the name, as its
    detections are (``detections.repeats-removed.json``); the blobs keep their paths. A Camtrap DP package's files
    keep theirs (its datapackage.json names them). Fails without the change."""
    store, container = files
    package = layout.camtrap_dp_blob(TASK, "media.csv", layout.REPEATS_REMOVED)
    store.write_bytes(container, package, b"mediaID\n")
    names = {layout.coco_blob(TASK): "coco.json", layout.coco_blob(TASK, layout.REPEATS_REMOVED):
             "coco.repeats-removed.json",
             layout.zooniverse_batch_blob(TASK, 1, layout.REPEATS_REMOVED): "batch-001.repeats-removed.csv",
             layout.results_blob(TASK, layout.REPEATS_REMOVED): "detections.repeats-removed.json",
             package: "media.csv"}
    links = share_links.read_links(store, container, list(names), days=1)
    for name, file in names.items():
        got = requests.get(links.urls[name], timeout=60)
        assert got.status_code == 200 and got.headers["Content-Disposition"] == f'attachment; filename="{file}"', name


@pytest.mark.parametrize("days", [0, -1, 7.5])
def test_link_lifetimes_outside_what_azure_allows_are_refused(files: tuple[BlobStore, str], days: float) -> None:
    store, container = files
    with pytest.raises(ValueError, match="at most 7"):
        share_links.read_links(store, container, [layout.results_blob(TASK)], days)


def test_a_weeks_user_delegation_key_ends_short_of_seven_days_by_the_service_clock(
        files: tuple[BlobStore, str]) -> None:
    """Get User Delegation Key (learn.microsoft.com/rest/api/storageservices/get-user-delegation-key): the expiry "must
    be within 7 days of the current time", the service's; a key asked for exactly 7 days by a clock a little ahead is
    refused. Azurite does not check it, so the request the app makes is read here (keys only in Azure)."""
    store, container = files
    asked: list[tuple[datetime, datetime]] = []

    class Service:  # the identity-based client: no account key, so a user delegation key is asked for
        credential = object()
        account_name = "acct"
        url = "https://acct.blob.core.windows.net/"

        def get_user_delegation_key(self, start: datetime, expiry: datetime) -> Any:
            asked.append((start, expiry))
            key = UserDelegationKey()
            key.signed_oid, key.signed_tid, key.signed_service, key.signed_version = "o", "t", "b", "2021-08-06"
            key.signed_start, key.signed_expiry, key.value = "s", "e", "a2V5"
            return key

    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    links = share_links.read_links(SimpleNamespace(service=Service()), container, ["a.json"], 7,  # type: ignore[arg-type]
                                   now=now)
    [(start, expiry)] = asked
    assert links.kind == "user-delegation" and links.expires == expiry
    assert now + timedelta(days=7) - timedelta(minutes=10) <= expiry <= now + timedelta(days=7) - timedelta(minutes=5)
    assert start <= now
    shorter = share_links.read_links(SimpleNamespace(service=Service()), container, ["a.json"], 2,  # type: ignore[arg-type]
                                     now=now)
    assert shorter.expires == now + timedelta(days=2)  # a shorter life is what was asked for


class _Runtime(Enum):
    Completed = "Completed"


class _Client:
    def __init__(self) -> None:
        self.status = SimpleNamespace(runtime_status=_Runtime.Completed, custom_status={"stage": "completed"},
                                      output=None, input_=json.dumps({"task_id": TASK}))

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.status


def test_the_results_route_answers_with_links_for_every_file(files: tuple[BlobStore, str], storage_connection: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store, container = files
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", container)
    monkeypatch.setenv("TRAPBATCH_LINK_DAYS", "2")
    handler = starters.get_results._function.get_user_function().__wrapped__  # http_edge(get_results), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{TASK}/results", body=b"", route_params={"task_id": TASK})
    before = datetime.now(timezone.utc)
    response = asyncio.run(handler(req, _Client()))
    body = json.loads(response.get_body())
    assert response.status_code == 200
    links = body["links"]
    expires = datetime.fromisoformat(links["expires"])
    assert before + timedelta(days=2) - timedelta(seconds=5) <= expires <= before + timedelta(days=2, seconds=5)
    original = links["files"]["original"]
    assert requests.get(original["results"], timeout=10).json() == {"variant": ""}
    assert requests.get(links["files"][layout.REPEATS_REMOVED]["exports"]["zooniverse/batch-001.csv"],
                        timeout=10).content == b"image_name_1\na b.jpg\n"  # a blob name with a space
    assert body["results"]["exports"]["original"]["coco.json"] == layout.coco_blob(TASK)
    # every field is in the description (api/openapi.py Results): a generated client keeps them all
    from tests.openapi_answers import undescribed

    assert undescribed("Results", body) == []
    # the links exist only in this answer: nothing stored in the task's container carries a signature
    for name in store.list_names(container):
        assert b"sig=" not in store.read_bytes(container, name), name


def test_a_new_removal_first_deletes_the_variant_files_of_the_earlier_one_and_writes_its_choice(
        files: tuple[BlobStore, str]) -> None:
    """The repeats-removed variant's exports and CSVs at other thresholds were made from the earlier removal's
    results: a new removal deletes them before it re-merges (orchestrations.repeats), so no link or zip hands them out
    beside the new results when its exports fail. The original's files, and the results themselves, stay."""
    from activities.fanin import run_prepare_removal

    store, container = files
    for variant in ("", layout.REPEATS_REMOVED):
        store.write_bytes(container, layout.threshold_csv_blob(TASK, 0.5, variant), b"file,status\n")
    before = share_links.result_files(store, container, TASK)
    assert before[layout.REPEATS_REMOVED]["exports"] and before[layout.REPEATS_REMOVED]["thresholds"]

    out = run_prepare_removal(TASK, ["r2", "r1"], SimpleNamespace(container=container), store)  # type: ignore[arg-type]

    after = share_links.result_files(store, container, TASK)
    assert out["deleted"] == 4  # coco, a Zooniverse batch, a work blob, a threshold CSV
    assert store.read_json(container, out["remove_blob"]) == {"remove": ["r1", "r2"]}  # what the parts read
    assert after[layout.REPEATS_REMOVED] == {"results": layout.results_blob(TASK, layout.REPEATS_REMOVED),
                                            "csv": layout.csv_blob(TASK, layout.REPEATS_REMOVED),
                                            "exports": {}, "thresholds": {}}
    assert after["original"] == before["original"]
    assert not list(store.list_names(container, layout.exports_prefix(TASK, layout.REPEATS_REMOVED)))
    assert list(store.list_names(container, layout.exports_prefix(TASK) + ".parts/"))  # the original's own stay
