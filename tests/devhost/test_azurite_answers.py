"""devhost's Azurite answers as the stock ``azurite-blob`` does (devhost/azurite_blob.js, items 3 and 4).

devhost's blob service starts each lookup from the index of blob names instead of the account's (a GET, HEAD or PUT
cost 36-88 ms at 100,000 blobs stock, 2-8 ms so) and sorts a listing once per call instead of once per chunk. Those
change what the answers cost, never what they are: the same requests go to both services here and every answer is
compared, over names repeated across containers (the case where a lookup by name alone would find another
container's blob), snapshots, staged and committed blocks, deletes, conditions, leases and listings page by page.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock

from adapters.blobs import service_client
from devhost.azurite import REPO_ROOT, Azurite, azurite_executable
from tests.azurite_listings import LISTINGS, NAMES, walk

HARNESS = Path(__file__).with_name("azurite_lookups.js")


def _outcome(call: Callable[[], Any]) -> Any:
    """What a request answered: its value, or the service's error code."""
    try:
        return call()
    except HttpResponseError as e:
        return ("error", e.status_code, e.error_code)


def _block_id(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _session(connection: str) -> dict[str, Any]:
    """One fixed sequence of requests; every answer, by step."""
    service = service_client(connection)
    got: dict[str, Any] = {}
    for container in ("alpha", "beta", "gamma"):
        service.create_container(container)
    for container, names in (("alpha", NAMES), ("beta", NAMES), ("gamma", NAMES[::5])):
        client = service.get_container_client(container)
        for name in names:
            client.upload_blob(name, f"{container}:{name}".encode())

    def read(container: str, name: str, snapshot: str | None = None) -> Any:
        return _outcome(lambda: service.get_blob_client(container, name, snapshot=snapshot).download_blob().readall())

    got["reads"] = [read(c, n) for n in NAMES[::7] for c in ("alpha", "beta", "gamma")]
    got["heads"] = [_outcome(lambda c=c, n=n: service.get_blob_client(c, n).get_blob_properties().size)
                    for n in NAMES[::11] for c in ("gamma", "beta")]
    got["listings"] = [walk(connection, "alpha", *args) for args in LISTINGS]
    got["gamma_listing"] = walk(connection, "gamma", None, "/", 4)

    # a snapshot, then the base overwritten: the lookup without a snapshot time must find the base blob
    top = service.get_blob_client("alpha", "top.jpg")
    snapshot = top.create_snapshot()["snapshot"]
    top.upload_blob(b"alpha:top.jpg v2", overwrite=True)
    got["snapshot"] = [read("alpha", "top.jpg"), read("alpha", "top.jpg", snapshot), read("beta", "top.jpg")]
    got["with_snapshots"] = [(b.name, b.snapshot is not None) for b in
                             service.get_container_client("alpha").list_blobs(name_starts_with="top",
                                                                             include=["snapshots"])]

    # blocks staged for the same blob name in two containers, committed in one
    for container in ("alpha", "beta"):
        blob = service.get_blob_client(container, "blocks/x.bin")
        blob.stage_block(_block_id("b001"), f"{container}-1".encode())
        blob.stage_block(_block_id("b002"), f"{container}-2".encode())
    alpha_x = service.get_blob_client("alpha", "blocks/x.bin")
    alpha_x.commit_block_list([BlobBlock(_block_id("b002")), BlobBlock(_block_id("b001"))])
    beta_x = service.get_blob_client("beta", "blocks/x.bin")
    got["uncommitted_listing"] = [
        [b.name for b in service.get_container_client(c).list_blobs(name_starts_with="blocks/",
                                                                   include=["uncommittedblobs"])]
        for c in ("alpha", "beta")]
    got["block_lists"] = [
        [[b.id for b in part] for part in blob.get_block_list("all")] for blob in (alpha_x, beta_x)]
    # an id of another length beside uncommitted ones is refused (Azure: InvalidBlobOrBlock)
    got["other_length"] = _outcome(lambda: beta_x.stage_block(_block_id("b3"), b"short id") and None)
    got["restaged"] = _outcome(lambda: beta_x.stage_block(_block_id("b001"), b"beta-1 again") and None)
    beta_x.commit_block_list([BlobBlock(_block_id("b001"))])
    got["blocks_read"] = [read("alpha", "blocks/x.bin"), read("beta", "blocks/x.bin")]

    # deletes, conditions and leases on one container leave the same name in the others alone
    gone = NAMES[3]
    service.get_blob_client("alpha", gone).delete_blob()
    got["deleted"] = [read("alpha", gone), read("beta", gone)]
    flat = service.get_blob_client("beta", "flat/IMG_001.jpg")
    got["if_match"] = [
        _outcome(lambda: flat.upload_blob(b"new", overwrite=True, etag='"0x0"', match_condition=MatchConditions.IfNotModified)),
        _outcome(lambda: flat.upload_blob(b"new", overwrite=True, etag=flat.get_blob_properties().etag,
                                          match_condition=MatchConditions.IfNotModified) and None),
        read("beta", "flat/IMG_001.jpg"), read("alpha", "flat/IMG_001.jpg")]
    lease = service.get_blob_client("gamma", NAMES[0]).acquire_lease(lease_duration=-1)
    got["leased"] = [
        _outcome(lambda: service.get_blob_client("gamma", NAMES[0]).upload_blob(b"x", overwrite=True) and None),
        _outcome(lambda: service.get_blob_client("alpha", NAMES[0]).upload_blob(b"y", overwrite=True) and None),
        read("alpha", NAMES[0])]
    lease.release()
    service.delete_container("gamma")
    got["containers"] = sorted(c.name for c in service.list_containers())
    got["after_delete"] = [read("gamma", NAMES[0]), read("beta", NAMES[0])]
    got["final_listing"] = walk(connection, "alpha", None, None, 5000)
    return got


def test_devhosts_azurite_answers_every_request_as_the_stock_one(stock_azurite: Azurite, azurite: Azurite) -> None:
    assert azurite_executable("blob", stock=True).name == "azurite-blob"
    assert stock_azurite.pids["blob"] != azurite.pids["blob"]
    want = _session(stock_azurite.connection_string)
    got = _session(azurite.connection_string)
    for step in want:
        assert got[step] == want[step], step
    # the sequence reaches the cases it is about (stock's own answers, so a change in Azurite shows here)
    assert want["reads"][:3] == [f"{c}:{NAMES[0]}".encode() for c in ("alpha", "beta", "gamma")]
    assert ("error", 404, "BlobNotFound") in want["reads"]  # gamma holds a fifth of the names
    assert want["snapshot"] == [b"alpha:top.jpg v2", b"alpha:top.jpg", b"beta:top.jpg"]
    # a blob and its snapshot (listed in the order stock Azurite stores them, which devhost's keeps; Azure lists
    # snapshots first: nothing of trapbatch lists snapshots)
    assert sorted(want["with_snapshots"]) == [("top.jpg", False), ("top.jpg", True)]
    assert want["block_lists"] == [[[_block_id("b002"), _block_id("b001")], []],
                                   [[], [_block_id("b001"), _block_id("b002")]]]
    assert want["other_length"] == ("error", 400, "InvalidBlobOrBlock")
    assert want["blocks_read"] == [b"alpha-2alpha-1", b"beta-1 again"]
    assert want["deleted"] == [("error", 404, "BlobNotFound"), f"beta:{NAMES[3]}".encode()]
    assert want["if_match"][0] == ("error", 412, "ConditionNotMet") and want["if_match"][2] == b"new"
    assert want["leased"][0] == ("error", 412, "LeaseIdMissing") and want["leased"][2] == b"y"
    assert want["after_delete"] == [("error", 404, "ContainerNotFound"), f"beta:{NAMES[0]}".encode()]
    assert sum(len(page[0]) for page in want["final_listing"]) == len(NAMES)  # one deleted, one blocks/x.bin


def _harness(*args: str) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: Azurite needs Node 20+ (see README)", pytrace=False)
    proc = subprocess.run([node, str(HARNESS), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_lookups_start_from_the_index_of_names_and_listings_from_the_containers() -> None:
    """Which index LokiJS starts each of Azurite's queries from (it uses the first field's only): stock, the
    account's (every blob has the same); devhost's, the blob name's, a block's blob name's, a listing's container's.
    The store's own methods answer the same either way (lookups of names in three containers, snapshots, blocks in
    their stored order, listings page by page with and without snapshots, uncommitted blobs and a delimiter)."""
    stock, fixed = _harness("stock"), _harness("fixed")
    assert stock["used"] == {"getBlob": "accountName", "stageBlock": "accountName", "listBlobs": "accountName"}
    assert fixed["used"] == {"getBlob": "name", "stageBlock": "blobName", "listBlobs": "containerName"}
    assert fixed["answers"] == stock["answers"]
    assert ["beta", "cam2/img 0299.jpg", '"beta-299"'] in stock["answers"]["getBlob"]
    assert stock["answers"]["stageBlock"] == [33, [34, 24, 14, 4]]  # blocks come back newest first, both ways
    assert len(stock["answers"]["listBlobs"]) > 40
