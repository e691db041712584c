"""List Blobs without the SDK's model deserialisation: the enumeration's listing, at a fraction of the CPU.

Why: at ten million images (issue 11) the enumeration activities spent most of their CPU inside azure-storage-blob's
``list_blobs``/``walk_blobs``: the pipeline parses each List Blobs page into an ElementTree, the generated model
deserializer walks every element of it into ``BlobItemInternal`` models (msrest-style, a dozen Python calls per field)
and the paging layer turns each into a ``BlobProperties`` with lease, copy and content-settings objects. The
enumeration uses three fields of a blob: its name, its ETag (``only_new``) and its size. ``bench/listing.py``
measures both ways (``bench/RESULTS.md``: the SDK's ``list_blobs`` spends about eight times the CPU per blob of this
module; in a profile ~83 % of its CPU was the model deserializer).

How: the same documented REST operation, `List Blobs
<https://learn.microsoft.com/rest/api/storageservices/list-blobs>`_ (``GET <container>?restype=container&comp=list``
with ``prefix``, ``delimiter``, ``marker``, ``maxresults``; the ``x-ms-version`` header), sent through the
``ContainerClient``'s own azure-core pipeline with ``stream=True``. The pipeline is what signs the request (shared
key for Azurite and connection strings, a bearer token for a managed identity, a SAS in the URL or an
``AzureSasCredential`` policy), retries it (the storage retry policy) and adds the client request id, exactly as for
the SDK's own calls. ``stream=True`` keeps azure-core's ``ContentDecodePolicy`` from parsing the body into a tree.
The body is fed in the transport's chunks to ElementTree's C ``XMLPullParser``; only ``Blob``, ``BlobPrefix`` and
``NextMarker`` end events reach Python, and each ``Blob`` element is cleared once read.

The route, and why it is the least private one available: the storage clients have no public ``send_request``. The
alternatives were (a) the generated ``list_blob_flat_segment`` with a ``cls`` callback: its ``cls`` only runs after
the pipeline has parsed the whole body into a tree and after the generated deserializer has built the models (the
cost we remove; the SDK's own ``list_blob_names`` gets round that by swapping the operation's private
``_deserialize`` for ``IgnoreListBlobsDeserializer``), and ``stream`` cannot be passed to it; (b) the generated
client's ``_send_request``; (c) ``ContainerClient._pipeline.run(request, stream=True)``, the azure-core
``Pipeline.run`` of the client, which is how the SDK sends the requests it builds by hand itself
(``StorageAccountHostsMixin._batch_send`` builds an ``HttpRequest`` with ``x-ms-version`` and runs it through
``self._pipeline``). We take (c): one private attribute (``_pipeline``, present on every storage client of
azure-storage-blob 12.x), a public azure-core API, and a request built from the REST documentation rather than from
the SDK's generated (private) request builders.

XML schema (List Blobs, "Response body"): ``<EnumerationResults ...><Prefix/><Marker/><MaxResults/><Delimiter/>
<Blobs><Blob><Name>…</Name>…<Properties>…<Etag>…</Etag><Content-Length>…</Content-Length>…</Properties>…</Blob>
<BlobPrefix><Name>…</Name></BlobPrefix></Blobs><NextMarker>…</NextMarker></EnumerationResults>``. A ``Name`` may
carry ``Encoded="true"`` (a name with characters XML 1.0 cannot carry, percent-encoded by the service); it is
decoded as the SDK does (``get_blob_properties_from_generated_code``: ``unquote(name.content)``). ETags are returned
as in listings (unquoted); ``strip('"')`` keeps them equal to ``adapters.blobs._etag`` of any call.

What it must not do: it covers a flat or one-delimiter listing with no ``include`` datasets (snapshots, versions,
metadata, tags, deleted blobs). Those stay with the SDK's ``list_blobs``/``walk_blobs``, which nothing in the
enumeration needs. It never logs a URL (a SAS may be in it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, cast
from urllib.parse import quote, unquote
from xml.etree.ElementTree import Element, ParseError, XMLPullParser, fromstring

from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceNotFoundError, ResourceNotModifiedError)
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import ContainerClient

MAX_PAGE_SIZE = 5000  # List Blobs: "If ... greater than 5,000, the server will return up to 5,000 items"
_EVENTS = frozenset({"Blob", "BlobPrefix", "NextMarker"})  # the only end events that reach Python
# How the SDK's list operation classes an error answer: by status (the generated operation's error_map), then by the
# service's error code (``process_storage_error``); everything else is an ``HttpResponseError`` with its status
# (``adapters.storage_errors`` maps 401/403 by status, e.g. a SAS without list permission: 403
# AuthorizationPermissionMismatch).
_BY_STATUS: dict[int, type[HttpResponseError]] = {401: ClientAuthenticationError, 404: ResourceNotFoundError,
                                                  409: ResourceExistsError, 304: ResourceNotModifiedError}
_BY_CODE: dict[str, type[HttpResponseError]] = {"InvalidAuthenticationInfo": ClientAuthenticationError,
                                                "AuthenticationFailed": ClientAuthenticationError,
                                                "ContainerNotFound": ResourceNotFoundError,
                                                "ResourceNotFound": ResourceNotFoundError}


class ListedBlob(NamedTuple):
    """One ``Blob`` of a listing: what the enumeration uses of it."""

    name: str
    etag: str  # unquoted, as the listing gives it (``"0x8D..."`` from a HEAD is ``0x8D...`` here)
    size: int  # Content-Length, bytes


@dataclass(frozen=True, slots=True)
class ListedPage:
    """One List Blobs response: its blobs and (delimiter listings) virtual-folder prefixes in document order, and the
    service's opaque continuation marker (None: the listing is complete)."""

    blobs: list[ListedBlob]
    prefixes: list[str]
    next_marker: str | None


