"""Clients made per call (another account's storage client, its Key Vault reader, a caller's deadline client) hold no
sockets of their own (``adapters.transport.shared_session_options``): each kept its kept-alive connection open until a
cyclic garbage collection, rare in the app (``core.collector``), against the Functions sandbox's per-instance limit on
outbound connections. Measured as the process's open file descriptors across 20 uses, against a local keep-alive
server, with the garbage collector off; and a rotated secret still reaches the next use."""
from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.core.credentials import AccessToken

from adapters import clients
from core.deadline import Deadline
from core.settings import Settings

USES = 20
LISTING = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" ContainerName="images">'
           b'<MaxResults>1</MaxResults><Blobs /><NextMarker /></EnumerationResults>')


class KeepAlive(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive (as Azure's front ends): a client's connection stays open after each answer. Answers
    a container listing, and Key Vault's secret reads (a challenge first, then ``secrets``); records each request's
    path and headers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secrets: dict[str, str] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.set_cookie = False
        self.connections = 0  # accepted: one per connection a client opened

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAlive

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path.startswith("/secrets/"):
            self._secret()
        else:
            self._answer(200, LISTING, "application/xml")

    def _secret(self) -> None:
        if "Authorization" not in self.headers:  # Key Vault's challenge; the resource must be a suffix of the host
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer authorization="https://login.microsoftonline.com/tenant", '
                                                 f'resource="https://0.1:{self.server.server_port}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        name = self.path.split("?")[0].split("/")[2]
        body = json.dumps({"value": self.server.secrets[name],
                           "id": f"{self.server.url}/secrets/{name}/v1"}).encode()
        self._answer(200, body, "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.server.set_cookie:
            self.send_header("Set-Cookie", "affinity=one-caller; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - a notification's receiver (activities.notify)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append((self.path, dict(self.headers)))
        self._answer(200, b"", "text/plain")

    def log_message(self, *args: Any) -> None:
        pass


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("entra-token", int(time.time()) + 3600)


@pytest.fixture
def server() -> Iterator[KeepAlive]:
    srv = KeepAlive()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeepAlive]:
    """``server`` over TLS (Key Vault's client sends its token over https only), with a certificate for 127.0.0.1
    that the clients trust through REQUESTS_CA_BUNDLE (``adapters.transport.transport_options``)."""
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = KeepAlive()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The garbage collector off, as good as the app's raised thresholds (``core.collector``) for a burst of calls:
    what a client leaves to it stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.fixture(autouse=True)
def app_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "app_credential", FakeCredential)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settings(account: str, **env: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                              "TRAPBATCH_SOURCE_ACCOUNTS": account, **env})


def _secrets_file(tmp_path: Path, value: str) -> str:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"partner-sas": value}), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("deadline", ["none", "missing-host", "deadline"])
def test_another_accounts_clients_hold_no_sockets_after_their_use(server: KeepAlive, tmp_path: Path, no_gc: None,
                                                                   deadline: str) -> None:
    """Each activity step that reads another account made a client whose socket stayed open: 2 descriptors per use
    here (the client's and this process's server end), 40 after 20 uses, until ``gc.collect()``."""
    account = f"{server.url}/partner"
    s = _settings(account, TRAPBATCH_LOCAL_SECRETS_FILE=_secrets_file(tmp_path, "sv=2025-01-05&sig=one"))
    before = open_fds()
    for _ in range(USES):
        when: bool | Deadline = {"none": False, "missing-host": True, "deadline": Deadline.within(20)}[deadline]
        assert clients.source_store(s, account, "partner-sas", deadline=when).container_listable("images")
    assert open_fds() - before <= 4, "per-call clients kept their connections open"
    assert len(server.seen) == USES


