"""Get Blob (whole or a range) and Put Blob of small documents without the SDK's operation layer: the control plane's
commonest requests at about half the CPU.

Why: every activity reads and writes a few small JSON documents (a plan, a manifest, a cursor, a part's index), and
azure-storage-blob spends ~1.2-1.9 ms of CPU on each (measured against Azurite on this machine, twelfth session in
``bench/RESULTS.md``): ``download_blob`` builds a ``StorageStreamDownloader``, whose generated operation deserialises
every response header into a model (about fifty ``Deserializer`` calls), and ``upload_blob`` goes through the upload
helpers. At 20,000 images the activities made ~130 such requests, a third of their CPU. The same documented REST
operations (`Get Blob <https://learn.microsoft.com/rest/api/storageservices/get-blob>`_, `Put Blob
<https://learn.microsoft.com/rest/api/storageservices/put-blob>`_: ``x-ms-blob-type: BlockBlob``, the whole content
in one request) sent through the blob client's own azure-core pipeline, as ``adapters.listing`` sends List Blobs
(its docstring says why that route: signing, retries, the client request id and a SAS in the URL all stay the SDK's)
cost ~0.8-1.0 ms.

What it must not do: large content (``PUT_LIMIT``: above it ``BlobStore`` uses the SDK's chunked upload), conditions
(``If-Match``...), metadata, tiers, leases or any header beyond the content type: those stay with the SDK. Errors
are raised as the SDK raises them (``listing.response_error``): 404 ``ResourceNotFoundError``, 409
``ResourceExistsError``, 401 ``ClientAuthenticationError``, else ``HttpResponseError`` with the service's code.
"""
from __future__ import annotations

from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import BlobClient

from adapters.listing import response_error, run_get

PUT_LIMIT = 4 * 1024 * 1024  # bytes one Put Blob here carries; the SDK's own single-put limit is 64 MiB


def _get(client: BlobClient, headers: dict[str, str], answers: tuple[int, ...]) -> bytes:
    """One Get Blob with ``headers``; its body when the status is one of ``answers``, else the SDK's error. A body
    cut short is read again (``listing.run_get``)."""
    def request() -> HttpRequest:
        return HttpRequest("GET", client.url, headers={"x-ms-version": client.api_version, **headers})

    def read(response: HttpResponse) -> bytes:
        if response.status_code not in answers:
            raise response_error(response, "Get Blob")
        return b"".join(response.iter_bytes())

    return run_get(client._pipeline, request, read, f"Get Blob {client.blob_name}")


def get_blob(client: BlobClient) -> bytes:
    """The blob's whole content (one Get Blob)."""
    return _get(client, {}, (200,))


def get_range(client: BlobClient, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` (one Get Blob with ``x-ms-range``, as the SDK's ranged ``download_blob``
    sends it); fewer where the range passes the blob's end. "Specifying the range header for Blob service operations"
    (learn.microsoft.com): 206 with the bytes up to the blob's end when the offset does not exceed its length, 416
    (``InvalidRange``) when it does, raised as the SDK's ranged download raises it (an empty blob read from 0
    included; Azurite answers a range that starts exactly at the end with no bytes, and so do both)."""
    if offset < 0 or length < 0:
        raise ValueError(f"a range needs offset >= 0 and length >= 0, not {offset} and {length}")
    if length == 0:
        return b""
    return _get(client, {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}, (200, 206))


def get_head(client: BlobClient, length: int) -> tuple[bytes, int]:
    """The blob's first ``length`` bytes (all of a shorter blob) and its whole size, in one Get Blob with
    ``x-ms-range`` (``bytes=0-<length - 1>``): never more than ``length`` bytes are read, however large the blob.
    Why: a file callers can write (a receipt or a refusal beside their request) may be of any size, and a whole read
    held all of it in the Functions host's memory (``api.starters.caller_writable_json``).

    The size is the total of the 206's ``Content-Range`` (``bytes <first>-<last>/<size>``: "Specifying the range
    header for Blob service operations", learn.microsoft.com), or a 200's ``Content-Length``. An empty blob is
    ``(b"", 0)``: the service answers a range of it 416 ``InvalidRange`` (a range starting at its length, 0; see
    ``get_range``; the SDK's own downloader reads a 416 to its first range so, azure-storage-blob 12.x
    ``_download.py`` ``_initial_request``: "Get range will fail on an empty file"). ``ResourceNotFoundError`` for a
    missing blob, as ``get_blob``."""
    if length <= 0:
        raise ValueError(f"get_head reads at least one byte, not {length}")

    def request() -> HttpRequest:
        return HttpRequest("GET", client.url, headers={"x-ms-version": client.api_version,
                                                       "x-ms-range": f"bytes=0-{length - 1}"})

    def read(response: HttpResponse) -> tuple[bytes, int]:
        if response.status_code == 416:  # a range from 0 is unsatisfiable only for an empty blob
            return b"", 0
        if response.status_code not in (200, 206):
            raise response_error(response, "Get Blob")
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if response.status_code == 206 and total.isdigit() else int(
            response.headers.get("Content-Length") or 0)
        data = bytearray()
        for chunk in response.iter_bytes():  # a 200 (no range honoured) is cut at length too
            data += chunk
            if len(data) >= length:
                break
        return bytes(data[:length]), size

    return run_get(client._pipeline, request, read, f"Get Blob {client.blob_name}")


def put_blob(client: BlobClient, data: bytes, content_type: str | None = None,
             cache_control: str | None = None) -> str:
    """Write (replace) a block blob with ``data`` in one Put Blob; returns the ETag the service answered with.

    The request's headers, as the Put Blob reference lists them: ``Authorization`` and ``x-ms-date`` (the pipeline's
    signing policy), ``x-ms-version`` ("required for all authorized requests"), ``Content-Length`` (the transport),
    ``x-ms-blob-type`` (required), and the blob's content type as ``x-ms-blob-content-type`` ("sets the blob's
    content type"; without it the blob's is the request's ``Content-Type``, "the default type is
    application/octet-stream"), with ``Content-Type: application/octet-stream`` for the body: what the SDK's
    ``upload_blob`` sends (azure-storage-blob's generated ``BlockBlobOperations.upload``). ``cache_control`` is the
    blob's ``Cache-Control`` (``x-ms-blob-cache-control``), which the service, the static website included, returns
    with every read of it."""
    if len(data) > PUT_LIMIT:
        raise ValueError(f"put_blob carries at most {PUT_LIMIT} bytes, not {len(data)}: use the SDK's upload_blob")
    headers = {"x-ms-version": client.api_version, "x-ms-blob-type": "BlockBlob",
               "Content-Type": "application/octet-stream"}
    if content_type:
        headers["x-ms-blob-content-type"] = content_type
    if cache_control:
        headers["x-ms-blob-cache-control"] = cache_control
    request = HttpRequest("PUT", client.url, headers=headers, content=bytes(data))
    response = client._pipeline.run(request, stream=True).http_response
    try:
        if response.status_code != 201:
            raise response_error(response, "Put Blob")
        return str(response.headers.get("ETag", ""))
    finally:
        response.close()
