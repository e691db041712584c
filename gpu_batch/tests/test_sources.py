"""Blob mode end to end against Azurite: manifest, images and a ``blob://`` model from storage, results to storage,
then a resume from the stored partial results."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from gpu_batch import layout
from gpu_batch.manifest import ShardManifest
from gpu_batch.tests.conftest import run_worker_cli, summary_line
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker.sources import BlobImageSource, LocalFolderSource, SourceError


def test_blob_shard_end_to_end_with_resume(storage_connection: str, unique_name: str, checkpoint: Path,
                                           tmp_path: Path) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    images_c, state_c = service.create_container(unique_name + "img"), service.create_container(unique_name + "st")
    names = [f"site A/cam {i}/IMG_{i:04d}.JPG" for i in range(6)] + ["site A/broken.jpg", "site A/absent.jpg"]
    for i, name in enumerate(names[:6]):
        images_c.upload_blob(name, jpeg_bytes(textured(400, 300, 60 + i)))
    images_c.upload_blob("site A/broken.jpg", b"\xff\xd8\xff garbage")
    state_c.upload_blob("models/md_test.pt", checkpoint.read_bytes())
    out_blob = layout.attempt_results_blob("task-b", "s1", 1)
    manifest = ShardManifest(task_id="task-b", shard_id="s1", attempt=1, source_container=images_c.container_name,
                             images=tuple(names), output_container=state_c.container_name, output_blob=out_blob,
                             model=f"blob://{state_c.container_name}/models/md_test.pt", merge_view_threshold=0.2)
    state_c.upload_blob(layout.manifest_blob("task-b", "s1", 1), json.dumps(manifest.to_dict()))
    # A previous attempt already did two images (one of them a failure, which must be retried).
    earlier = {"images": [{"file": names[0], "detections": [{"category": "1", "conf": 0.5, "bbox": [0, 0, 1, 1]}]},
                          {"file": names[1], "failure": "image access failure", "detections": None}],
               "detection_categories": {"1": "animal"}, "info": {}}
    state_c.upload_blob(out_blob, json.dumps(earlier))
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    proc = run_worker_cli(["--manifest-container", state_c.container_name, "--manifest-blob",
                           layout.manifest_blob("task-b", "s1", 1), "--device", "cpu", "--workers", "8"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_line(proc)
    assert summary == {**summary, "images": 8, "skipped_resumed": 1, "done": 7, "failed": 2}
    doc = json.loads(state_c.download_blob(out_blob).readall())
    by_file = {e["file"]: e for e in doc["images"]}
    assert set(by_file) == set(names)
    assert by_file[names[0]] == earlier["images"][0]  # resumed entry kept as is
    assert "failure" not in by_file[names[1]]  # retried and now fine
    assert by_file["site A/broken.jpg"]["failure"] == "image access failure"
    assert by_file["site A/absent.jpg"]["failure"] == "image access failure"
    assert [by_file[n]["failure_reason"] for n in ("site A/broken.jpg", "site A/absent.jpg")] == ["undecodable",
                                                                                               "not_found"]
    assert summary["retryable"] == 0 and summary["failure_reasons"] == {"not_found": 1, "undecodable": 1}
    # after its last flush, the coverage summary: tied to the results' and the manifest's ETags as stored
    from gpu_batch.manifest import read_coverage_summary

    covered = read_coverage_summary(state_c.download_blob(layout.attempt_coverage_blob("task-b", "s1", 1)).readall())
    assert covered is not None and covered.matches(str(state_c.get_blob_client(out_blob).get_blob_properties().etag))
    manifest_props = state_c.get_blob_client(layout.manifest_blob("task-b", "s1", 1)).get_blob_properties()
    assert covered.manifest_etag == str(manifest_props.etag).strip('"')
    assert (covered.images, covered.final, covered.permanent, covered.retryable, covered.unwritten) == (8, 8, 2, (), ())
    # and the merge's view of those results (gpu_batch.formats.mergeview): the same ETags, the task's threshold
    from gpu_batch.formats.mergeview import read_view

    view = read_view(state_c.download_blob(layout.attempt_view_blob("task-b", "s1", 1)).readall())
    assert view is not None and view.matches("task-b", 0.2, str(state_c.get_blob_client(out_blob).get_blob_properties()
                                                                 .etag), str(manifest_props.etag))
    assert view.counts["images"] == 8 and view.counts["failed"] == 2 and view.json.count(b"\n  {") == 8
    # cached per blob version (loader._cached_blob_model): <name>@<ETag>
    cached = list((tmp_path / "cache" / "blob" / state_c.container_name / "models").glob("md_test.pt@*"))
    assert len(cached) == 1 and cached[0].is_file()


def test_blob_source_missing_blob_is_source_error(storage_connection: str, unique_name: str) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    service.create_container(unique_name)
    with pytest.raises(SourceError, match="cannot download"):
        BlobImageSource(service, unique_name).fetch("nope.jpg")


def test_local_source_refuses_paths_outside_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="outside the image root"):
        LocalFolderSource(tmp_path / "root").fetch("../secret.jpg")


# --- failure reasons: what the next attempt may retry --------------------------------------------------------------

def test_blob_source_classifies_storage_errors_into_retryable_and_permanent() -> None:
    from azure.core import exceptions as az

    class Response:
        def __init__(self, status: int) -> None:
            self.status_code, self.reason = status, "x"
            self.headers: dict[str, str] = {}

        def text(self, encoding: str | None = None) -> str:
            return ""

    def http(status: int, cls: type = az.HttpResponseError) -> Exception:
        return cls(message=f"HTTP {status}", response=Response(status))  # type: ignore[no-any-return]

    def archived(code: str) -> Exception:
        """A read of a blob in the Archive tier: 409 with the error code the storage SDK sets on what it raises
        (its ``process_storage_error``: ``error.error_code = StorageErrorCode(x-ms-error-code)``)."""
        from azure.storage.blob._shared.models import StorageErrorCode

        error = az.ResourceExistsError(message="HTTP 409", response=Response(409))
        error.error_code = StorageErrorCode(code)
        return error

    cases: list[tuple[BaseException, str]] = [
        (http(403, az.ClientAuthenticationError), "auth"), (http(401), "auth"),
        (az.ClientAuthenticationError("no token could be obtained"), "auth"),
        (http(429), "throttled"), (http(503), "throttled"),
        (az.ServiceRequestTimeoutError("connect timed out"), "timeout"),
        (az.ServiceResponseTimeoutError("read timed out"), "timeout"), (http(504), "timeout"),
        (TimeoutError("socket"), "timeout"),
        (az.ServiceResponseError("connection reset"), "download"), (http(500), "download"),
        (az.IncompleteReadError("short read"), "download"), (ConnectionResetError("reset"), "download"),
        (http(404, az.ResourceNotFoundError), "not_found"),
        (archived("BlobArchived"), "archived"), (archived("BlobBeingRehydrated"), "archived"),
    ]
    for exc, reason in cases:
        class Container:
            def download_blob(self, name: str, max_concurrency: int = 1) -> Any:
                raise exc

        class Service:
            def get_container_client(self, container: str) -> Container:
                return Container()

        with pytest.raises(SourceError) as info:
            BlobImageSource(Service(), "c").fetch("x.jpg")
        assert (info.value.reason, info.value.retryable) == (reason, reason not in ("not_found", "archived")), exc


def test_blob_source_missing_blob_and_refused_read_against_azurite(storage_connection: str, unique_name: str) -> None:
    """The real protocol: a missing blob is permanent; a SAS that may list but not read gets 403, retryable."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    service = BlobServiceClient.from_connection_string(storage_connection)
    container = service.create_container(unique_name)
    container.upload_blob("there.jpg", jpeg_bytes(textured(64, 48, 1)))
    with pytest.raises(SourceError) as gone:
        BlobImageSource(service, unique_name).fetch("nope.jpg")
    assert gone.value.reason == "not_found" and not gone.value.retryable
    sas = generate_container_sas(str(service.account_name), unique_name, account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    listing_only = BlobServiceClient(service.url, credential=sas)
    assert [b.name for b in listing_only.get_container_client(unique_name).list_blobs()] == ["there.jpg"]
    with pytest.raises(SourceError) as refused:
        BlobImageSource(listing_only, unique_name).fetch("there.jpg")
    assert refused.value.reason == "auth" and refused.value.retryable and "403" in str(refused.value)


def test_local_source_reasons(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dir.jpg").mkdir(parents=True)
    source = LocalFolderSource(root)
    for name in ("absent.jpg", "dir.jpg", "../outside.jpg"):
        with pytest.raises(SourceError) as info:
            source.fetch(name)
        assert info.value.reason == "not_found", name


def test_a_resubmitted_attempt_writes_the_view_of_the_whole_shard(storage_connection: str, unique_name: str,
                                                                 checkpoint: Path, tmp_path: Path) -> None:
    """Attempt 2 runs only what attempt 1 left (a retryable failure, an image never written); its manifest's
    ``merge_view_basis`` names the first manifest and attempt 1's results, so its view covers all four images, names
    attempt 1's results by their ETag, and holds what the merge makes of both attempts; its export lines carry the
    image list's rows, read from the shard's list document that ``merge_view_list`` names (the view names its ETag)."""
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.entries import merge_entries
    from gpu_batch.formats.mergeview import ShardFormatter, read_view
    from gpu_batch.manifest import ViewBasis, ViewList

    service = BlobServiceClient.from_connection_string(storage_connection)
    images_c, state_c = service.create_container(unique_name + "img"), service.create_container(unique_name + "st")
    names = [f"cam/IMG_{i}.JPG" for i in range(4)]
    for i, name in enumerate(names):
        images_c.upload_blob(name, jpeg_bytes(textured(320, 240, 30 + i)))
    state_c.upload_blob("models/md_test.pt", checkpoint.read_bytes())
    common = dict(task_id="task-w", shard_id="s2", source_container=images_c.container_name,
                  output_container=state_c.container_name, model=f"blob://{state_c.container_name}/models/md_test.pt",
                  merge_view_threshold=0.2,
                  merge_view_list=ViewList(layout.shard_list_blob("task-w", "s2"), ("season", "site")))
    state_c.upload_blob(layout.shard_list_blob("task-w", "s2"), json.dumps({"not_found": [], "metadata": {
        n: {"site": f"J0{i}", "season": "S1, wet"} for i, n in enumerate(names)}}))
    first = ShardManifest(attempt=1, images=tuple(names), output_blob=layout.attempt_results_blob("task-w", "s2", 1),
                          **common)  # type: ignore[arg-type]
    state_c.upload_blob(layout.manifest_blob("task-w", "s2", 1), json.dumps(first.to_dict()))
    done = [{"file": names[0], "detections": [{"category": "1", "conf": 0.6, "bbox": [0.1, 0.1, 0.2, 0.2]}]},
            {"file": names[1], "detections": []},
            {"file": names[2], "failure": "image access failure", "detections": None, "failure_kind": "retryable",
             "failure_reason": "download"}]
    state_c.upload_blob(first.output_blob, json.dumps({"images": done}))
    again = ShardManifest(attempt=2, images=tuple(names[2:]),
                          output_blob=layout.attempt_results_blob("task-w", "s2", 2),
                          merge_view_basis=ViewBasis(layout.manifest_blob("task-w", "s2", 1), (first.output_blob,)),
                          **common)  # type: ignore[arg-type]
    state_c.upload_blob(layout.manifest_blob("task-w", "s2", 2), json.dumps(again.to_dict()))
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    proc = run_worker_cli(["--manifest-container", state_c.container_name, "--manifest-blob",
                           layout.manifest_blob("task-w", "s2", 2), "--device", "cpu", "--workers", "2"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary_line(proc)["done"] == 2

    def etag(name: str) -> str:
        return str(state_c.get_blob_client(name).get_blob_properties().etag)

    assert state_c.get_blob_client(layout.attempt_view_blob("task-w", "s2", 1)).exists() is False
    view = read_view(state_c.download_blob(layout.attempt_view_blob("task-w", "s2", 2)).readall())
    assert view is not None
    assert view.matches("task-w", 0.2, etag(again.output_blob), etag(layout.manifest_blob("task-w", "s2", 1)),
                        {first.output_blob: etag(first.output_blob)})
    attempts = [jsonio.loads(state_c.download_blob(name).readall())["images"]
                for name in (first.output_blob, again.output_blob)]
    merged, missing = merge_entries(names, attempts)
    assert missing == 0 and view.counts["images"] == 4 and view.counts["failed"] == 0
    assert ShardFormatter("task-w", 0.2).add_shard(merged) == (view.json, view.csv)
    assert (view.list_etag, view.list_columns) == (etag(layout.shard_list_blob("task-w", "s2")).strip('"'),
                                                   ("season", "site"))
    assert view.zooniverse is not None and view.zooniverse.rows.count(b',"S1, wet",J0') == 4


def test_blob_source_never_reads_a_name_with_a_dot_folder_as_another_blob(storage_connection: str,
                                                                          unique_name: str) -> None:
    """``x/../y.jpg`` is a blob of its own in Azure Storage (a REST client sending ``%2E%2E`` creates it), but the
    SDK's URL goes through urllib3, which resolves the dot folder: a SAS (or a bearer token, which does not sign the
    path either) read ``y.jpg`` instead, and its detections were written under the other name. A manifest listed
    before the app passed such names over still names them: the worker refuses them, permanently."""
    from datetime import datetime, timedelta, timezone

    import requests
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    service = BlobServiceClient.from_connection_string(storage_connection)
    container = service.create_container(unique_name)
    container.upload_blob("y.jpg", jpeg_bytes(textured(64, 48, 1)))
    sas = generate_container_sas(str(service.account_name), unique_name, account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(read=True, create=True, write=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    made = requests.put(f"{container.url}/x/%2E%2E/y.jpg?{sas}", data=b"the dot-folder blob", timeout=30,
                        headers={"x-ms-blob-type": "BlockBlob"})
    assert made.status_code == 201, made.text
    assert sorted(b.name for b in container.list_blobs()) == ["x/../y.jpg", "y.jpg"]
    by_sas = BlobServiceClient(service.url, credential=sas)
    # the SDK alone reads the wrong blob: the reason for the refusal below
    assert by_sas.get_blob_client(unique_name, "x/../y.jpg").download_blob().readall() != b"the dot-folder blob"
    with pytest.raises(SourceError) as refused:
        BlobImageSource(by_sas, unique_name).fetch("x/../y.jpg")
    assert refused.value.reason == "not_found" and not refused.value.retryable and "another blob" in str(refused.value)


# --- the images' account itself gone: DNS says its host does not exist ---------------------------------------------

from gpu_batch.tests.test_storage_refs import resolver  # noqa: E402,F401 - the fixture: getaddrinfo for *.invalid
from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, NO_SUCH_NAME, RESOLVER_DOWN  # noqa: E402

PARTNER_SAS = "sv=2024-01-01&sig=abc"


@pytest.mark.parametrize("errno, text, gone", [(*NO_SUCH_NAME[0], True), (*NO_SUCH_NAME[1], True),
                                               (*RESOLVER_DOWN, False)])
def test_a_read_from_an_account_whose_host_does_not_exist_is_permanent_and_names_it(
        errno: int, text: str, gone: bool, resolver: Any) -> None:
    """The real client (the storage SDK's retries off) on an account whose host DNS says does not exist (deleted after
    enumeration, misspelt): ``account_not_found``, retryable (the next attempt reads it again), naming the host; with
    such reads lasting ``gone_after_s`` (0 here) the source remembers it, naming what to check (``raise_if_gone``: the
    worker stops the shard). A resolver that did not answer (EAI_AGAIN) and a refused connection stay a retryable
    ``download`` that stops nothing."""
    from devhost.azurite import PortReservation
    from gpu_batch.worker.sources import SourceGone

    resolver(errno, text)
    source = BlobImageSource(BlobServiceClient(NO_SUCH_ACCOUNT, credential=PARTNER_SAS, retry_total=0), "images",
                             gone_after_s=0)
    with pytest.raises(SourceError) as failed:
        source.fetch("cam1/IMG_0001.JPG")
    said = str(failed.value)
    assert "sig=" not in said
    if not gone:
        assert (failed.value.reason, failed.value.retryable) == ("download", True), said
        source.raise_if_gone()  # nothing to stop for
    else:
        assert (failed.value.reason, failed.value.retryable) == ("account_not_found", True), said
        assert "nosuchaccount.invalid does not resolve" in said, said
        with pytest.raises(SourceGone, match="nosuchaccount.invalid does not resolve") as stopped:
            source.raise_if_gone()
        assert "source_account_url" in str(stopped.value) and "exists" in str(stopped.value), stopped.value
    reservation = PortReservation(1)  # held, never listening: connection refused
    try:
        refused = BlobImageSource(BlobServiceClient(f"https://127.0.0.1:{reservation.ports[0]}",
                                                    credential=PARTNER_SAS, retry_total=0), "images")
        with pytest.raises(SourceError) as failed:
            refused.fetch("cam1/IMG_0001.JPG")
        assert (failed.value.reason, failed.value.retryable) == ("download", True), failed.value
        refused.raise_if_gone()
    finally:
        reservation.close()


@pytest.mark.parametrize("errno, text, gone", [(*NO_SUCH_NAME[0], True), (*RESOLVER_DOWN, False)])
def test_the_worker_stops_a_shard_whose_images_account_does_not_exist_with_exit_5(
        errno: int, text: str, gone: bool, resolver: Any, storage_connection: str, unique_name: str,
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Blob mode, the source account (by SAS, the storage SDK's own retries, their waits skipped) deleted after the
    task's enumeration: the shard stops at its first result and exits 5 (unfixable: the orchestration ends the task at
    the second time, ``orchestrations.shards``) with the host and what to check as its last error line, its results
    so far flushed and the images it did not reach left missing. Before, every image failed as a retryable
    ``download`` (each after the retries) and each attempt resubmitted them all. The images whose reads failed so stay
    retryable (not final: a blip, or an account restored, reads them again; ``GONE_AFTER_S`` is 0 here). EAI_AGAIN
    still runs the shard to its end with retryable failures (exit 0)."""
    from azure.core.pipeline.transport import HttpTransport

    from gpu_batch import exit_codes
    from gpu_batch.manifest import read_coverage_summary
    from gpu_batch.storage_refs import LOCAL_SECRETS_ENV
    from gpu_batch.worker import __main__ as worker

    from gpu_batch.worker import sources

    resolver(errno, text)
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)  # the storage SDK's retry waits
    monkeypatch.setattr(sources, "GONE_AFTER_S", 0.0)  # the first such read stops the shard
    service = BlobServiceClient.from_connection_string(storage_connection)
    state_c = service.create_container(unique_name)
    state_c.upload_blob("models/md_test.pt", checkpoint.read_bytes())
    names = [f"cam {i % 3}/IMG_{i:04d}.JPG" for i in range(24)]
    out_blob = layout.attempt_results_blob("task-g", "s1", 1)
    manifest = ShardManifest(task_id="task-g", shard_id="s1", attempt=1, source_container="images",
                             source_account_url=NO_SUCH_ACCOUNT, source_credential_secret="partner-sas",
                             images=tuple(names), output_container=unique_name, output_blob=out_blob,
                             model=f"blob://{unique_name}/models/md_test.pt")
    state_c.upload_blob(layout.manifest_blob("task-g", "s1", 1), json.dumps(manifest.to_dict()))
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"partner-sas": PARTNER_SAS}), encoding="utf-8")
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, LOCAL_SECRETS_ENV: str(secrets),
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    code = worker.main(["--manifest-container", unique_name, "--manifest-blob", layout.manifest_blob("task-g", "s1", 1),
                        "--device", "cpu", "--workers", "2"], env)
    entries = json.loads(state_c.download_blob(out_blob).readall())["images"]
    covered = read_coverage_summary(state_c.download_blob(layout.attempt_coverage_blob("task-g", "s1", 1)).readall())
    assert covered is not None
    if not gone:
        assert code == exit_codes.OK, caplog.text
        assert {(e["failure_reason"], e["failure_kind"]) for e in entries} == {("download", "retryable")}
        assert len(entries) == len(names) and covered.final == 0
        return
    assert code == exit_codes.SOURCE and exit_codes.unfixable_reason(code), (code, caplog.text)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "nosuchaccount.invalid does not resolve" in errors[-1], errors
    assert "source_account_url" in errors[-1] and "stopped after" in errors[-1], errors
    assert "sig=" not in caplog.text
    assert 1 <= len(entries) < len(names), entries
    assert {(e["failure_reason"], e["failure_kind"]) for e in entries} == {("account_not_found", "retryable")}
    assert covered.images == len(names) and covered.final == 0  # every image runs again at the next attempt


class _Blips:
    """A container client whose reads fail as ``failure`` (the storage SDK's own exception) while ``down``."""

    def __init__(self, failure: BaseException) -> None:
        self.failure, self.down = failure, True

    def get_container_client(self, name: str) -> "_Blips":
        return self

    def download_blob(self, name: str, max_concurrency: int = 1) -> Any:
        if self.down:
            raise self.failure
        return type("Downloader", (), {"readall": lambda self: b"jpeg bytes"})()


def _no_such_name_failure() -> BaseException:
    """What the real client raises reading from an account whose host DNS says does not exist (retries off)."""
    client = BlobServiceClient(NO_SUCH_ACCOUNT, credential=PARTNER_SAS, retry_total=0)
    try:
        client.get_container_client("images").download_blob("cam1/IMG_0001.JPG").readall()
    except Exception as exc:  # noqa: BLE001 - the one the SDK raises, whatever its type
        return exc
    raise AssertionError("the read did not fail")


def test_a_host_missing_for_a_moment_neither_stops_the_shard_nor_fails_its_images_for_good(resolver: Any) -> None:
    """On Azure a lookup of an account that exists can say "no such name" for a while (``sources.GONE_AFTER_S``:
    Azure/azure-storage-python#541, up to ~120 s). Such reads fail their images as ``account_not_found`` but
    retryable, so the next attempt reads them again (and a restored account's images are read, not kept failed); the
    shard stops (``SourceGone``) only once such reads have failed for ``GONE_AFTER_S`` with none succeeding in
    between. Before, the first one stopped the shard (exit 5, the shard's first "unfixable" exit) and failed its
    image for good."""
    from gpu_batch.manifest import FAILURE_REASONS, RETRYABLE
    from gpu_batch.worker.sources import GONE_AFTER_S, SourceGone

    resolver(*NO_SUCH_NAME[0])
    assert GONE_AFTER_S >= 120 and FAILURE_REASONS["account_not_found"] == RETRYABLE
    blips = _Blips(_no_such_name_failure())
    now = [1000.0]
    source = BlobImageSource(blips, "images", clock=lambda: now[0])
    for step in (0.0, 60.0, GONE_AFTER_S - 61.0):  # a blip of just under GONE_AFTER_S
        now[0] += step
        with pytest.raises(SourceError) as failed:
            source.fetch("cam1/IMG_0001.JPG")
        assert (failed.value.reason, failed.value.retryable) == ("account_not_found", True), failed.value
        source.raise_if_gone()  # not yet
    blips.down = False
    now[0] += 1.0
    assert source.fetch("cam1/IMG_0002.JPG") == b"jpeg bytes"  # the host resolves again: the blip is over
    blips.down = True
    now[0] += 5.0
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0003.JPG")
    now[0] += GONE_AFTER_S - 1.0  # counted from the failure after the success, not from the first blip
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0004.JPG")
    source.raise_if_gone()
    now[0] += 1.0
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0005.JPG")
    with pytest.raises(SourceGone, match="nosuchaccount.invalid does not resolve") as stopped:
        source.raise_if_gone()
    assert "source_account_url" in str(stopped.value) and "IMG_0005" in str(stopped.value), stopped.value


def test_a_read_the_service_answered_says_the_host_resolves_as_a_success_does(resolver: Any) -> None:
    """A 404 (or 403, or 500) came from the account's service, so its host resolved: the reads that found the host
    missing before it were a blip, as when a read succeeds. Only a success reset that count, so a shard of missing
    blobs between two blips over two minutes apart was stopped as if its account were gone (exit 5)."""
    from azure.core.exceptions import ResourceNotFoundError

    from gpu_batch.worker.sources import GONE_AFTER_S

    resolver(*NO_SUCH_NAME[0])
    blips = _Blips(_no_such_name_failure())
    now = [1000.0]
    source = BlobImageSource(blips, "images", clock=lambda: now[0])
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0001.JPG")  # a blip
    not_there = ResourceNotFoundError("The specified blob does not exist.")
    not_there.status_code = 404
    blips.failure = not_there
    now[0] += 30.0
    with pytest.raises(SourceError) as missing:
        source.fetch("cam1/IMG_0002.JPG")
    assert missing.value.reason == "not_found"
    assert not source.host_missing()  # the service answered: its host resolves
    blips.failure = _no_such_name_failure()
    now[0] += GONE_AFTER_S
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0003.JPG")  # another blip, over GONE_AFTER_S after the first
    source.raise_if_gone()  # counted from this one, not from the blip before the service's answer


class _FakeTime:
    """A clock that moves only when the worker sleeps: ``BlobImageSource``'s class ``monotonic`` and ``sleep``, which
    the sources a worker run builds take (the SDK's own retry waits are skipped apart)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        monkeypatch.setattr(BlobImageSource, "monotonic", staticmethod(lambda: self.now))
        monkeypatch.setattr(BlobImageSource, "sleep", staticmethod(self._sleep))

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _run_small_shard(storage_connection: str, unique_name: str, checkpoint: Path, tmp_path: Path,
                     account_url: str, secret: str, names: list[str], images_container: str) -> tuple[int, Any, Any]:
    """Run a shard of ``names`` in ``images_container`` of ``account_url`` (opened by ``secret``) through the
    worker's CLI entry; its exit code, its results' entries and its coverage summary."""
    from gpu_batch.manifest import read_coverage_summary
    from gpu_batch.storage_refs import LOCAL_SECRETS_ENV
    from gpu_batch.worker import __main__ as worker

    service = BlobServiceClient.from_connection_string(storage_connection)
    state_c = service.create_container(unique_name)
    state_c.upload_blob("models/md_test.pt", checkpoint.read_bytes())
    out_blob = layout.attempt_results_blob("task-h", "s1", 1)
    manifest = ShardManifest(task_id="task-h", shard_id="s1", attempt=1, source_container=images_container,
                             source_account_url=account_url, source_credential_secret="partner-sas",
                             images=tuple(names), output_container=unique_name, output_blob=out_blob,
                             model=f"blob://{unique_name}/models/md_test.pt")
    state_c.upload_blob(layout.manifest_blob("task-h", "s1", 1), json.dumps(manifest.to_dict()))
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"partner-sas": secret}), encoding="utf-8")
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, LOCAL_SECRETS_ENV: str(secrets),
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    code = worker.main(["--manifest-container", unique_name, "--manifest-blob", layout.manifest_blob("task-h", "s1", 1),
                        "--device", "cpu", "--workers", "2"], env)
    entries = json.loads(state_c.download_blob(out_blob).readall())["images"]
    covered = read_coverage_summary(state_c.download_blob(layout.attempt_coverage_blob("task-h", "s1", 1)).readall())
    return code, entries, covered


def test_a_small_shard_whose_account_is_gone_waits_out_gone_after_s_and_exits_5(
        resolver: Any, storage_connection: str, unique_name: str, checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A shard of 3 images whose account's host DNS says does not exist (getaddrinfo: gaierror -2) fails every read
    well within ``GONE_AFTER_S``: it does not end there, but asks DNS again every ``ASK_AGAIN_EVERY_S`` until
    ``GONE_AFTER_S`` have passed since the first such read, then stops as a longer shard does: exit 5 (which the
    orchestration takes as the account gone), results so far flushed, the host named in its last error line. Before,
    it exited 0 with 3 retryable failures, and so did every attempt: the task ended ``completed_with_errors`` with
    every image failed."""
    from azure.core.pipeline.transport import HttpTransport

    from gpu_batch import exit_codes
    from gpu_batch.worker.sources import ASK_AGAIN_EVERY_S, GONE_AFTER_S

    resolver(*NO_SUCH_NAME[0])
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)  # the storage SDK's retry waits
    clock = _FakeTime(monkeypatch)
    names = [f"cam 1/IMG_{i:04d}.JPG" for i in range(3)]
    code, entries, covered = _run_small_shard(storage_connection, unique_name, checkpoint, tmp_path, NO_SUCH_ACCOUNT,
                                              PARTNER_SAS, names, "images")
    assert code == exit_codes.SOURCE and exit_codes.unfixable_reason(code), (code, caplog.text)
    assert sum(clock.slept) == pytest.approx(GONE_AFTER_S) and max(clock.slept) <= ASK_AGAIN_EVERY_S, clock.slept
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "nosuchaccount.invalid does not resolve" in errors[-1], errors
    assert "source_account_url" in errors[-1] and "stopped after 3 of 3" in errors[-1], errors
    assert "sig=" not in caplog.text
    assert sorted(e["file"] for e in entries) == names
    assert {(e["failure_reason"], e["failure_kind"]) for e in entries} == {("account_not_found", "retryable")}
    assert covered is not None and covered.images == len(names) and covered.final == 0


def test_a_small_shard_whose_account_host_resolves_again_while_it_waits_reads_its_images(
        storage_connection: str, unique_name: str, checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The same small shard, but DNS finds the host again 30 s after the reads found it missing (a blip of the
    platform's, Azure/azure-storage-python#541): the wait sees it resolve, reads the 3 images again, and the shard
    completes with their detections (exit 0, nothing failed). The account is Azurite under a host name of the
    test's own ("gone-images", no dot: Azurite reads the account from the path), which getaddrinfo says does not
    exist until then."""
    import socket
    from datetime import datetime, timedelta, timezone
    from urllib.parse import urlsplit

    from azure.core.pipeline.transport import HttpTransport
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from gpu_batch import exit_codes

    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)  # the storage SDK's retry waits
    clock = _FakeTime(monkeypatch)
    service = BlobServiceClient.from_connection_string(storage_connection)
    images_c = service.create_container(unique_name + "img")
    names = [f"cam 1/IMG_{i:04d}.JPG" for i in range(3)]
    for i, name in enumerate(names):
        images_c.upload_blob(name, jpeg_bytes(textured(320, 240, 10 + i)))
    sas = generate_container_sas(str(service.account_name), images_c.container_name,
                                 account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    azurite = urlsplit(service.url)
    account_url = f"http://gone-images:{azurite.port}{azurite.path.rstrip('/')}"
    back_at = clock.now + 30.0
    real = socket.getaddrinfo
    asked: list[float] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "gone-images":
            asked.append(clock.now)
            if clock.now < back_at:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            host = azurite.hostname
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    code, entries, covered = _run_small_shard(storage_connection, unique_name, checkpoint, tmp_path, account_url, sas,
                                              names, images_c.container_name)
    assert code == exit_codes.OK
    assert clock.slept == [15.0, 15.0] and asked[-1] >= back_at, (clock.slept, asked)
    assert sorted(e["file"] for e in entries) == names
    assert not [e for e in entries if "failure" in e], entries
    assert covered is not None and covered.final == len(names)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # each image counted once, as read last
    assert summary == {**summary, "images": 3, "done": 3, "failed": 0, "retryable": 0, "failure_reasons": {}}


def test_the_wait_for_a_missing_host_ends_without_stopping_when_dns_does_not_answer(resolver: Any) -> None:
    """``wait_for_host`` waits only on reads that found the host missing (none: False at once, no sleep); when DNS
    then does not answer either way (EAI_AGAIN), ``GONE_AFTER_S`` pass without the account being called gone: the
    shard ends as it would have (False), nothing to stop for."""
    from gpu_batch.worker.sources import GONE_AFTER_S

    now, slept = [1000.0], list[float]()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    resolver(*NO_SUCH_NAME[0])
    blips = _Blips(_no_such_name_failure())
    source = BlobImageSource(blips, "images", clock=lambda: now[0], sleep=sleep)
    assert source.wait_for_host() is False and slept == []  # no read found the host missing
    with pytest.raises(SourceError):
        source.fetch("cam1/IMG_0001.JPG")
    assert source.host_missing()
    resolver(*RESOLVER_DOWN)
    assert source.wait_for_host() is False
    assert sum(slept) == pytest.approx(GONE_AFTER_S) and source.gone is None, slept
    source.raise_if_gone()


def test_a_shard_with_a_failure_of_another_reason_is_not_held() -> None:
    """Only a shard whose failures are all ``account_not_found`` waits for the host: a blob's 404 (or any other
    failure) says nothing of the account, and such a shard ends as it is."""
    from types import SimpleNamespace

    from gpu_batch.worker.__main__ import _failed_for_missing_host

    def entry(name: str, reason: str | None) -> dict[str, Any]:
        if reason is None:
            return {"file": name, "detections": []}
        return {"file": name, "failure": "image access failure", "detections": None, "failure_reason": reason,
                "failure_kind": "retryable" if reason == "account_not_found" else "permanent"}

    gone = [entry("a.jpg", "account_not_found"), entry("b.jpg", "account_not_found")]
    writer: Any = SimpleNamespace(snapshot=lambda: [*gone, entry("kept.jpg", "not_found"), entry("c.jpg", None)])
    assert _failed_for_missing_host(writer, ["a.jpg", "b.jpg", "c.jpg"]) == gone  # kept.jpg: an earlier attempt's
    writer = SimpleNamespace(snapshot=lambda: [*gone, entry("d.jpg", "not_found")])
    assert _failed_for_missing_host(writer, ["a.jpg", "b.jpg", "d.jpg"]) == []


def test_the_workers_dns_grace_is_the_one_storage_refs_defines() -> None:
    """``sources.GONE_AFTER_S`` / ``ASK_AGAIN_EVERY_S`` are ``storage_refs.HOST_GONE_AFTER_S`` / ``HOST_ASK_EVERY_S``
    (the same objects, not equal copies): the platform's ~120-s "no such name" blip is one number, cited once, and a
    change of it reaches the image reads as well as the app's and the worker's other re-asks. Tests still set the
    worker's own name (``monkeypatch.setattr(sources, "GONE_AFTER_S", ...)``), which ``BlobImageSource`` reads."""
    from gpu_batch import storage_refs
    from gpu_batch.worker import sources

    assert sources.GONE_AFTER_S is storage_refs.HOST_GONE_AFTER_S
    assert sources.ASK_AGAIN_EVERY_S is storage_refs.HOST_ASK_EVERY_S


def _stopped_in_a_re_read(tmp_path: Path) -> tuple[Any, list[str]]:
    """A shard's writer after a first run whose 3 reads all found the host missing, the host back (the 3 taken out of
    the counts, ``ShardSummary.forget``, and read again) and the re-read's first result written: where a stop comes."""
    from gpu_batch.worker.pipeline import ShardSummary
    from gpu_batch.worker.results import FileSink, ResultWriter

    def failed(name: str) -> dict[str, Any]:
        return {"file": name, "failure": "image access failure", "detections": None,
                "failure_reason": "account_not_found", "failure_kind": "retryable"}

    todo = ["a.jpg", "b.jpg", "c.jpg"]
    writer = ResultWriter(FileSink(tmp_path / "out.json"), {"detector": "test"}, flush_seconds=60)
    summary = ShardSummary(images=len(todo))
    writer.start()
    for name in todo:  # the first run: every read found the host missing
        writer.add(failed(name))
        summary.done, summary.failed = summary.done + 1, summary.failed + 1
    summary.forget(writer.snapshot())  # the host resolves again: all 3 are read again
    writer.add(failed("a.jpg"))  # the re-read's first result, then the stop
    summary.done, summary.failed = summary.done + 1, summary.failed + 1
    return writer, todo


def test_a_shard_stopped_partway_through_its_re_read_counts_every_image_it_has_a_result_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The host came back, the worker read the 3 failed images again, and the first re-read found the host missing
    for good (``SourceGone``): the shard's results hold all 3 images, and its last error line says "stopped after 3
    of 3". Before, it counted ``summary.done`` (1: the re-read's one result), as if the other 2 had never been read."""
    from gpu_batch.worker.__main__ import EXIT_SOURCE, _source_gone
    from gpu_batch.worker.sources import SourceGone

    writer, todo = _stopped_in_a_re_read(tmp_path)
    outcome = _source_gone(writer, "task=t shard=s attempt=1", todo, SourceGone("nosuchaccount.invalid is gone"))
    assert outcome.code == EXIT_SOURCE
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "stopped after 3 of 3 images" in errors[-1], errors


def test_a_shard_stopped_on_request_partway_through_its_re_read_counts_every_image_it_has_a_result_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As for ``SourceGone`` above, but a stop request (``ShardCancelled``) in the re-read: "stopped after 3 of 3"
    too (a warning, not an error)."""
    from gpu_batch.worker.__main__ import EXIT_CANCELLED, ShardCancelled, _stopped

    writer, todo = _stopped_in_a_re_read(tmp_path)
    outcome = _stopped(writer, "task=t shard=s attempt=1", todo, ShardCancelled("the client went away"))
    assert outcome.code == EXIT_CANCELLED
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "stopped after 3 of 3 images" in warnings[-1], warnings


class _ScriptedHost(BlobImageSource):
    """A blob source whose "host missing" answers and ``wait_for_host`` results are scripted (no storage, no DNS):
    ``wait_for_host`` called past its script fails the test."""

    def __init__(self, missing: list[bool], resolves: list[bool]) -> None:  # noqa: D107 - no service to open
        self.gone_after_s = 120.0
        self._missing, self._resolves = list(missing), list(resolves)
        self.checks: list[Any] = []

    def host_missing(self) -> bool:
        return self._missing.pop(0) if self._missing else False

    def wait_for_host(self, check: Any = None) -> bool:
        self.checks.append(check)
        return self._resolves.pop(0)


def _gone_entry(name: str) -> dict[str, Any]:
    return {"file": name, "failure": "image access failure", "detections": None,
            "failure_reason": "account_not_found", "failure_kind": "retryable"}


def _wait_scenario(source: Any, first: list[dict[str, Any]], rereads: list[list[dict[str, Any]]]
                   ) -> tuple[list[list[str]], Any]:
    """Run ``__main__._wait_for_missing_host`` on ``todo`` a.jpg, b.jpg whose first run wrote ``first``; each
    re-read writes the next of ``rereads`` and counts it as ``run_images`` would. The names each re-read asked for,
    and the summary."""
    from types import SimpleNamespace

    from gpu_batch.worker.__main__ import _wait_for_missing_host
    from gpu_batch.worker.pipeline import ShardSummary

    entries = {e["file"]: e for e in first}
    writer: Any = SimpleNamespace(snapshot=lambda: list(entries.values()))
    failed = [e for e in first if "failure" in e]
    summary = ShardSummary(images=2, done=len(first), failed=len(failed), retryable=len(failed),
                           failure_reasons={"account_not_found": len(failed)} if failed else {})
    asked: list[list[str]] = []

    def read_again(names: list[str]) -> None:
        asked.append(names)
        for entry in rereads.pop(0):
            entries[entry["file"]] = entry
            summary.done += 1
            if "failure" in entry:
                summary.failed, summary.retryable = summary.failed + 1, summary.retryable + 1
                summary.failure_reasons["account_not_found"] = summary.failure_reasons.get("account_not_found", 0) + 1

    _wait_for_missing_host(source, ["a.jpg", "b.jpg"], writer, summary, "t s a", shard_check, read_again)
    return asked, summary


def shard_check() -> None:
    """The shard's stop check (passed on to each wait; never stops here)."""


def test_a_host_that_goes_missing_again_during_the_re_read_is_waited_for_again_and_only_failures_are_read() -> None:
    """``_wait_for_missing_host``: the re-read of the images whose account's host was missing can find it missing
    again; the worker waits again and reads them once more (not once, leaving them failed), each wait honouring
    the shard's stop check; the image that succeeded is not read again (its result would be counted twice)."""
    source = _ScriptedHost(missing=[True, True, False], resolves=[True, True])
    asked, summary = _wait_scenario(source, [{"file": "a.jpg", "detections": []}, _gone_entry("b.jpg")],
                                    [[_gone_entry("b.jpg")], [{"file": "b.jpg", "detections": []}]])
    assert asked == [["b.jpg"], ["b.jpg"]]
    assert source.checks == [shard_check, shard_check]
    assert (summary.done, summary.failed, summary.retryable, summary.failure_reasons) == (2, 0, 0, {})


def test_no_re_read_when_the_wait_ends_without_the_host_or_a_failure_has_another_reason(tmp_path: Path) -> None:
    """The wait ending False (DNS did not answer either way for the whole grace) ends the shard as it is: nothing
    read again, the counts untouched. A shard with a failure of another reason does not wait at all (a wait holds
    it up to ``GONE_AFTER_S``), and a local folder has no host to wait for."""
    source = _ScriptedHost(missing=[True], resolves=[False])
    asked, summary = _wait_scenario(source, [_gone_entry("a.jpg"), _gone_entry("b.jpg")], [[]])
    assert asked == [] and (summary.done, summary.failed) == (2, 2) and len(source.checks) == 1
    other = {**_gone_entry("b.jpg"), "failure_reason": "not_found", "failure_kind": "permanent"}
    source = _ScriptedHost(missing=[True], resolves=[])
    asked, _ = _wait_scenario(source, [_gone_entry("a.jpg"), other], [[]])
    assert asked == [] and source.checks == []
    asked, _ = _wait_scenario(LocalFolderSource(tmp_path), [_gone_entry("a.jpg")], [[]])
    assert asked == []
