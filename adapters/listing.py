"""List Blobs without the SDK's model deserialisation: the enumeration's listing, at a fraction of the CPU.

Why: at ten million images (issue 11) the enumeration activities spent most of their CPU inside azure-storage-blob's
``list_blobs``/``walk_blobs``: the pipeline parses each List Blobs page into an ElementTree, the generated model
deserializer walks every element of it into ``BlobItemInternal`` models (msrest-style, a dozen Python calls per field)
and the paging layer turns each into a ``BlobProperties`` with lease, copy and content-settings objects. The
enumeration uses three fields of a blob: its name, its ETag (``only_new``) and its size. ``bench/listing.py``
measures both ways (``bench/RESULTS.md``: the SDK's ``list_blobs`` spends about a hundred times the CPU per blob of
this module, eight times with its first, ElementTree parser; in a profile ~83 % of its CPU was the model deserializer).

How: the same documented REST operation, `List Blobs
<https://learn.microsoft.com/rest/api/storageservices/list-blobs>`_ (``GET <container>?restype=container&comp=list``
with ``prefix``, ``delimiter``, ``marker``, ``maxresults``; the ``x-ms-version`` header), sent through the
``ContainerClient``'s own azure-core pipeline with ``stream=True``. The pipeline is what signs the request (shared
key for Azurite and connection strings, a bearer token for a managed identity, a SAS in the URL or an
``AzureSasCredential`` policy), retries it (the storage retry policy) and adds the client request id, exactly as for
the SDK's own calls. ``stream=True`` keeps azure-core's ``ContentDecodePolicy`` from parsing the body into a tree.
The body (a page of 5,000 blobs is ~3 MB) is read whole by one compiled regex that takes the four fields used
(``parse_listing``; bodies in any form but the service's compact one go to ElementTree instead, so the result is
always an XML parser's). Per blob this costs ~2.5 us of CPU, against ~30 us for ElementTree's ``XMLPullParser``
(an event tuple per element, ~20 per Blob; the module's previous parser) and ~280 us for the SDK's ``list_blobs``
(``bench/listing.py``, ``bench/RESULTS.md``).

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

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, TypeVar
from urllib.parse import quote, unquote
from xml.etree.ElementTree import Element, ParseError, fromstring

from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, IncompleteReadError,
                                   ResourceExistsError, ResourceNotFoundError, ResourceNotModifiedError,
                                   ServiceResponseError)
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import ContainerClient

from gpu_batch.storage_refs import deadline_passed

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Reads of a body cut short (the connection dropped, or timed out, after the status line): azure-core's retry policy
# retries a request that fails, not a streamed body that breaks after it (the SDK's downloader resumes such a read
# itself); these requests are idempotent GETs, so the whole request is sent again, up to this many in all.
BODY_ATTEMPTS = 3
BODY_RETRY_DELAY_S = 0.5


def run_get(pipeline: Any, build: Callable[[], HttpRequest], read: Callable[[HttpResponse], T], name: str) -> T:
    """``read`` of the streamed answer to the GET ``build`` makes, sent through the client's ``pipeline``; a body cut
    short is read again (``BODY_ATTEMPTS``), the request sent anew. ``read`` raises for an answer it does not take.

    A body cut because the caller's deadline passed (a deadline's client: ``storage_refs.deadline_passed``) is not
    sent again: the deadline's transport refuses every request past it, so the retry only waited
    ``BODY_RETRY_DELAY_S`` past the deadline and logged a read again that never happened."""
    attempt = 1
    while True:
        response = pipeline.run(build(), stream=True).http_response  # see the module docstring
        try:
            return read(response)
        except (IncompleteReadError, ServiceResponseError) as exc:
            if attempt >= BODY_ATTEMPTS or deadline_passed(exc):
                raise
            logger.warning("%s: the body was cut short (%s); sending the request again (%d/%d)", name,
                           type(exc).__name__, attempt + 1, BODY_ATTEMPTS)
        finally:
            response.close()
        time.sleep(BODY_RETRY_DELAY_S * attempt)
        attempt += 1


MAX_PAGE_SIZE = 5000  # List Blobs: "If ... greater than 5,000, the server will return up to 5,000 items"
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
    def request() -> HttpRequest:
        return HttpRequest("GET", container.url, params=params,
                           headers={"x-ms-version": container.api_version, "Accept": "application/xml"})

    def read(response: HttpResponse) -> ListedPage:
        if response.status_code != 200:
            raise _error(response)
        return parse_listing(response.iter_bytes())

    return run_get(container._pipeline, request, read, f"List Blobs {container.container_name}")


def _error(response: HttpResponse) -> HttpResponseError:
    return response_error(response, "List Blobs")


def response_error(response: HttpResponse, operation: str) -> HttpResponseError:
    """The exception the SDK raises for this error answer to ``operation`` (classed by status, then by the service's
    error code), with the service's error code and message (``adapters.blob_requests`` uses it too).

    The code is also worded as the SDK words it, a line ``ErrorCode:<code>`` (azure-storage-blob
    ``_shared/response_handlers.py`` ``process_storage_error``), which is what tells a busy account (``ServerBusy``...)
    from other failures once an activity's exception is only text (``orchestrations.retries.is_busy``): without it
    the control plane's commonest requests, these, were retried as any failure (three calls, 2 s and 4 s apart), and
    a task failed on throttling that the busy retries wait out."""
    response.read()
    code = response.headers.get("x-ms-error-code", "")
    message = ""
    try:
        body = fromstring(response.content)
        code, message = body.findtext("Code") or code, body.findtext("Message") or ""
    except ParseError:
        pass
    cls = _BY_STATUS.get(response.status_code) or _BY_CODE.get(code, HttpResponseError)
    text = f"{operation}: HTTP {response.status_code} {code}: {message}".strip(" :")
    error = cls(message=text + (f"\nErrorCode:{code}" if code else ""), response=response)
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
    """A List Blobs response body (the transport's chunks, joined: a page of 5,000 entries is ~3 MB) to a
    ``ListedPage``.

    The body as the service writes it (compact, UTF-8, the documented element order) is read by one compiled regex
    (``_ENTRIES``, C) and a list comprehension; anything else falls back to ``_parse_tree`` (ElementTree), so every
    well-formed body reads as an XML parser reads it, and a truncated one (or one that is not XML) raises
    ``ParseError``. The regex path does not re-check the well-formedness of what it skips (the service's bodies are
    well-formed; a cut-off body is caught by its missing end tag). See ``_parse_fast`` for what is recognised and why
    nothing else can slip through.
    """
    body = b"".join(chunks)
    return _parse_fast(body) or _parse_tree(body)


# The fast path. Why it is exact: in XML a "<" in text is always escaped, so every "<" of a body is markup; the
# only markup that could hide one (comments, CDATA, processing instructions, a DOCTYPE declaring entities) starts
# "<!" or "<?", and any of those after the XML declaration sends the body to ElementTree (``_declarations``).
# ``_ENTRIES`` finds each "<Blob" (C) and matches, in document order:
#   * a Blob as the service writes it: ``<Blob><Name>`` (optionally ``Encoded="true"|"false"``) with text, then
#     ``<Properties>`` and within it the first ``<Etag>`` and the first ``<Content-Length>`` after it (schema order:
#     Creation-Time, Last-Modified, Etag, Content-Length, ... in the List Blobs page's response body; a Content-Length
#     before the Etag goes to ElementTree, only slower; no Content-Length in Properties is size 0, as an XML parser's
#     ``findtext`` reads it). The documented Creation-Time and Last-Modified are matched literally; other
#     skips never pass ``</Properties>``, a Blob or BlobPrefix tag (nor, before the Etag, a Content-Length), so a
#     match never reaches into another entry. A Content-Length the match cannot read (``<Content-Length />``, one
#     with whitespace) fails the match;
#   * a BlobPrefix as written: ``<BlobPrefix><Name>text</Name></BlobPrefix>``;
#   * otherwise ("bad", all groups empty): a Blob or BlobPrefix start tag in any other form (whitespace, attributes,
#     a Name not first, an empty name, no Properties or Etag, a self-closed or CDATA field, a Content-Length before
#     the Etag). One such match: ElementTree reads the body instead.
# Text (names, ETags, the marker) is taken as XML text: with no "&" and no CR in the body it is the raw text;
# otherwise each field holding one is read by ElementTree (entities, character references, line-end
# normalisation: exactly an XML parser's text). User-named elements (metadata, tags) come only with ``include``.
_NAME = r'<Name(?: Encoded="(?:(true)|false)")?>([^<]++)</Name>'
_NOT = r'/Properties>|/?Blob(?:Prefix)?[\s/>]'  # where a skip inside a Blob must stop
_KNOWN = r'<Properties><Creation-Time>[^<]*+</Creation-Time><Last-Modified>[^<]*+</Last-Modified>'


def _skip(stop: str) -> str:
    return r'(?:[^<]++|<(?!' + stop + '|' + _NOT + r'))*+'


_ENTRIES = re.compile(
    r'<Blob(?:>' + _NAME
    + r'(?:' + _KNOWN + '|' + _skip(r'Properties[\s/>]') + '<Properties>' + _skip(r'Etag[\s/>]|Content-Length[\s/>]')
    + r')<Etag>([^<]*+)</Etag>' + _skip(r'Content-Length[\s/>]')
    + r'(?:<Content-Length>([^<]*+)</Content-Length>|(?!<Content-Length[\s/>]))'
    + r'|Prefix>' + _NAME + r'</BlobPrefix>'
    + r'|(?:Prefix)?[\s/>])')
_new = tuple.__new__
_BAD = ("", "", "", "", "", "")  # the tuple of a "bad" match (every entry match has a non-empty name)
# the XML declaration if any (UTF-8 or no encoding named), then the root's start tag
_START = re.compile(r'\ufeff?(?:<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(["\'])1\.[0-9]+\1'
                    r'(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(["\'])(?i:utf-?8)\2)?'
                    r'(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(["\'])(?:yes|no)\3)?[ \t\r\n]*\?>)?'
                    r'[ \t\r\n]*(?=<EnumerationResults[ \t\r\n/>])')  # (XML's white space is these four)
# NextMarker: "When the NextMarker element is empty, the listing is complete" (Listing Blob storage resources,
# https://learn.microsoft.com/rest/api/storageservices/enumerating-blob-resources): empty or absent is None
_NEXT = re.compile(r'<NextMarker(?:>([^<]*+)</NextMarker>|[ \t\r\n]*/>)')
_END = "</EnumerationResults>"


def _parse_fast(body: bytes) -> ListedPage | None:
    """``parse_listing`` for a body as the service writes it; None for anything else (ElementTree reads that)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start = _START.match(text)
    if start is None or not text.rstrip(" \t\r\n").endswith(_END):  # another encoding, text before the root;
        return None  # truncated
    if _declarations(text, start.end()):
        return None
    found: list[tuple[str, str, str, str, str, str]] = _ENTRIES.findall(text, start.end())
    if _BAD in found:
        return None
    marker: str | None = None
    at = text.rfind("<NextMarker")
    if at >= 0:
        m = _NEXT.match(text, at)
        if m is None:
            return None
        marker = m.group(1) or None
    if "&" in text or "\r" in text:  # entities, character references or CRs somewhere: read such fields as XML
        found = [(enc, _xml_text(name), _xml_text(etag), size, penc, _xml_text(prefix))
                 for enc, name, etag, size, penc, prefix in found]
        marker = _xml_text(marker or "") or None
    # tuple.__new__: a NamedTuple's own __new__ is a Python function (a frame per blob, ~0.2 us)
    blobs: list[ListedBlob] = [_new(ListedBlob, (unquote(name) if enc else name, etag.strip('"'),
                                                 int(size) if size else 0))
                               for enc, name, etag, size, _, _ in found if name]
    prefixes = [unquote(prefix) if penc else prefix for _, name, _, _, penc, prefix in found if not name]
    return ListedPage(blobs, prefixes, marker)


def _declarations(text: str, start: int) -> bool:
    """Whether "<!" or "<?" occurs in ``text`` from ``start``: each "!" and "?" (memchr, C) is looked at until a few
    were not one ("!" is in every marker of Azure's), then the rest is searched for the pair."""
    for mark in ("!", "?"):
        at = text.find(mark, start)
        for _ in range(8):
            if at < 0:
                break
            if text[at - 1] == "<":
                return True
            at = text.find(mark, at + 1)
        else:
            if at >= 0 and text.find("<" + mark, at - 1) >= 0:
                return True
    return False


def _xml_text(raw: str) -> str:
    """Raw XML character data (no markup) as an XML parser returns it."""
    if "&" not in raw and "\r" not in raw:
        return raw
    return fromstring("<t>" + raw + "</t>").text or ""


def _parse_tree(body: bytes) -> ListedPage:
    """Any List Blobs body, with ElementTree (C): the fallback of ``parse_listing``. ``Blob``/``BlobPrefix`` entries
    in document order, the ``NextMarker`` text; raises ``ParseError`` for a body that is not well-formed XML."""
    blobs: list[ListedBlob] = []
    prefixes: list[str] = []
    marker: str | None = None
    for el in fromstring(body).iter():
        tag = el.tag
        if tag == "Blob":
            props = el.find("Properties")
            if props is None:
                raise ValueError("a List Blobs entry without Properties")
            size = props.findtext("Content-Length")
            blobs.append(ListedBlob(_name(el), (props.findtext("Etag") or "").strip('"'), int(size) if size else 0))
        elif tag == "BlobPrefix":
            prefixes.append(_name(el))
        elif tag == "NextMarker":
            marker = el.text or None
    return ListedPage(blobs, prefixes, marker)


def _name(el: Element) -> str:
    name = el.find("Name")
    if name is None:
        raise ValueError("a List Blobs entry without a Name")
    text = name.text or ""
    return unquote(text) if name.get("Encoded") == "true" else text