@pytest.mark.parametrize("deadline", [False, True])
def test_a_key_vault_reader_per_use_holds_no_socket_either(tls_server: KeepAlive, no_gc: None,
                                                           deadline: bool) -> None:
    """With TRAPBATCH_KEY_VAULT_URL each use also made a ``SecretClient`` of its own, with its own session."""
    tls_server.secrets["partner-sas"] = "sv=2025-01-05&sig=one"
    account = f"{tls_server.url}/partner"
    s = _settings(account, TRAPBATCH_KEY_VAULT_URL=tls_server.url)
    clients.source_store(s, account, "partner-sas").container_listable("images")  # the TLS session and challenge
    before = open_fds()
    for _ in range(USES):
        source = clients.source_store(s, account, "partner-sas", deadline=Deadline.within(20) if deadline else False)
        assert source.container_listable("images")
    assert open_fds() - before <= 4, "per-call clients kept their connections open"
    reads = [path for path, _ in tls_server.seen if path.startswith("/secrets/partner-sas")]
    assert len(reads) >= USES + 1  # the secret was read at each use


def test_a_rotated_secret_reaches_the_next_use(server: KeepAlive, tmp_path: Path) -> None:
    """The secret is read at each use and its value makes the client: a SAS rotated between two activities is the
    one the second sends (the shared connections carry no credential)."""
    account = f"{server.url}/partner"
    secrets = _secrets_file(tmp_path, "sv=2025-01-05&sig=old")
    s = _settings(account, TRAPBATCH_LOCAL_SECRETS_FILE=secrets)
    assert clients.source_store(s, account, "partner-sas").container_listable("images")
    _secrets_file(tmp_path, "sv=2025-01-05&sig=rotated")
    assert clients.source_store(s, account, "partner-sas").container_listable("images")
    (first, _), (second, _) = server.seen
    assert "sig=old" in first and "sig=rotated" in second and "sig=old" not in second


def test_the_shared_connections_keep_no_cookie(server: KeepAlive, tmp_path: Path) -> None:
    """One session serves every caller's clients: a cookie one answer sets is not sent with a later request."""
    server.set_cookie = True
    account = f"{server.url}/partner"
    s = _settings(account, TRAPBATCH_LOCAL_SECRETS_FILE=_secrets_file(tmp_path, "sv=2025-01-05&sig=one"))
    source = clients.source_store(s, account, "partner-sas")
    assert source.container_listable("images") and source.container_listable("images")
    assert [headers.get("Cookie") for _, headers in server.seen] == [None, None]


def test_the_apps_own_deadline_clients_hold_no_sockets_after_their_use(server: KeepAlive, no_gc: None) -> None:
    """``clients.store(s, deadline)``: a client of its own per Event Grid delivery of a marker (two of them,
    ``api.arrivals``) and per re-run POST (``api.starters._generations``)."""
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's
    s = Settings.from_env({"AzureWebJobsStorage": f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                                  f"AccountKey={key};BlobEndpoint={server.url}/devstoreaccount1;"})
    before = open_fds()
    for _ in range(USES):
        assert clients.store(s, Deadline.within(20)).container_listable("images")
    assert open_fds() - before <= 4, "per-call clients kept their connections open"
    assert len(server.seen) == USES


