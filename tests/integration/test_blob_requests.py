"""Get Blob and Put Blob through the client's pipeline (``adapters.blob_requests``, what ``BlobStore.read_bytes`` and
``write_bytes`` use) against Azurite, side by side with the SDK: the same bytes, ETags and content type, the same
exceptions for a missing blob or container and for a refused credential, a SAS riding in the client's URL."""
from __future__ import annotations

import io
import tempfile
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerSasPermissions, generate_container_sas

from adapters import blob_requests, listing
from adapters.blobs import BlobStore, service_client
from adapters.compose import read_range


@pytest.fixture()
def store(storage_connection: str, unique_name: str) -> tuple[BlobStore, str]:
    s = BlobStore(service_client(storage_connection))
    s.ensure_container(unique_name)
    return s, unique_name


def test_written_and_read_as_the_sdk_writes_and_reads(store: tuple[BlobStore, str]) -> None:
    s, container = store
    data = "{\"name\": \"caf\u00e9/IMG 1.jpg\"}".encode()
    etag = s.write_bytes(container, "dir/doc é.json", data, "application/json")
    client = s.service.get_blob_client(container, "dir/doc é.json")
    props = client.get_blob_properties()
    assert etag == str(props.etag).strip('"') and props.content_settings.content_type == "application/json"
    assert props.blob_type == "BlockBlob" and props.size == len(data)
    assert s.read_bytes(container, "dir/doc é.json") == data == client.download_blob().readall()
    assert s.list_etags(container, "dir/") == {"dir/doc é.json": etag}  # the listing names the same ETag
    again = s.write_bytes(container, "dir/doc é.json", b"{}")  # replaces; a new ETag, the default content type
    assert again != etag and s.read_bytes(container, "dir/doc é.json") == b"{}"
    assert client.get_blob_properties().content_settings.content_type == "application/octet-stream"
    assert s.read_bytes(container, "dir/doc é.json") == b"{}"
    s.write_bytes(container, "empty", b"")
    assert s.read_bytes(container, "empty") == b""


