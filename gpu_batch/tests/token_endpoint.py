"""A stand-in for a managed identity's token endpoint, shared by the worker's and the app's identity tests: IMDS on
a Batch node (``expires_in``, seconds) and App Service's identity endpoint (``expires_on``, epoch seconds) answer
the same request with the expiry said two ways (azure-identity ``_credentials/imds.py`` and
``app_service.py``), and both tests need it to fall silent the same way, as an endpoint out of reach does."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STORAGE = "https://storage.azure.com/.default"
DAY_S = 86399  # a managed identity's token: ~24 h (MSAL refreshes it halfway, msal managed_identity.py)


class TokenEndpoint(BaseHTTPRequestHandler):
    """A token valid for ``DAY_S`` while ``up`` (``token-1``, ``token-2``... in the order issued), else the
    connection dropped without an answer. ``asked`` counts requests, ``paths`` keeps their paths (the resource asked
    for), ``issued`` counts tokens; ``expires_on`` picks App Service's form of the expiry over IMDS's."""

    protocol_version = "HTTP/1.1"
    up = True
    asked = 0
    issued = 0
    paths: list[str] = []
    expires_on = False

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        kind = type(self)
        kind.asked += 1
        kind.paths.append(self.path)
        if not kind.up:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        kind.issued += 1
        expiry = {"expires_on": str(int(time.time()) + DAY_S)} if kind.expires_on else {"expires_in": str(DAY_S)}
        body = json.dumps({"access_token": f"token-{kind.issued}", **expiry,
                           "resource": "https://storage.azure.com/", "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_tokens(expires_on: bool = False) -> tuple[type[TokenEndpoint], ThreadingHTTPServer]:
    """A fresh endpoint (its counters its own) listening on a free local port, served from a daemon thread; the
    caller shuts the server down."""
    handler = type("Tokens", (TokenEndpoint,), {"up": True, "asked": 0, "issued": 0, "paths": [],
                                                "expires_on": expires_on})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return handler, server


def storage_requests(credential: Any, requests: int) -> list[str]:
    """The Authorization header of ``requests`` requests of one storage client: a client's pipeline has a
    ``BearerTokenCredentialPolicy`` of its own, which asks the credential for a token when it has none and while the
    one it has is due (``refresh_on`` past)."""
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy
    from azure.core.rest import HttpRequest

    policy = BearerTokenCredentialPolicy(credential, STORAGE)
    said = []
    for _ in range(requests):
        request = PipelineRequest(HttpRequest("GET", "https://own.blob.core.windows.net/c/b.jpg"),
                                  PipelineContext(None))
        policy.on_request(request)
        said.append(request.http_request.headers["Authorization"])
    return said
