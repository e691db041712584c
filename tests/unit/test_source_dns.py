"""A source account (or the Key Vault holding its credential) whose host name DNS says does not exist is a refusal
(400, with the host and what to check), not "busy": a deleted or misspelt account on the allow-list was answered 503
"retry in a minute" and waited out by the orchestrations for many minutes. A resolver that did not answer (EAI_AGAIN)
or a refused connection stays busy. The SDK's own clients and transport build the exception chain (the resolver is
patched, ``gpu_batch.tests.test_storage_refs.resolver``)."""
from __future__ import annotations

import json
from typing import Any, cast

import pytest
from azure.storage.blob import BlobServiceClient

from adapters import clients, image_lists
from adapters.blobs import BlobStore
from core.errors import SourceBusy, SourceUnavailable, failure_line
from core.requests import parse_task_request
from core.settings import Settings
from core.shards import ListingLimits
from gpu_batch import layout
from gpu_batch.storage_refs import key_vault_reader
from gpu_batch.tests.test_pool_azure_batch import FakeCredential
from gpu_batch.tests.test_storage_refs import resolver  # noqa: F401 - the fixture: getaddrinfo's answer for *.invalid
from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, NO_SUCH_NAME, NO_SUCH_VAULT, RESOLVER_DOWN, refused_url
from gpu_batch.tests.test_storage_refs import FakeTime as DnsWaits  # storage_errors' waits on a clock of its own
from orchestrations.retries import is_busy

ANSWERS = [(*NO_SUCH_NAME[0], False), (*NO_SUCH_NAME[1], False), (*RESOLVER_DOWN, True)]


@pytest.fixture(autouse=True)
def dns_waits(monkeypatch: pytest.MonkeyPatch) -> DnsWaits:
    """A listing that found its host missing asks DNS again for two minutes (``storage_errors._host_still_missing``):
    on a fake clock, so the waits take no time (the patched resolver still says no such name)."""
    from adapters import storage_errors

    waits = DnsWaits()
    monkeypatch.setattr(storage_errors, "_clock", waits.clock)
    monkeypatch.setattr(storage_errors, "_sleep", waits.sleep)
    return waits


def _settings(account: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                              "TRAPBATCH_KEY_VAULT_URL": NO_SUCH_VAULT, "TRAPBATCH_SOURCE_ACCOUNTS": account})


def _store(account_url: str) -> BlobStore:
    """The source account as a SAS makes it (``storage_refs.client_from_secret``), the storage SDK's retries off."""
    return BlobStore(BlobServiceClient(account_url, credential="sv=2024-01-01&sig=abc", retry_total=0))


def _as_orchestrator_sees_it(exc: BaseException) -> Exception:
    return Exception(f"Activity function 'enumerate_images' failed: {type(exc).__name__}: {exc}")