def test_large_content_goes_through_the_sdks_upload(store: tuple[BlobStore, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s, container = store
    monkeypatch.setattr(blob_requests, "PUT_LIMIT", 10)
    with pytest.raises(ValueError, match="at most 10 bytes"):
        blob_requests.put_blob(s.service.get_blob_client(container, "big"), b"x" * 11)
    etag = s.write_bytes(container, "big", b"x" * 11, "text/plain")
    assert s.read_bytes(container, "big") == b"x" * 11 and etag == s.etag_or_none(container, "big")


def _failures(client: BlobClient) -> list[tuple[str, int | None, str | None]]:
    """How the SDK's download and Get Blob here fail on ``client``: class, status and error code of each."""
    seen = []
    for call in (lambda: client.download_blob().readall(), lambda: blob_requests.get_blob(client)):
        with pytest.raises(HttpResponseError) as raised:
            call()
        seen.append((type(raised.value).__name__, raised.value.status_code, getattr(raised.value, "error_code", None)))
    return seen


def test_missing_blobs_containers_and_refused_credentials_fail_as_with_the_sdk(store: tuple[BlobStore, str],
                                                                               storage_connection: str) -> None:
    s, container = store
    missing, fast = _failures(s.service.get_blob_client(container, "nothing-here"))
    assert missing == fast == ("ResourceNotFoundError", 404, "BlobNotFound")
    with pytest.raises(ResourceNotFoundError):
        s.read_bytes(container, "nothing-here")
    assert s.read_json_or_none(container, "nothing-here") is None
    sdk, fast = _failures(s.service.get_blob_client(container + "-gone", "x"))
    assert sdk == fast and fast[0] == "ResourceNotFoundError"

    s.write_bytes(container, "doc", b"1")
    service = BlobServiceClient.from_connection_string(storage_connection)
    key = service.credential.account_key
    expiry = datetime.now(timezone.utc) + timedelta(hours=1)

    def sas(**permission: bool) -> BlobClient:
        token = generate_container_sas(str(service.account_name), container, account_key=key,
                                       permission=ContainerSasPermissions(**permission), expiry=expiry)
        return BlobServiceClient(service.url, credential=token).get_blob_client(container, "doc")

    assert blob_requests.get_blob(sas(read=True)) == b"1"  # the SAS rides in the client's URL
    assert blob_requests.put_blob(sas(write=True), b"2")
    assert s.read_bytes(container, "doc") == b"2"
    sdk, fast = _failures(sas(list=True))  # a SAS that cannot read
    assert sdk == fast and fast[:2] == ("HttpResponseError", 403)
    with pytest.raises(HttpResponseError) as refused:
        blob_requests.put_blob(sas(read=True), b"3")
    assert refused.value.status_code == 403 and s.read_bytes(container, "doc") == b"2"
    wrong_key = BlobServiceClient(service.url, credential={"account_name": str(service.account_name),
                                                           "account_key": "A" * 88})
    sdk, fast = _failures(wrong_key.get_blob_client(container, "doc"))
    assert sdk == fast and fast[1] == 403


def test_ranges_read_as_the_sdks_ranged_download(store: tuple[BlobStore, str]) -> None:
    """``adapters.compose.read_range`` (views, search groups) sends Get Blob with ``x-ms-range``: the same bytes as
    ``download_blob(offset, length)`` inside, across and past the blob's end; the same errors beyond it."""
    s, container = store
    data = bytes(range(256)) * 40
    s.write_bytes(container, "view.bin", data)
    s.write_bytes(container, "empty.bin", b"")
    client = s.service.get_blob_client(container, "view.bin")
    for offset, length in ((0, 1), (0, len(data)), (100, 999), (len(data) - 3, 3), (len(data) - 3, 500),
                           (0, len(data) + 4096), (len(data), 5)):  # at the end: as the SDK, whatever the service says
        sdk = client.download_blob(offset=offset, length=length).readall()
        assert blob_requests.get_range(client, offset, length) == sdk == data[offset:offset + length]
        assert read_range(s, container, "view.bin", offset, length) == sdk
    assert blob_requests.get_range(client, 7, 0) == b""
    empty = s.service.get_blob_client(container, "empty.bin")
    for beyond, offset in ((client, len(data) + 10), (empty, 0)):
        with pytest.raises(HttpResponseError) as sdk_refused:
            beyond.download_blob(offset=offset, length=5).readall()
        with pytest.raises(HttpResponseError) as refused:
            blob_requests.get_range(beyond, offset, 5)
        assert (refused.value.status_code, refused.value.error_code) == (
            sdk_refused.value.status_code, sdk_refused.value.error_code) == (416, "InvalidRange")
    with pytest.raises(ResourceNotFoundError):
        read_range(s, container, "nothing-here", 0, 10)
    with pytest.raises(ValueError, match="offset >= 0"):
        blob_requests.get_range(client, -1, 5)


def test_files_upload_whole_from_where_they_stand(store: tuple[BlobStore, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``upload_file`` sends a small file as one Put Blob and a large one through the SDK's upload: the same blob,
    from the file's position to its end, with its content type, either way."""
    s, container = store
    for limit in (blob_requests.PUT_LIMIT, 10):
        monkeypatch.setattr(blob_requests, "PUT_LIMIT", limit)
        with tempfile.TemporaryFile("w+b") as f:
            f.write(b"skipped|" + b"row,1\n" * 5)
            f.seek(len(b"skipped|"))
            s.upload_file(container, f"table-{limit}.csv", f, "text/csv; charset=utf-8")
        client = s.service.get_blob_client(container, f"table-{limit}.csv")
        assert client.download_blob().readall() == b"row,1\n" * 5
        assert client.get_blob_properties().content_settings.content_type == "text/csv; charset=utf-8"
    s.upload_file(container, "empty.json", io.BytesIO(b""))
    assert s.read_bytes(container, "empty.json") == b""


def test_a_blobs_cache_control_is_set_by_either_write_path(store: tuple[BlobStore, str]) -> None:
    """``x-ms-blob-cache-control`` on Put Blob, ``ContentSettings.cache_control`` on Put Block List: the blob's
    Cache-Control, returned with every read (the static website's pages rely on it)."""
    s, container = store
    s.write_bytes(container, "small.html", b"<p>", "text/html; charset=utf-8", cache_control="no-cache")
    big = b"x" * (blob_requests.PUT_LIMIT + 1)
    s.write_bytes(container, "big.html", big, "text/html; charset=utf-8", cache_control="no-cache")
    for name in ("small.html", "big.html"):
        settings = s.service.get_blob_client(container, name).get_blob_properties().content_settings
        assert (settings.content_type, settings.cache_control) == ("text/html; charset=utf-8", "no-cache"), name
    s.write_bytes(container, "small.html", b"<p>")
    assert s.service.get_blob_client(container, "small.html").get_blob_properties().content_settings.cache_control \
        is None


class _CutBodies:
    """Wraps the pipeline's transport: the first ``cuts`` Get Blob bodies break after their first bytes, as a
    dropped connection breaks them (azure-core raises IncompleteReadError from the body's iteration)."""

    def __init__(self, cuts: int, listings: bool = False) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        self.inner, self.cuts, self.gets, self.listings = RequestsTransport(), cuts, 0, listings

    def send(self, request: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import IncompleteReadError

        response = self.inner.send(request, **kwargs)
        if request.method == "GET" and ("comp=list" in request.url) == self.listings:
            self.gets += 1
            if self.cuts:
                self.cuts -= 1
                whole = response.iter_bytes

                def broken(**kw: Any) -> Iterator[bytes]:
                    for chunk in whole(**kw):
                        yield chunk[:3]
                        raise IncompleteReadError("IncompleteRead(3 bytes read, more expected)")

                response.iter_bytes = broken
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> "_CutBodies":
        self.inner.__enter__()
        return self

    def __exit__(self, *a: Any) -> None:
        self.inner.__exit__(*a)


def test_a_body_cut_short_is_read_again(store: tuple[BlobStore, str], storage_connection: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-core retries a request that fails, not a streamed body that breaks after the status line; the SDK's
    downloader resumes such a read itself, and so must these requests (a GET is idempotent)."""
    from azure.core.exceptions import IncompleteReadError

    s, container = store
    s.write_bytes(container, "doc.json", b'{"hello": "world"}')
    monkeypatch.setattr(listing, "BODY_RETRY_DELAY_S", 0.0, raising=False)
    cut = _CutBodies(cuts=2)
    flaky = BlobServiceClient.from_connection_string(storage_connection, transport=cut)
    assert blob_requests.get_blob(flaky.get_blob_client(container, "doc.json")) == b'{"hello": "world"}'
    assert cut.gets == 3
    assert blob_requests.get_range(flaky.get_blob_client(container, "doc.json"), 2, 5) == b'hello'
    hopeless = _CutBodies(cuts=listing.BODY_ATTEMPTS)
    client = BlobServiceClient.from_connection_string(storage_connection, transport=hopeless)
    with pytest.raises(IncompleteReadError):
        blob_requests.get_blob(client.get_blob_client(container, "doc.json"))
    assert hopeless.gets == listing.BODY_ATTEMPTS
    # a page of List Blobs the same way
    pages = _CutBodies(cuts=1, listings=True)
    listed = BlobServiceClient.from_connection_string(storage_connection, transport=pages)
    assert [b.name for b in listing.list_page(listed.get_container_client(container)).blobs] == ["doc.json"]
    assert pages.gets == 2


def test_a_head_read_takes_at_most_its_length_and_says_the_whole_size(store: tuple[BlobStore, str]) -> None:
    """``blob_requests.get_head`` (``BlobStore.read_head_or_none``): how a file callers can write is read
    (``api.starters.caller_writable_json``), never more than the length asked, whatever the blob's size; an empty blob
    (which the service answers a range of with 416) and one shorter than the length read whole."""
    s, container = store
    big = bytes(range(256)) * 4096  # 1 MiB
    s.write_bytes(container, "big.bin", big)
    s.write_bytes(container, "empty.bin", b"")
    s.write_bytes(container, "small.json", b'{"a": 1}')
    assert s.read_head_or_none(container, "big.bin", 1000) == (big[:1000], len(big))
    assert s.read_head_or_none(container, "big.bin", len(big)) == (big, len(big))
    assert s.read_head_or_none(container, "empty.bin", 1000) == (b"", 0)
    assert s.read_head_or_none(container, "small.json", 8) == (b'{"a": 1}', 8)
    assert s.read_head_or_none(container, "small.json", 1000) == (b'{"a": 1}', 8)
    assert s.read_head_or_none(container, "missing.json", 1000) is None
    assert s.read_head_or_none(f"{container}-gone", "big.bin", 1000) is None  # as read_json_or_none
