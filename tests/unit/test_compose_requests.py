"""The requests adapters.compose sends to Azure for a server-side compose, at the HTTP transport level.

Why: Azurite has no Put Block From URL (501), so the integration tests only ever take the streamed copy; the Azure
path (the one production takes, with the app's managed identity and shared-key access off) is checked here against
the Put Block From URL reference (learn.microsoft.com rest/api/storageservices/put-block-from-url): the source in
``x-ms-copy-source``, its range in ``x-ms-source-range`` (inclusive), the source authorized by
``x-ms-copy-source-authorization: Bearer <token>`` for the storage audience, blocks of ``SERVER_BLOCK`` bytes at
most, then one Put Block List naming every block in order.
"""
from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.storage.blob import BlobServiceClient

from adapters import compose
from adapters.blobs import BlobStore

MIB = 1024 * 1024


class _Answer:
    def __init__(self, request: Any, status: int) -> None:
        self.request, self.status_code, self.reason, self.content_type = request, status, "Created", None
        self.headers = {"ETag": '"0x1"', "x-ms-request-id": "r", "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
                        "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}

    def body(self) -> bytes:
        return b""

    def text(self, encoding: str | None = None) -> str:
        return ""

    def stream_download(self, *args: Any, **kwargs: Any) -> Any:
        return iter([b""])


class _Capture(HttpTransport):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def __enter__(self) -> "_Capture":
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> _Answer:
        body = request.data if isinstance(request.data, bytes) else (request.body or b"")
        self.sent.append((request.method, request.url, dict(request.headers), bytes(body or b"")))
        return _Answer(request, 201)


class _Identity:
    """A managed identity's credential: a bearer token per scope, never an account key."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(f"TOKEN-{scopes[0]}", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        return AccessTokenInfo(f"TOKEN-{scopes[0]}", int(time.time()) + 3600)


def test_a_server_side_compose_stages_each_range_from_its_url_with_the_apps_bearer_token() -> None:
    capture = _Capture()
    service = BlobServiceClient("https://acct.blob.core.windows.net", credential=_Identity(), transport=capture)
    compose._server_side_refused.discard("acct")
    mode = compose.compose_blob(BlobStore(service), "trapbatch", "results/t/out.json",
                                [b"head", ("tasks/t/merge/part 1.json", 10, 250 * MIB), b"tail"], "application/json")

    assert mode == "server"
    staged = {parse_qs(urlsplit(url).query)["blockid"][0]: headers
              for method, url, headers, _ in capture.sent if "comp=block&" in url or url.endswith("comp=block")}
    from_url = [h for h in staged.values() if "x-ms-copy-source" in h]
    assert len(from_url) == 3  # 250 MiB in blocks of at most SERVER_BLOCK (100 MiB)
    ranges = sorted(h["x-ms-source-range"] for h in from_url)
    assert ranges == sorted([f"bytes={10}-{10 + 100 * MIB - 1}", f"bytes={10 + 100 * MIB}-{10 + 200 * MIB - 1}",
                             f"bytes={10 + 200 * MIB}-{10 + 250 * MIB - 1}"])
    for headers in from_url:
        assert headers["x-ms-copy-source"] == ("https://acct.blob.core.windows.net/trapbatch/tasks/t/merge/"
                                               "part%201.json")  # no SAS: the bearer token authorizes the read
        assert headers["x-ms-copy-source-authorization"] == "Bearer TOKEN-https://storage.azure.com/.default"
        assert headers["Authorization"].startswith("Bearer TOKEN-https://storage.azure.com/")
    ids = [base64.b64decode(i) for i in staged]
    assert len({len(i) for i in ids}) == 1  # one length for every block id of a blob (Put Block List refuses others)
    commits = [(url, body) for method, url, headers, body in capture.sent if "comp=blocklist" in url]
    assert len(commits) == 1
    listed = re.findall(rb"<Latest>([^<]+)</Latest>", commits[0][1])
    assert [base64.b64decode(x) for x in listed] == sorted(ids)  # every block, in order (ids number them)
    assert len(listed) == 5  # head, three ranges, tail