def _check(err: BaseException, busy: bool, host: str) -> None:
    assert "sig=" not in str(err) and "sig=" not in getattr(err, "hint", "")
    if busy:
        assert isinstance(err, SourceBusy) and err.status_code == 503, err
        assert is_busy(_as_orchestrator_sees_it(err))
    else:
        assert isinstance(err, SourceUnavailable) and err.status_code == 400, err
        assert f"host name {host} does not resolve" in err.message, err.message
        assert f"{host} does not resolve" in err.hint and "source_account_url" in err.hint, err.hint
        assert "grant" not in err.hint and not is_busy(_as_orchestrator_sees_it(err))


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_the_edge_refuses_a_source_account_whose_host_does_not_exist(
        errno: int, text: str, busy: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``api.starters._check_source`` lists the request's container in the (allowed) account: 400 naming the host
    for EAI_NONAME / EAI_NODATA, 503 for EAI_AGAIN."""
    from api import starters

    resolver(errno, text)
    monkeypatch.setattr(starters.clients, "source_store", lambda *a, **kw: _store(NO_SUCH_ACCOUNT))
    request = parse_task_request({"container": "images", "source_account_url": NO_SUCH_ACCOUNT}, "MDV5A")
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        starters._check_source(request, _settings(NO_SUCH_ACCOUNT))
    assert "cannot list container 'images'" in failed.value.message
    _check(failed.value, busy, "nosuchaccount.invalid")


# Event Grid "waits 30 seconds for a response after delivering a message" (MicrosoftDocs
# articles/event-grid/delivery-and-retry.md): the marker's delivery runs the same check (api.arrivals)
EVENT_GRID_WAIT_S = 30.0


@pytest.mark.parametrize("answer", ["no such name", "no data", "resolver down", "refused"])
def test_the_edges_check_says_a_missing_images_host_without_the_storage_sdks_back_offs(
        answer: str, resolver: Any, tmp_path: Any) -> None:
    """``_check_source`` with the client ``clients.source_store`` really builds (a SAS from the secrets file): the
    request's (allowed) account whose host DNS says does not exist is refused after one try, with no back-off, where
    the storage SDK's retries waited 18 + 24 + 42 s first (``storage_refs.missing_host_not_retried``), past Event
    Grid's 30-s wait for a marker delivery's answer and long for an HTTP caller. A resolver that did not answer and
    a refused connection are busy after the SDK's retries, as before (their back-offs recorded, not slept)."""
    from api import starters

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"images-sas": "sv=2024-01-01&sig=abc"}))
    resolver(*{"no such name": NO_SUCH_NAME[0], "no data": NO_SUCH_NAME[1]}.get(answer, RESOLVER_DOWN))
    with refused_url() as refused:
        account = refused if answer == "refused" else NO_SUCH_ACCOUNT
        settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                      "TRAPBATCH_LOCAL_SECRETS_FILE": str(secrets),
                                      "TRAPBATCH_SOURCE_ACCOUNTS": account})
        request = parse_task_request({"container": "images", "source_account_url": account,
                                      "credential_secret": "images-sas"}, "MDV5A")
        with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
            starters._check_source(request, settings)
    if answer in ("no such name", "no data"):
        _check(failed.value, False, "nosuchaccount.invalid")
        assert resolver.slept == [], resolver.slept
        return
    assert isinstance(failed.value, SourceBusy), failed.value
    assert len(resolver.slept) == 3 and sum(resolver.slept) > EVENT_GRID_WAIT_S, resolver.slept


@pytest.mark.parametrize("read", ["container", "image_list"])
def test_the_edge_names_the_apps_storage_setting_when_its_own_accounts_host_does_not_exist(
        read: str, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request without ``source_account_url`` reads trapbatch's own account (``_check_source``: the container, then
    the image list): when DNS says its host does not exist, the hint names the app's storage setting
    (``AzureWebJobsStorage``, what ``core.settings`` reads), not "the request's source_account_url", which the
    request did not name and whose fix could not help."""
    from api import starters

    resolver(*NO_SUCH_NAME[0])
    own = _store(NO_SUCH_ACCOUNT)
    if read == "image_list":  # the container check passes: the list's read is the one that meets DNS
        monkeypatch.setattr(own, "container_exists", lambda container: True)
    monkeypatch.setattr(starters.clients, "source_store", lambda *a, **kw: own)
    body = {"container": "images", **({"image_list": "l.csv"} if read == "image_list" else {})}
    with pytest.raises(SourceUnavailable) as failed:
        starters._check_source(parse_task_request(body, "MDV5A"), _settings(NO_SUCH_ACCOUNT))
    err = failed.value
    assert "host name nosuchaccount.invalid does not resolve" in err.message, err.message
    assert "trapbatch's storage account" in err.hint and "AzureWebJobsStorage" in err.hint, err.hint
    assert "source_account_url" not in err.hint, err.hint
    assert err.missing_host == "nosuchaccount.invalid"


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_an_image_list_in_an_account_whose_host_does_not_exist_is_refused(
        errno: int, text: str, busy: bool, resolver: Any) -> None:
    """``adapters.image_lists.open_image_list`` (the edge and the enumeration read lists through it)."""
    resolver(errno, text)
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        with image_lists.open_image_list(_store(NO_SUCH_ACCOUNT), "images", "l.csv", 10**6):
            pass
    _check(failed.value, busy, "nosuchaccount.invalid")


@pytest.mark.parametrize("when", ["open", "read"])
def test_an_image_list_whose_failure_does_not_name_the_missing_host_carries_the_accounts_host(
        when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "no such name" whose chain does not say which host (a bare ``gaierror``: ``unresolvable_host`` gives ""),
    at the list's open or while it is read: the refusal carries the account URL's host as ``missing_host``, as
    ``api.starters._check_source``'s does, so the drop trigger has a name to ask DNS about again
    (``storage_errors.after_dns_asked_again``). Before, it carried "", and such a drop was refused for good at once."""
    import io
    import socket

    from azure.core.exceptions import ServiceRequestError

    failure = ServiceRequestError("Failed to resolve", error=socket.gaierror(socket.EAI_NONAME,
                                                                              "Name or service not known"))

    class Reader(io.RawIOBase):
        size = 10

        def __init__(self, store: BlobStore, container: str, name: str) -> None:
            super().__init__()
            if when == "open":
                raise failure

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise failure

    monkeypatch.setattr(image_lists, "BlobReader", Reader)
    with pytest.raises(SourceUnavailable) as failed:
        with image_lists.open_image_list(_store(NO_SUCH_ACCOUNT), "images", "l.csv", 10**6) as fp:
            fp.read()
    assert "host name (in the account URL) does not resolve" in failed.value.message, failed.value.message
    assert failed.value.missing_host == "nosuchaccount.invalid"


