"""devhost's callers file: like App Service Authentication, client-supplied X-MS-CLIENT-PRINCIPAL* headers never
reach the app, and a request made with a caller's key carries that caller's identity (devhost/README.md, row 16)."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import pytest
import requests

from api.callers import caller_from_headers
from core.settings import Settings
from devhost.host import DevHost
from devhost.keys import CallersFileError, load_callers, parse_callers
from tests.devhost import callers_app

HOST_KEY = "devhost-callers-test-host-key"
ANA, OPS = "ana-key-0123456789abcdef", "ops-key-0123456789abcdef"
CALLERS = {ANA: {"id": "11111111-aaaa", "name": "ana@example.org", "roles": []},
           OPS: {"id": "22222222-bbbb", "name": "ops@example.org", "roles": ["trapbatch.operator"]}}
FORGED = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [{"typ": "roles", "val": "trapbatch.operator"}],
                                      "name_typ": "name", "role_typ": "roles"}).encode()).decode()


@pytest.fixture
def host(storage_connection: str, unique_name: str, tmp_path: Path) -> Iterator[DevHost]:
    path = tmp_path / "callers.json"
    path.write_text(json.dumps(CALLERS))
    h = DevHost(callers_app.app, storage_connection, task_hub=unique_name, port=0, function_key=HOST_KEY,
                callers=load_callers(path))
    h.start()
    yield h
    h.stop()


def _whoami(host: DevHost, key: str | None, **headers: str) -> requests.Response:
    if key is not None:
        headers["x-functions-key"] = key
    return requests.get(f"{host.base_url}/api/whoami", headers=headers, timeout=30)


def test_client_supplied_principal_headers_are_stripped_and_caller_keys_inject_their_identity(host: DevHost) -> None:
    forged = {"X-MS-CLIENT-PRINCIPAL": FORGED, "X-MS-CLIENT-PRINCIPAL-ID": "22222222-bbbb",
              "x-ms-client-principal-name": "ops@example.org", "X-Ms-Client-Principal-Idp": "aad"}
    # the host key has no identity: forged headers are dropped, nothing is added (Easy Auth: unauthenticated)
    r = _whoami(host, HOST_KEY, **forged)
    assert r.status_code == 200 and r.json() == {}
    # a caller's key: that caller's headers, never the forged ones
    r = _whoami(host, ANA, **forged)
    seen = r.json()
    assert r.status_code == 200 and seen["x-ms-client-principal-id"] == "11111111-aaaa"
    assert seen["x-ms-client-principal-name"] == "ana@example.org" and seen["x-ms-client-principal-idp"] == "aad"
    easy = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CALLER_AUTH": "easyauth"})
    ana = caller_from_headers(seen, easy)  # what the app reads from them
    assert ana.id == "11111111-aaaa" and not ana.operator
    ops = caller_from_headers(requests.get(f"{host.base_url}/api/whoami?code={OPS}", timeout=30).json(), easy)
    assert ops.id == "22222222-bbbb" and ops.operator and ops.name == "ops@example.org"  # ?code= works too
    # callers' keys are function keys; anything else is still 401
    assert _whoami(host, "not-a-key-at-all-0123").status_code == 401
    assert _whoami(host, None, **forged).status_code == 401


def test_a_malformed_callers_file_is_refused(tmp_path: Path) -> None:
    for bad in ([], {"short": {"id": "x"}}, {ANA: {"name": "no id"}}, {ANA: {"id": "x", "roles": "op"}}):
        with pytest.raises(CallersFileError):
            parse_callers(bad)
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(CallersFileError, match="cannot read"):
        load_callers(tmp_path / "c.json")
