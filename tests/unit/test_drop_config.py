"""A dropped request refused by a wrong app setting is answered beside it (api/drop_config.py): before, the drop
trigger raised the ConfigError on every try, the platform poisoned the blob after five, and the request got no answer
(seen on devhost with TRAPBATCH_KEEP_REPLACED_DAYS=3)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api import starters
from core.errors import ConfigError

HANDLER = starters.task_dropped._function.get_user_function().__wrapped__  # no durable client binding


class _Blob:
    def __init__(self, name: str) -> None:
        self.name = name


class _Store:
    """The drop's container: the request's version, and what is written beside it."""

    def __init__(self, etag: str | None) -> None:
        self.etag, self.written, self.connections = etag, {}, []

    def read_version_or_none(self, container: str, name: str, max_bytes: int) -> tuple[bytes | None, int, str] | None:
        return None if self.etag is None else (None, 80, self.etag)

    def write_json(self, container: str, name: str, data: Any) -> None:
        self.written[f"{container}/{name}"] = data


def _drop(monkeypatch: pytest.MonkeyPatch, store: _Store, env: dict[str, str], name: str = "incoming/site-a.json") -> None:
    for key in ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def store_for(connection: str) -> _Store:
        store.connections.append(connection)
        return store

    monkeypatch.setattr("adapters.blobs.blob_store", store_for)
    asyncio.run(HANDLER(_Blob(name), None))


def test_a_wrong_setting_is_answered_beside_the_request_and_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store('"0x8D1"')
    _drop(monkeypatch, store, {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                               "TRAPBATCH_KEEP_REPLACED_DAYS": "3"})
    answer = store.written["incoming/site-a.json.error.json"]
    assert "TRAPBATCH_KEEP_REPLACED_DAYS=3" in answer["error"]
    assert "TRAPBATCH_KEEP_REPLACED_DAYS=30" in answer["hint"] and "write the request again" in answer["hint"]
    assert answer["request_etag"] == '"0x8D1"'
    assert store.connections == ["UseDevelopmentStorage=true"]


def test_a_request_gone_meanwhile_gets_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store(None)
    _drop(monkeypatch, store, {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_LINK_DAYS": "9"})
    assert store.written == {}


def test_without_its_own_storage_the_error_goes_to_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store('"0x8D1"')
    with pytest.raises(ConfigError, match="AzureWebJobsStorage is not set"):
        _drop(monkeypatch, store, {})
    assert store.written == {} and store.connections == []
