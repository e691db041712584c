"""adapters.transport: the SDK's per-request environment scan is skipped only when it would find nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.blobs import service_client
from adapters.transport import environment_has_http_settings, transport_options

AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT5"
           "0uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")


def _transport(client: object) -> Any:
    transport = client._pipeline._transport  # type: ignore[attr-defined]
    while hasattr(transport, "_transport"):
        transport = transport._transport
    transport.open()
    return transport


def _session_trust_env(client: object) -> bool:
    return bool(_transport(client).session.trust_env)


def test_a_bare_environment_turns_the_scan_off(tmp_path: Path) -> None:
    assert not environment_has_http_settings({"HOME": str(tmp_path), "PATH": "/bin"})
    assert transport_options({"HOME": str(tmp_path)}) == {"use_env_settings": False}
    assert environment_has_http_settings({"HOME": str(tmp_path), "no_proxy": "localhost"}) is False  # nothing to bypass


@pytest.mark.parametrize("name, value", [("HTTPS_PROXY", "http://proxy:3128"), ("http_proxy", "http://p:8080"),
                                         ("ALL_PROXY", "socks5://p")])
def test_a_proxy_keeps_requests_reading_the_environment(tmp_path: Path, name: str, value: str) -> None:
    assert environment_has_http_settings({"HOME": str(tmp_path), name: value})
    assert transport_options({"HOME": str(tmp_path), name: value}) == {}


def test_a_ca_bundle_variable_becomes_the_clients_verify_setting(tmp_path: Path) -> None:
    """What requests would verify with (REQUESTS_CA_BUNDLE first, then CURL_CA_BUNDLE) is passed explicitly."""
    home = str(tmp_path)
    assert transport_options({"HOME": home, "CURL_CA_BUNDLE": "/c.pem"}) == {"use_env_settings": False,
                                                                             "connection_verify": "/c.pem"}
    assert transport_options({"HOME": home, "CURL_CA_BUNDLE": "/c.pem", "REQUESTS_CA_BUNDLE": "/r.pem"}) == {
        "use_env_settings": False, "connection_verify": "/r.pem"}


def test_a_netrc_file_keeps_requests_reading_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".netrc").write_text("machine example.org login a password b\n")
    assert environment_has_http_settings({"HOME": str(tmp_path)})
    other = tmp_path / "elsewhere"
    other.write_text("")
    assert environment_has_http_settings({"HOME": str(tmp_path / "none"), "NETRC": str(other)})


def test_the_blob_client_gets_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _session_trust_env(service_client(AZURITE)) is False
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client = service_client(AZURITE)
    assert _session_trust_env(client) is False
    assert _transport(client).connection_config.verify == "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _session_trust_env(service_client(AZURITE)) is True