def test_a_notifications_vault_reads_reuse_one_connection(tls_server: KeepAlive, server: KeepAlive, no_gc: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``activities.notify.send`` made a ``SecretClient`` per send to read the signing key from the app's vault. Its
    socket was not left for the collector (nothing refers back to that client: reference counting closes it when the
    send returns), but each send opened a TLS connection of its own: 21 for 21 sends. Through the shared session
    they are one, and no descriptor stays behind either."""
    from activities import notify as notify_activity

    monkeypatch.setattr(notify_activity, "app_credential", FakeCredential)
    tls_server.secrets["notify-key"] = "signing-key-value"
    env = {"TRAPBATCH_KEY_VAULT_URL": tls_server.url}
    payload: Any = {"task_id": "task-0123456789abcdef0123", "url": f"{server.url}/hook",
                    "status": {"stage": "completed"}}
    hosts = (f"127.0.0.1:{server.server_port}",)
    assert notify_activity.send(payload, hosts, "notify-key", env)["sent"]  # the TLS session, the challenge
    before = open_fds()
    for _ in range(USES):
        assert notify_activity.send(payload, hosts, "notify-key", env)["sent"]
    assert open_fds() - before <= 4, "per-send vault clients kept their connections open"
    assert len(server.seen) == USES + 1
    assert tls_server.connections <= 2, f"{tls_server.connections} connections to the vault for {USES + 1} sends"


def test_many_threads_at_once_reuse_the_shared_sessions_connections_without_discarding_them(
        server: KeepAlive, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The session is shared by every activity of a process, each reading with up to 16 threads: with requests' own
    pool of 10 connections a host, each connection returned past the tenth was closed ("Connection pool is full,
    discarding connection") and the next request opened another."""
    from concurrent.futures import ThreadPoolExecutor

    account = f"{server.url}/partner"
    s = _settings(account, TRAPBATCH_LOCAL_SECRETS_FILE=_secrets_file(tmp_path, "sv=2025-01-05&sig=one"))
    barrier = threading.Barrier(24)

    def use(_: int) -> None:
        source = clients.source_store(s, account, "partner-sas")
        barrier.wait(timeout=60)  # all 24 at once, as activities' reading threads are
        for _ in range(3):
            assert source.container_listable("images")

    caplog.set_level("WARNING", logger="urllib3.connectionpool")
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(use, range(24)))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()], "connections were discarded"
    assert server.connections <= 24, server.connections  # each thread's connection kept and reused


def test_the_apps_own_shared_client_keeps_its_connections_for_many_threads_too(
        server: KeepAlive, caplog: pytest.LogCaptureFixture) -> None:
    """``blob_store``: one client per process, used by every activity's threads (compose 8, previews 8)."""
    from concurrent.futures import ThreadPoolExecutor

    from adapters.blobs import blob_store

    store = blob_store(f"DefaultEndpointsProtocol=http;AccountName=own;AccountKey=a2V5;BlobEndpoint={server.url}/own;")
    barrier = threading.Barrier(24)

    def use(_: int) -> None:
        barrier.wait(timeout=60)
        for _ in range(3):
            assert store.container_listable("images")

    caplog.set_level("WARNING", logger="urllib3.connectionpool")
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(use, range(24)))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()], "connections were discarded"
    assert server.connections <= 24, server.connections


class _Held(BaseHTTPRequestHandler):
    """A blob of ``size`` bytes whose first ``sent`` are sent at once; then nothing more until the client closes the
    connection, which ``closed`` records."""

    protocol_version = "HTTP/1.1"
    size, sent = 8192, 4096
    closed = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        self.wfile.write(b"a" * self.sent)
        self.wfile.flush()
        self.connection.settimeout(10)
        try:
            if self.connection.recv(1) == b"":
                type(self).closed.set()
        except OSError:
            pass