def list_page(container: ContainerClient, prefix: str | None = None, marker: str | None = None,
              page_size: int | None = None, delimiter: str | None = None) -> ListedPage:
    """One page of List Blobs: up to ``page_size`` (<= 5,000) entries under ``prefix`` from ``marker``.

    Raises what the SDK's listing raises: ``ResourceNotFoundError`` for a missing container,
    ``ClientAuthenticationError`` for credentials the service did not accept, ``HttpResponseError`` (with the status
    and the service's error code) otherwise.
    """
    params = {"restype": "container", "comp": "list"}
    for key, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", marker)):
        if value:
            params[key] = quote(value, safe="")  # azure-core's HttpRequest expects quoted values (as the SDK does)
    if page_size is not None:
        params["maxresults"] = str(max(1, min(int(page_size), MAX_PAGE_SIZE)))
    # container.url carries a SAS when the client was built with one; HttpRequest merges params into that query
    request = HttpRequest("GET", container.url, params=params,
                          headers={"x-ms-version": container.api_version, "Accept": "application/xml"})
    response = container._pipeline.run(request, stream=True).http_response  # see the module docstring
    try:
        if response.status_code != 200:
            raise _error(response)
        return parse_listing(response.iter_bytes())
    finally:
        response.close()


def _error(response: HttpResponse) -> HttpResponseError:
    """The exception the SDK's listing raises for this answer, with the service's error code and message."""
    response.read()
    code = response.headers.get("x-ms-error-code", "")
    message = ""
    try:
        body = fromstring(response.content)
        code, message = body.findtext("Code") or code, body.findtext("Message") or ""
    except ParseError:
        pass
    cls = _BY_STATUS.get(response.status_code) or _BY_CODE.get(code, HttpResponseError)
    error = cls(message=f"List Blobs: HTTP {response.status_code} {code}: {message}".strip(" :"), response=response)
    error.error_code = code or None  # type: ignore[attr-defined]  # as process_storage_error sets it
    return error


def iter_pages(container: ContainerClient, prefix: str | None = None, page_size: int | None = None,
               delimiter: str | None = None, marker: str | None = None) -> Iterator[ListedPage]:
    """Every page from ``marker`` on, following ``NextMarker`` lazily."""
    while True:
        page = list_page(container, prefix, marker, page_size, delimiter)
        yield page
        if page.next_marker is None:
            return
        marker = page.next_marker


def parse_listing(chunks: Iterable[bytes]) -> ListedPage:
    """A List Blobs response body (in chunks, as they arrive) to a ``ListedPage``.

    Only the ``Blob``/``BlobPrefix``/``NextMarker`` end events are looked at (a list comprehension over each chunk's
    events, in C but for that filter); a ``Blob``'s name, ETag and size are read with ``find`` (C) and the element is
    cleared. Those names occur nowhere else in the schema: user-named elements (metadata keys, tags) come only with
    ``include``, which ``list_page`` never sends.
    """
    blobs: list[ListedBlob] = []
    prefixes: list[str] = []
    marker: list[str | None] = [None]
    parser: XMLPullParser[Element] = XMLPullParser(events=("end",))

    def consume() -> None:
        events = cast(Iterator[tuple[str, Element]], parser.read_events())  # "end" events carry elements only
        for el in [el for _, el in events if el.tag in _EVENTS]:
            tag = el.tag
            if tag == "Blob":
                name, props = el.find("Name"), el.find("Properties")
                if name is None or props is None:
                    raise ValueError("a List Blobs entry without Name or Properties")
                text = name.text or ""
                size = props.findtext("Content-Length")
                blobs.append(ListedBlob(unquote(text) if name.get("Encoded") == "true" else text,
                                        (props.findtext("Etag") or "").strip('"'), int(size) if size else 0))
                el.clear()
            elif tag == "BlobPrefix":
                prefixes.append(_name(el))
                el.clear()
            else:
                marker[0] = el.text or None

    for chunk in chunks:
        parser.feed(chunk)
        consume()
    parser.close()
    consume()
    return ListedPage(blobs, prefixes, marker[0])


def _name(el: Element) -> str:
    name = el.find("Name")
    if name is None:
        raise ValueError("a List Blobs entry without a Name")
    text = name.text or ""
    return unquote(text) if name.get("Encoded") == "true" else text