def test_a_refused_connection_to_the_source_account_is_still_busy(resolver: Any) -> None:
    with refused_url() as refused, pytest.raises(SourceBusy):
        with image_lists.open_image_list(_store(refused), "images", "l.csv", 10**6):
            pass


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_a_key_vault_whose_host_does_not_exist_is_a_refusal_at_the_edge(
        errno: int, text: str, busy: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clients.source_store`` reading the request's secret from the (real ``SecretClient``) vault: 400
    ``SourceUnavailable`` naming the vault's host and ``TRAPBATCH_KEY_VAULT_URL``, 503 ``SourceBusy`` for EAI_AGAIN."""
    resolver(errno, text)
    monkeypatch.setattr(clients, "secret_reader_from_env",
                        lambda env, **kw: key_vault_reader(NO_SUCH_VAULT, credential=FakeCredential()))
    partner = "https://partnerphotos.blob.core.windows.net"
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        clients.source_store(_settings(partner), partner, "partner-sas")
    err = failed.value
    assert isinstance(err, SourceBusy if busy else SourceUnavailable), err
    assert is_busy(_as_orchestrator_sees_it(err)) is busy
    if not busy:
        assert "host name nosuchvault.invalid does not resolve" in err.message
        assert "TRAPBATCH_KEY_VAULT_URL" in err.message and err.status_code == 400
        assert err.missing_host == "nosuchvault.invalid"  # the drop trigger asks DNS again before it refuses


class _OwnStore:
    """trapbatch's own account as the listing activities use it (its plan, units and parts): blobs in memory."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def read_bytes(self, container: str, name: str) -> bytes:
        return self.blobs[name]

    def read_json(self, container: str, name: str) -> Any:
        return json.loads(self.blobs[name])

    def write_json(self, container: str, name: str, value: Any) -> str:
        self.blobs[name] = json.dumps(value).encode()
        return "etag"

    write_compact_json = write_json

    def ensure_container(self, container: str) -> None: ...

    def create_bytes(self, container: str, name: str, data: bytes) -> bool:
        return self.blobs.setdefault(name, data) is data

    def read_json_or_none(self, container: str, name: str) -> Any:
        return self.read_json(container, name) if name in self.blobs else None


@pytest.mark.parametrize("listed", ["plan", "folder", "image_list"])
@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_an_enumeration_that_lists_an_account_whose_host_does_not_exist_is_not_waited_out_as_busy(
        errno: int, text: str, busy: bool, listed: str, resolver: Any) -> None:
    """``list_images_part`` (``activities.enumerate.run_list_part``) on an account deleted after the task started:
    the raw ``ServiceRequestError`` it raised is a name ``orchestrations.retries.BUSY_TYPES`` counts busy (~18 minutes
    of busy retries). Now ``SourceUnavailable`` naming the host and what to check, the task's failure line says so;
    a resolver that did not answer stays busy (``SourceBusy``). A folder leaf (a page of the container listing), an
    image list's names (``activities.image_list.existing_sorted``: listings and HEADs), and ``plan_listing``'s
    first level (``run_plan_listing``)."""
    from activities.enumerate import run_list_part, run_plan_listing

    resolver(errno, text)
    task = "task-00112233445566778899"
    body: dict[str, Any] = {"container": "images", "source_account_url": NO_SUCH_ACCOUNT}
    own = _OwnStore({layout.listing_plan_blob(task): json.dumps({"limits": ListingLimits().to_dict()}).encode(),
                     layout.listing_unit_blob(task, 0): json.dumps([{"prefix": "cam1/"}]).encode(),
                     layout.listing_list_unit_blob(task, 0): b'["cam1/a.jpg"]\n["cam1/b.jpg"]\n["cam2/c.jpg"]\n'})
    if listed == "image_list":
        body["image_list"] = "l.csv"
    request = parse_task_request(body, "MDV5A")
    settings, source, store = _settings(NO_SUCH_ACCOUNT), _store(NO_SUCH_ACCOUNT), cast(BlobStore, own)
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        if listed == "plan":  # plan_listing's first level
            run_plan_listing(task, request, settings, store, source)
        else:
            run_list_part(task, request, settings, store, 0, 0, source)
    assert "cannot list container 'images' in https://nosuchaccount.invalid" in failed.value.message
    _check(failed.value, busy, "nosuchaccount.invalid")
    if not busy:
        line = failure_line(Exception(f"Orchestrator function 'enumeration' failed: "
                                      f"{_as_orchestrator_sees_it(failed.value)}"))
        assert "host name nosuchaccount.invalid does not resolve" in line and "source_account_url" in line, line


OWN_ACCOUNT = ("DefaultEndpointsProtocol=https;AccountName=nosuchaccount;AccountKey=a2V5;"
               "BlobEndpoint=https://nosuchaccount.invalid;")


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_the_apps_own_storage_whose_host_does_not_exist_is_a_setting_to_fix_not_retry_in_a_minute(
        errno: int, text: str, busy: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """trapbatch's own account (``AzureWebJobsStorage``, through ``clients.store`` and the SDK's retries) whose host
    DNS says does not exist: the HTTP edge answered 503 "retry in a minute" (``StorageUnavailable``); now 500
    ``StorageHostUnresolvable`` naming the host and the setting, without ``Retry-After``, and not a name the
    orchestrations count busy. A resolver that did not answer stays 503."""
    import asyncio

    import azure.functions as func

    from api.edge import http_edge
    from core.errors import StorageHostUnresolvable, StorageUnavailable

    resolver(errno, text)  # the storage SDK's retries (through the sub-client's TransportWrapper) do not sleep
    store = clients.store(Settings.from_env({"AzureWebJobsStorage": OWN_ACCOUNT}))

    @http_edge
    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.to_thread(store.read_json, "trapbatch", "tasks/t/request.json")
        raise AssertionError("the read succeeded")

    response = asyncio.run(handler(func.HttpRequest("GET", "http://h/api/tasks/t", body=b"")))
    body = json.loads(response.get_body())
    assert "a2V5" not in json.dumps(body)
    if busy:
        assert response.status_code == StorageUnavailable.status_code == 503 and "Retry-After" in response.headers
        return
    assert response.status_code == StorageHostUnresolvable.status_code == 500, body
    assert "Retry-After" not in response.headers
    assert "storage host name nosuchaccount.invalid does not resolve" in body["error"], body
    assert "nosuchaccount.invalid does not resolve" in body["hint"] and "AzureWebJobsStorage" in body["hint"], body
    assert "retry in a minute" not in body["hint"]
    assert not is_busy(_as_orchestrator_sees_it(StorageHostUnresolvable(body["error"], body["hint"])))


def test_an_enumeration_that_meets_a_dns_blip_of_the_source_account_waits_it_out_as_busy(
        resolver: Any, monkeypatch: pytest.MonkeyPatch, dns_waits: DnsWaits) -> None:
    """On Azure a lookup of an account that exists can say "no such name" for a while (Azure/azure-storage-python#541:
    "[Errno -2] Name or service not known" during network fabric reconfigurations of up to ~120 s). A listing that
    met it asks DNS again for up to ``storage_errors.SOURCE_HOST_GONE_AFTER_S`` before it calls the account missing:
    a host that resolves again is ``SourceBusy`` (the orchestration waits it out), one still missing then is the
    refusal above. Before, the first "no such name" failed the task's enumeration as not busy, after ~6 s of the
    activity's own retries."""
    import socket

    from activities.enumerate import run_plan_listing
    from adapters import storage_errors

    resolver(*NO_SUCH_NAME[0])
    waited = dns_waits.slept
    assert storage_errors.SOURCE_HOST_GONE_AFTER_S >= 120
    failing = socket.getaddrinfo
    asked: list[str] = []

    def back_on_the_third_ask(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            asked.append(host)
            if len(asked) >= 3:  # the listing's own lookup, then two asks while confirming
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
        return failing(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", back_on_the_third_ask)
    task = "task-00112233445566778899"
    request = parse_task_request({"container": "images", "source_account_url": NO_SUCH_ACCOUNT}, "MDV5A")
    own = _OwnStore({layout.listing_plan_blob(task): json.dumps({"limits": ListingLimits().to_dict()}).encode()})
    with pytest.raises(SourceBusy) as failed:
        run_plan_listing(task, request, _settings(NO_SUCH_ACCOUNT), cast(BlobStore, own), _store(NO_SUCH_ACCOUNT))
    _check(failed.value, True, "nosuchaccount.invalid")
    assert 0 < sum(waited) < storage_errors.SOURCE_HOST_GONE_AFTER_S, waited


def test_a_listing_whose_failure_does_not_name_the_missing_host_asks_dns_about_the_accounts_host(
        monkeypatch: pytest.MonkeyPatch, dns_waits: DnsWaits) -> None:
    """A "no such name" whose chain does not say which host (``unresolvable_host`` gives "": a ``gaierror`` wrapped
    without urllib3's connection) is asked about again too, by the account URL's host: the one the listing looked
    up. Before, such a failure skipped the re-ask and failed the enumeration as a refusal at the first answer."""
    import socket

    from azure.core.exceptions import ServiceRequestError

    from adapters.storage_errors import SOURCE_HOST_GONE_AFTER_S, source_listing
    from gpu_batch.storage_refs import unresolvable_host

    failure = ServiceRequestError("Failed to resolve", error=socket.gaierror(socket.EAI_NONAME,
                                                                              "Name or service not known"))
    assert unresolvable_host(failure) == ""
    real = socket.getaddrinfo
    asked: list[str] = []
    back = [False]

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            asked.append(host)
            if not back[0]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    back[0] = True  # a blip: the account's host resolves at the first ask
    with pytest.raises(SourceBusy) as busy:
        with source_listing(NO_SUCH_ACCOUNT, "images"):
            raise failure
    assert asked == ["nosuchaccount.invalid"] and "nosuchaccount.invalid" in busy.value.message, asked
    assert dns_waits.slept == [15.0], dns_waits.slept
    dns_waits.slept.clear()
    back[0] = False  # gone: still "no such name" when the grace ends, then the refusal as before
    with pytest.raises(SourceUnavailable) as refused:
        with source_listing(NO_SUCH_ACCOUNT, "images"):
            raise failure
    assert sum(dns_waits.slept) == pytest.approx(SOURCE_HOST_GONE_AFTER_S), dns_waits.slept
    assert "host name (in the account URL) does not resolve" in refused.value.message


@pytest.mark.parametrize("own", [False, True])
def test_an_image_lists_plan_that_meets_a_dns_blip_waits_it_out_as_busy_and_names_the_right_account(
        own: bool, monkeypatch: pytest.MonkeyPatch, dns_waits: DnsWaits) -> None:
    """``plan_listing`` of a task started from an image list reads the list itself (``activities.image_list``,
    ``open_image_list``), which turned the SDK's error into the refusal at once: one "no such name" (a blip of an
    account that exists, up to ~120 s on Azure) failed the enumeration, where a listing asks DNS again first
    (``source_listing``). Now the list's read asks again too: busy if the host comes back, the refusal as before if
    it is still missing; and for a request that names no ``source_account_url`` the list is in trapbatch's own
    account, so the refusal names its setting, not the request's ``source_account_url``."""
    import socket

    from activities.enumerate import run_plan_listing
    from adapters.storage_errors import SOURCE_HOST_GONE_AFTER_S

    real = socket.getaddrinfo
    back = [False]

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            if not back[0] or not dns_waits.slept:  # the read's own lookups say no such name
                raise socket.gaierror(*NO_SUCH_NAME[0])
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    task = "task-00112233445566778899"
    body: dict[str, Any] = {"container": "images", "image_list": "l.csv"}
    if not own:
        body["source_account_url"] = NO_SUCH_ACCOUNT
    request = parse_task_request(body, "MDV5A")
    store = cast(BlobStore, _OwnStore({layout.listing_plan_blob(task): json.dumps(
        {"limits": ListingLimits().to_dict()}).encode()}))
    back[0] = True  # a blip: the host resolves when asked again
    with pytest.raises(SourceBusy) as busy:
        run_plan_listing(task, request, _settings(NO_SUCH_ACCOUNT), store, _store(NO_SUCH_ACCOUNT))
    assert "nosuchaccount.invalid" in busy.value.message and is_busy(_as_orchestrator_sees_it(busy.value))
    # the busy answer's hint names the account the list is in: trapbatch's own (its setting), or the images' account
    assert ("AzureWebJobsStorage" in busy.value.hint) is own, busy.value.hint
    assert ("the images' storage account" in busy.value.hint) is not own, busy.value.hint
    dns_waits.slept.clear()
    back[0] = False  # gone
    with pytest.raises(SourceUnavailable) as refused:
        run_plan_listing(task, request, _settings(NO_SUCH_ACCOUNT), store, _store(NO_SUCH_ACCOUNT))
    assert sum(dns_waits.slept) == pytest.approx(SOURCE_HOST_GONE_AFTER_S), dns_waits.slept
    assert "nosuchaccount.invalid does not resolve" in refused.value.hint, refused.value.hint
    assert ("AzureWebJobsStorage" in refused.value.hint) is own, refused.value.hint
    assert ("source_account_url" in refused.value.hint) is not own, refused.value.hint


def test_a_listing_whose_dns_goes_quiet_while_asked_again_is_busy_and_names_the_images_account(
        monkeypatch: pytest.MonkeyPatch, dns_waits: DnsWaits) -> None:
    """A listing that found the images' account's host missing, then got no answer either way from DNS when it asked
    again (EAI_AGAIN: ``host_resolves`` None), is busy (the orchestration waits it out, as any resolver that did not
    answer), not the refusal that fails the enumeration: DNS never said "no such name" again. Its hint, like that of
    a host that resolves again, names the images' account (the listing only reads the account a request names), not
    trapbatch's own storage setting."""
    import socket

    from azure.core.exceptions import ServiceRequestError

    from adapters.storage_errors import source_listing

    monkeypatch.setattr("gpu_batch.storage_refs.host_resolves", lambda host, port=443: None)
    failure = ServiceRequestError("Failed to resolve", error=socket.gaierror(*NO_SUCH_NAME[0]))
    with pytest.raises(SourceBusy) as busy:
        with source_listing(NO_SUCH_ACCOUNT, "images"):
            raise failure
    assert dns_waits.slept == [15.0], dns_waits.slept
    assert "the images' storage account" in busy.value.hint, busy.value.hint
    assert "AzureWebJobsStorage" not in busy.value.hint, busy.value.hint


@pytest.mark.parametrize("dns", [True, None])
def test_a_drop_refusal_for_trapbatchs_own_storage_host_asks_again_and_is_its_busy_kind(
        dns: bool | None, resolver: Any, monkeypatch: pytest.MonkeyPatch, dns_waits: DnsWaits) -> None:
    """``after_dns_asked_again`` (the drop trigger, ``asking_dns_again`` around an image list's read) on
    ``storage_error``'s refusal of trapbatch's own account whose host DNS said does not exist: ``storage_error``
    records the host (``missing_host``), which is asked again; when it resolves again (True) or DNS then gives no
    answer either way (None), the answer is ``StorageUnavailable`` (503, "retry in a minute": the own account's busy
    kind, not a ``SourceBusy`` about the images' account), saying which; a source refusal likewise becomes busy
    when DNS goes quiet, not the refusal that stays beside the drop. A refusal that names no host is answered as it
    is, without asking DNS (asking about "" would wait out the whole grace first)."""
    from adapters.storage_errors import after_dns_asked_again, asking_dns_again, source_error, storage_error
    from core.errors import StorageHostUnresolvable, StorageUnavailable
    from gpu_batch.tests.test_storage_refs import _blob_failure

    resolver(*NO_SUCH_NAME[0])
    failure = _blob_failure(NO_SUCH_ACCOUNT)
    refused = storage_error(failure, "checking the container")
    assert isinstance(refused, StorageHostUnresolvable) and refused.missing_host == "nosuchaccount.invalid"
    monkeypatch.setattr("gpu_batch.storage_refs.host_resolves", lambda host, port=443: dns)
    answer = after_dns_asked_again(refused)
    assert type(answer) is StorageUnavailable and answer.status_code == 503, answer
    said = "resolves again" if dns else "then got no answer from DNS either way"
    assert f"its host name nosuchaccount.invalid {said}" in answer.message, answer.message
    assert dns_waits.slept == [15.0], dns_waits.slept
    with pytest.raises(SourceBusy, match=said) as busy:
        with asking_dns_again():
            raise source_error(failure, "reading the image list", "grant it")
    assert "the images' storage account" in busy.value.hint, busy.value.hint
    plain = SourceUnavailable("cannot list container 'images': HttpResponseError", "grant it")
    assert after_dns_asked_again(plain) is plain  # a refusal about no host: as it was, with no DNS asked
    assert dns_waits.slept == [15.0, 15.0], dns_waits.slept