@contextlib.contextmanager
def _held_body(size: int, sent: int) -> Iterator[tuple[str, type[_Held]]]:
    handler = type("Held", (_Held,), {"size": size, "sent": sent, "closed": threading.Event()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/account/images/list.csv", handler
    finally:
        srv.shutdown()
        srv.server_close()


def _deadline_stream(url: str, clock: dict[str, float]) -> tuple[Any, Any]:
    """A streamed GET of ``url`` through a deadline's transport over the shared session (as ``clients.source_store``
    sends a blob download), with ``clock["left"]`` as the time left: the response and its chunks."""
    from azure.core.pipeline.transport import HttpRequest

    from adapters.transport import shared_session_options
    from gpu_batch.storage_refs import deadline_storage_options

    transport = deadline_storage_options(lambda: clock["left"], try_timeouts=(5.0, 5.0),
                                         **shared_session_options())["transport"]
    response = transport.send(HttpRequest("GET", url), stream=True)
    return response, response.stream_download(None)


def test_a_body_cut_short_by_the_deadline_closes_its_connection_at_once(no_gc: None) -> None:
    """The deadline passes between two chunks of a body (``storage_refs._DeadlineBody``): the read fails (busy) and
    its connection is closed then. The response refers to itself (its wrapped ``stream_download``), so the half-read
    socket, never returned to the shared pool, stayed open until a cyclic collection (``core.collector``)."""
    from azure.core.exceptions import ServiceResponseTimeoutError

    clock = {"left": 10.0}
    with _held_body(8192, 4096) as (url, handler):
        response, chunks = _deadline_stream(url, clock)
        assert len(next(chunks)) == 4096
        clock["left"] = -1.0
        with pytest.raises(ServiceResponseTimeoutError):
            next(chunks)
        del response, chunks
        assert handler.closed.wait(3), "the half-read connection was left open"


def test_a_body_read_in_full_is_not_failed_by_a_deadline_that_passes_after_its_last_chunk() -> None:
    """Every byte of the body was read before the deadline passed; what is left is the end of the iteration, which
    waits for nothing: the body is the caller's, not a timeout that throws it away (the storage SDK's downloader then
    sends the request again, which the deadline refuses: a read that succeeded, answered busy)."""
    clock = {"left": 10.0}
    with _held_body(4096, 4096) as (url, _):
        response, chunks = _deadline_stream(url, clock)
        first = next(chunks)
        clock["left"] = -1.0
        assert first + b"".join(chunks) == b"a" * 4096
        response.internal_response.close()


class _Blob(BaseHTTPRequestHandler):
    """One block blob, ``content``, at any path: its properties (HEAD) and its content, whole or a range (GET)."""

    protocol_version = "HTTP/1.1"
    content = b'{"container": "images", "model": "MDV5A"}'
    busy_first = False  # each download answered 503 ServerBusy first, as a throttled account does

    def log_message(self, *args: Any) -> None:
        pass

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(length), "ETag": '"0x8D0"', "x-ms-blob-type": "BlockBlob",
                            "Last-Modified": "Sun, 06 Dec 2026 10:00:00 GMT", **extra}.items():
            self.send_header(name, value)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._headers(200, len(self.content), {})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.busy_first and not getattr(self.server, "was_busy", False):  # a 503 first, with a body, then the blob
            self.server.was_busy = True  # type: ignore[attr-defined]
            busy = b"<?xml version='1.0' encoding='utf-8'?><Error><Code>ServerBusy</Code></Error>"
            self._headers(503, len(busy), {"x-ms-error-code": "ServerBusy", "Content-Type": "application/xml"})
            self.wfile.write(busy)
            return
        self.server.was_busy = False  # type: ignore[attr-defined]
        size = len(self.content)
        first, _, last = self.headers.get("x-ms-range", f"bytes=0-{size - 1}")[len("bytes="):].partition("-")
        start, end = int(first), min(int(last or size - 1), size - 1)
        self._headers(206, end - start + 1, {"Content-Range": f"bytes {start}-{end}/{size}"})
        self.wfile.write(self.content[start:end + 1])


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[Settings]:
    """``handler`` served on loopback as trapbatch's own account (Azurite's account name and key): the app's settings
    that name it."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's
    try:
        yield Settings.from_env({"AzureWebJobsStorage": f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                                        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:"
                                                        f"{srv.server_address[1]}/devstoreaccount1;"})
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_deadlines_client_downloads_a_blob() -> None:
    """What a marker's Event Grid delivery reads its request with (``clients.store(s, deadline)``,
    ``BlobStore.read_version_or_none``: the storage SDK's ``download_blob``), and a POST an image list's ranges
    (``adapters.block_writer.BlobReader``). The storage SDK reads more of the stream it is handed than its chunks
    (``StorageStreamDownloader._initial_request``: ``content_length``, ``response``): a wrapper that had only the
    chunks failed every such download with an AttributeError."""
    with _serving(_Blob) as s:
        store = clients.store(s, Deadline.within(20))
        assert store.read_version_or_none("incoming", "site-a.json", 1 << 20) == (_Blob.content, len(_Blob.content),
                                                                                  "0x8D0")
        blob = store.service.get_blob_client("images", "list.csv")
        assert blob.download_blob(offset=2, length=9).readall() == _Blob.content[2:11]


def test_a_deadlines_download_retried_after_a_503_leaves_no_socket_open(no_gc: None) -> None:
    """A throttled account answers a download 503 and the storage SDK's retry policy sends it again, dropping the
    503's streamed response unread (``_shared/policies.py`` ``StorageRetryPolicy.send``). Dropped, its connection is
    closed by reference counting, unless the response refers to itself: the deadline's body wrapper
    (``storage_refs._DeadlineBody``) kept it in its ``stream_download``, so each retried download held a socket until
    a cyclic collection (``core.collector``), as the per-call sessions did (2 descriptors a use here)."""
    with _serving(type("Busy", (_Blob,), {"busy_first": True})) as s:
        before = open_fds()
        for _ in range(5):
            blob = clients.store(s, Deadline.within(20)).service.get_blob_client("images", "list.csv")
            assert blob.download_blob().readall() == _Blob.content
        assert open_fds() - before <= 4, "retried downloads kept their connections open"


class _Slow(_Blob):
    """A blob (GET) or a container listing (``comp=list``) of ``size`` bytes whose body comes ``piece`` bytes every
    ``gap_s`` (~6 s in all): each socket read gets bytes long before any read timeout, as from an account that sends
    a large answer (a file a caller wrote, of any size) slowly."""

    size, piece, gap_s = 64 * 1024, 1024, 0.1

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        listing = "comp=list" in self.path
        body = (LISTING if listing else b"{}").ljust(self.size)  # XML and JSON both allow the trailing spaces
        self._headers(200, len(body), {"Content-Type": "application/xml" if listing else "application/json"})
        try:
            for at in range(0, len(body), self.piece):
                self.wfile.write(body[at:at + self.piece])
                self.wfile.flush()
                time.sleep(self.gap_s)
        except OSError:  # the client gave up and closed the connection
            pass


@pytest.mark.parametrize("read", ["get blob", "list blobs"])
def test_a_deadlines_own_gets_end_by_the_deadline_however_slowly_their_body_comes(read: str) -> None:
    """trapbatch's own Get Blob and List Blobs (``adapters.blob_requests``, ``adapters.listing``: the body read by
    ``iter_bytes`` of a plain response) through a deadline's client. An Event Grid delivery of a marker reads the
    marker's receipt so (``api.arrivals._read_marker``: ``caller_writable_json``, a file the caller may have written,
    of any size), and a POST with ``rerun`` the served generation (``api.starters._generations``). The read timeout
    bounds each socket read, not the body, and the deadline bounded only ``stream_download``'s chunks
    (``storage_refs._DeadlineBody``): this read took ~6.5 s against a 1-s deadline."""
    from azure.core.exceptions import AzureError

    with _serving(_Slow) as s:
        store = clients.store(s, Deadline.within(1.0))
        started = time.monotonic()
        with pytest.raises(AzureError):
            if read == "get blob":
                store.read_bytes("incoming", "trapbatch-ready.task.json")
            else:
                list(store.list_names("images"))
        assert time.monotonic() - started < 3.0, "the body was read past the deadline"


@pytest.mark.parametrize("read", ["get blob", "list blobs"])
def test_a_body_the_deadline_cut_is_not_sent_again(read: str, caplog: pytest.LogCaptureFixture) -> None:
    """``adapters.listing.run_get`` sends a GET again when its body is cut short, but a body cut by the caller's
    deadline (``storage_refs._DeadlineBody``) cannot be read by another try: the deadline's transport refuses every
    request past it. It waited 0.5 s past the deadline, logged that the body was being read again, and ended with
    the refusal ("not sent") in place of what happened (the deadline cut the body)."""
    import logging

    from azure.core.exceptions import ServiceResponseTimeoutError

    from gpu_batch.storage_refs import deadline_passed

    with _serving(_Slow) as s, caplog.at_level(logging.WARNING, logger="adapters.listing"):
        store = clients.store(s, Deadline.within(1.0))
        with pytest.raises(ServiceResponseTimeoutError, match="deadline passed while a body") as raised:
            if read == "get blob":
                store.read_bytes("incoming", "trapbatch-ready.task.json")
            else:
                list(store.list_names("images"))
    assert deadline_passed(raised.value)
    assert not [r for r in caplog.records if "cut short" in r.getMessage()], "a try past the deadline was logged"
