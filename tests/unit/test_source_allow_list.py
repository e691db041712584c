"""Source accounts outside TRAPBATCH_SOURCE_ACCOUNTS are refused before any credential or request leaves the app."""
from __future__ import annotations

from typing import Any

import pytest

from adapters import clients
from core.errors import SourceNotAllowed
from core.requests import normalize_account_url, same_storage_account
from core.settings import Settings

PARTNER = "https://partnerphotos.blob.core.windows.net"


def _settings(allowed: str = "") -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                              "TRAPBATCH_LOCAL_SECRETS_FILE": "/nonexistent/secrets.json",
                              "TRAPBATCH_SOURCE_ACCOUNTS": allowed})


@pytest.fixture
def no_outbound(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any attempt to read a secret or build a client for a foreign account (nothing may happen)."""
    attempts: list[str] = []

    def record(what: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise AssertionError(f"{what} was called for an account outside the allow-list")
        return fail

    monkeypatch.setattr(clients, "secret_reader_from_env", record("secret reader"))
    monkeypatch.setattr(clients, "source_service", record("source client"))
    return attempts


@pytest.mark.parametrize("url", ["https://attacker.example.com", "https://evil.blob.core.windows.net",
                                 PARTNER + ".attacker.example.com", "http://127.0.0.1:10000/devstoreaccount1"])
def test_an_account_outside_the_list_is_refused_before_anything_is_sent(url: str, no_outbound: list[str]) -> None:
    with pytest.raises(SourceNotAllowed) as info:
        clients.source_store(_settings(PARTNER), url, "partner-sas")
    assert info.value.status_code == 403 and "TRAPBATCH_SOURCE_ACCOUNTS" in info.value.hint
    assert no_outbound == []


def test_by_default_only_the_apps_own_account_is_read(no_outbound: list[str]) -> None:
    with pytest.raises(SourceNotAllowed) as info:
        clients.source_store(_settings(), PARTNER, "")
    assert "only this app's own storage account" in info.value.hint and no_outbound == []


def test_a_listed_account_passes_whatever_its_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(clients, "source_service",
                        lambda ref, own, reader, **_: seen.append(ref.account_url) or object())
    monkeypatch.setattr(clients, "secret_reader_from_env", lambda env, **_: None)
    clients.source_store(_settings(f"https://other.blob.core.windows.net, {PARTNER.upper()}/"), PARTNER + "/", "")
    assert seen == [PARTNER + "/"]
    assert normalize_account_url("HTTPS://A.blob.core.windows.net/") == "https://a.blob.core.windows.net"


def test_the_apps_own_notification_secret_is_no_storage_credential(no_outbound: list[str]) -> None:
    """The vault holds the app's own secrets too: named as a request's credential_secret, the notification signing
    key was read and sent to the (allowed) account in a request's query string."""
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_SOURCE_ACCOUNTS": PARTNER,
                           "TRAPBATCH_NOTIFY_SECRET": "notify-signing-key"})
    for name in ("notify-signing-key", "NOTIFY-Signing-Key"):  # Key Vault names are case-insensitive
        with pytest.raises(SourceNotAllowed, match="signs this app's notifications"):
            clients.source_store(s, PARTNER, name)
    assert no_outbound == []


def test_an_account_is_one_account_at_each_of_its_hosts() -> None:
    """The own-account check (api.starters._check_source) compared URLs exactly: the app's own account named at
    ``:443``, its ``-secondary`` host or its private endpoint passed as another account, and its state container
    was readable through it."""
    own = "https://appstore.blob.core.windows.net/"
    for same in ("https://APPSTORE.blob.core.windows.net:443", "https://appstore-secondary.blob.core.windows.net",
                 "https://appstore.privatelink.blob.core.windows.net/", "https://appstore.z17.blob.storage.azure.net"):
        assert same_storage_account(same, own), same
    for other in ("https://appstore2.blob.core.windows.net", "https://partner.blob.core.windows.net",
                  "https://appstore.example.org", "http://127.0.0.1:10000/appstore"):
        assert not same_storage_account(other, own), other
    emulator = "http://127.0.0.1:10000/devstoreaccount1"
    assert same_storage_account(emulator + "/", emulator) and not same_storage_account(emulator, emulator + "x")
    assert normalize_account_url("https://a.blob.core.windows.net:443/") == "https://a.blob.core.windows.net"
    assert normalize_account_url("http://127.0.0.1:80/x") == "http://127.0.0.1/x"
    assert normalize_account_url("https://a.blob.core.windows.net:8443") == "https://a.blob.core.windows.net:8443"
