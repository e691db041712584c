"""A small HTTP proxy in front of Azurite's blob endpoint that throttles as Azure Storage does: ``ServerBusy``.

Why: the busy retries (``orchestrations.retries``) and the workers' retryable image failures are only trusted when a
whole task ran through a storage account that refused requests, with the real SDK clients deciding what a refusal
means. A refused request gets Azure Storage's own answer to an account over its scale targets (REST "Common REST API
error codes", learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes: ``ServerBusy``, 503, "The
server is currently unable to receive requests. Please retry your request." / "Operations per second is over the
account limit."): status 503 with that message as its reason phrase, ``x-ms-error-code: ServerBusy``,
``x-ms-request-id``, ``Retry-After`` (which azure-storage-blob's retry policy does not read: it waits its own
back-off) and the XML error body, read by the SDK as any service error (``process_storage_error``). A
refused request is answered before it reaches Azurite, so it changed nothing, as a throttled request on Azure.

Which requests are refused is decided by the order they arrive in, nothing random (``Throttling``): every
``every``-th request starts a *burst* on its own request (method, path and query, less a Put Block's block id): that
request is refused that many times in a row, whatever other requests come between its tries, so a burst of at least
the SDK's tries (4: one and ``retry_total`` 3) makes that SDK call fail and its caller must act. A request is
throttled in one burst at most, so each request is refused a bounded number of times and the task can end.
"""
from __future__ import annotations

import http.client
import itertools
import re
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})
SDK_TRIES = 4  # azure-storage-blob's ExponentialRetry: one try and retry_total=3 retries


def request_key(method: str, path: str) -> str:
    """What names one request across its tries and its callers' retries: the method, path and query, less the block
    id of a Put Block (the SDK draws new ones for each upload, so a retried upload is the same request)."""
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "blockid"]
    return f"{method} {parts.path}" + (f"?{urlencode(sorted(query))}" if query else "")


@dataclass
class Throttling:
    """Every ``every``-th request (counted among those whose path holds one of ``targets``, all when there are none,
    and not already in a burst) starts a burst of the next length of ``bursts`` (cycled) on that request; besides,
    the first request whose ``"<method> <path>"`` matches a pattern of ``openings`` starts a burst of that pattern's
    length (to refuse a given caller's request: the workers' first image read, say). With
    ``enabled`` False everything passes."""

    every: int = 15
    bursts: tuple[int, ...] = (4, 1, 2, 3, 1, 2)
    enabled: bool = False
    targets: list[str] = field(default_factory=list)
    openings: list[tuple[re.Pattern[str], int]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)  # the keys the openings refused, in order
    _lengths: Iterator[int] = field(init=False, repr=False)
    _left: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _lengths_of: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # throttled keys' bursts
    _seen: int = field(default=0, init=False, repr=False)
    _due: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._lengths = itertools.cycle(self.bursts)

    def refuse(self, method: str, path: str) -> int:
        """0: pass the request on; else its place in its burst (1 for its first refusal)."""
        if not self.enabled or (self.targets and not any(t in path for t in self.targets)):
            return 0
        key = request_key(method, path)
        left = self._left.get(key, 0)
        if left:
            self._left[key] = left - 1
            return self._lengths_of[key] - left + 1
        if key in self._lengths_of:  # a request is throttled in one burst at most
            self._seen += 1
            self._due = self._due or self._seen % self.every == 0
            return 0
        opening = next((o for o in self.openings if o[0].search(f"{method} {path}")), None)
        if opening is not None:
            self.openings.remove(opening)
            self.opened.append(key)
            length = opening[1]
        else:
            self._seen += 1
            self._due = self._due or self._seen % self.every == 0
            if not self._due:
                return 0
            self._due = False
            length = next(self._lengths)
        self._lengths_of[key] = length
        self._left[key] = length - 1
        return 1

    def burst_lengths(self) -> dict[str, int]:
        """Each throttled request's burst length, by key."""
        return dict(self._lengths_of)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closes a kept-alive connection (the SDK's pool at its end) is no error; others are."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Seen:
    """One request the proxy answered: ``refusal`` its place in its burst (0: passed to Azurite, ``status`` its
    answer)."""

    method: str
    path: str
    refusal: int
    status: int
    at: float  # time.monotonic() when it was answered


class StorageFaultProxy:
    """``http://127.0.0.1:<port>`` forwarding to ``upstream_port`` (Azurite's blob service), throttled by
    ``throttling``. ``seen`` lists every request in arrival order."""

    def __init__(self, upstream_port: int, throttling: Throttling | None = None) -> None:
        self.upstream_port = upstream_port
        self.throttling = throttling or Throttling()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="storage-fault-proxy", daemon=True)

    def __enter__(self) -> "StorageFaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refused(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.refusal]

    def exhausted(self) -> dict[str, int]:
        """The requests refused in bursts of at least the SDK's tries (an SDK call failed on each), by key."""
        with self._lock:
            return {k: n for k, n in self.throttling.burst_lengths().items() if n >= SDK_TRIES}

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter("refused" if s.refusal else "passed" for s in self.seen)

    def _decide(self, method: str, path: str) -> int:
        with self._lock:
            return self.throttling.refuse(method, path)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if not size:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self) -> None:
                body = self._body()
                refusal = proxy._decide(self.command, self.path)
                if refusal:
                    self._refuse()
                    proxy._record(Seen(self.command, self.path, refusal, 503, time.monotonic()))
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response_only(response.status, response.reason)
                    for k, v in response.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length if length is not None else str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()
                proxy._record(Seen(self.command, self.path, 0, response.status, time.monotonic()))

            def _refuse(self) -> None:
                request_id = str(uuid.uuid4())
                now = datetime.now(timezone.utc)
                body = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>Operations '
                        f'per second is over the account limit.\nRequestId:{request_id}\n'
                        f'Time:{now.strftime("%Y-%m-%dT%H:%M:%S.%f")}0Z</Message></Error>').encode()
                self.send_response_only(503, "Operations per second is over the account limit.")
                for k, v in (("Content-Type", "application/xml"), ("Server", "Microsoft-HTTPAPI/2.0"),
                             ("x-ms-request-id", request_id), ("x-ms-version", self.headers.get("x-ms-version", "")),
                             ("x-ms-error-code", "ServerBusy"), ("Retry-After", "1"),
                             ("Date", format_datetime(now, usegmt=True)),
                             ("Content-Length", "0" if self.command == "HEAD" else str(len(body)))):
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_MERGE = _answer

        return Handler
