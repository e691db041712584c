"""A notification address that carries a secret stays out of the task's history: the request names the Key Vault
secret holding it (``notify_url_secret``, core/requests.py), the edge refuses one it could never send (api/starters.py),
the sending activity reads it (activities/notify.py), and a ``notify_url`` that visibly carries a secret is refused.

Why: Durable keeps a task's input and its activities' inputs and outputs in plain tables, and a Logic Apps trigger URL
carries a SAS (``sig``), a Functions URL its key (``code``), a chat webhook a secret in its path."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from activities.notify import AddressUnavailable, ReceiverFailed, send
from api import starters
from core import notify
from core.errors import RequestInvalid
from core.requests import TaskRequest, parse_task_request
from core.settings import Settings

SIGNING = "notify-signing-value"
HOOK_SIG = "Zq3sEcReTsIgNaTuRe"  # what a Logic Apps trigger URL's sig carries: must never leave the secret store
LOGIC_APP = ("https://prod-03.westus.logic.azure.com:443/workflows/c4ed9335/triggers/manual/run?api-version=2016-06-01"
             f"&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={HOOK_SIG}")
STATUS = {"stage": "completed", "images": 10, "failed": 1}
TASK = "task-0123456789abcdef0123"


# ------------------------------------------------------------------ the request


def test_notify_url_secret_is_a_secret_name_kept_with_the_request_and_not_part_of_the_task_id() -> None:
    plain = parse_task_request({"container": "cams"})
    named = parse_task_request({"container": "cams", "notify_url_secret": " lab-teams-hook "})
    told = parse_task_request({"container": "cams", "notify_url": "https://hooks.example.org/t"})
    assert named.notify_url_secret == "lab-teams-hook" and named.notify_url == ""
    assert named.task_id == plain.task_id == told.task_id  # a setting: posting it again finds the same task
    assert named.to_dict()["notify_url_secret"] == "lab-teams-hook" and TaskRequest.from_dict(named.to_dict()) == named
    # a request without it keeps the stored form (request file, orchestration input) it always had
    assert "notify_url_secret" not in plain.to_dict() and "notify_url_secret" not in told.to_dict()
    assert TaskRequest.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize("value", [LOGIC_APP, "lab_hook", "a" * 128, "hook/1"])
def test_notify_url_secret_must_be_a_name_and_the_refusal_never_repeats_it(value: str) -> None:
    """Someone who pastes the address itself gets told to store it, without the address echoed in the answer."""
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "notify_url_secret": value})
    said = info.value.message + info.value.hint
    assert "notify_url_secret" in info.value.message and value not in said and HOOK_SIG not in said


def test_notify_url_and_notify_url_secret_are_one_or_the_other() -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "notify_url": "https://hooks.example.org/t",
                            "notify_url_secret": "notify-url-lab-hook"})
    assert "cannot both be set" in info.value.message and "notify_url_secret" in info.value.hint
    # an empty notify_url is none
    blank = parse_task_request({"container": "cams", "notify_url": " ", "notify_url_secret": "notify-url-lab-hook"})
    assert blank.notify_url == "" and blank.notify_url_secret == "notify-url-lab-hook"


@pytest.mark.parametrize("url, names", [
    (LOGIC_APP, "sig"),
    ("https://fn.azurewebsites.net/api/hook?code=abc123", "code"),
    ("https://hooks.example.org/t?Token=abc", "token"),
    ("https://hooks.example.org/t?a=1&ACCESS_TOKEN=abc", "access_token"),
    ("https://hooks.example.org/t?%73ig=abc", "sig"),  # percent-encoded names are names
    ("https://acct.blob.core.windows.net/c?sv=2024-11-04&SE=2027-01-01", "se, sv"),
    ("https://hooks.example.org/t?api-key=abc&x=1", "api-key"),
    ("http://localhost:9/t?secret=abc", "secret"),
])
def test_a_notify_url_that_carries_a_secret_in_its_query_is_refused_and_told_to_use_the_secret(url: str,
                                                                                             names: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "notify_url": url})
    assert f"({names})" in info.value.message and "'notify_url_secret'" in info.value.hint
    assert "az keyvault secret set" in info.value.hint
    said = info.value.message + info.value.hint
    assert "abc" not in said and HOOK_SIG not in said and url not in said  # neither the value nor the address


WEBHOOK_SECRET = "xXwEbHoOkSeCrEtXx"


@pytest.mark.parametrize("url, receiver", [
    (f"https://hooks.slack.com/services/T0123/B0456/{WEBHOOK_SECRET}", "Slack"),
    (f"https://HOOKS.SLACK.COM/%73ervices/T0123/B0456/{WEBHOOK_SECRET}", "Slack"),  # case and percent-encoding alike
    (f"https://hooks.slack.com/triggers/T0123/1234/{WEBHOOK_SECRET}", "Slack"),
    (f"https://hooks.slack.com/workflows/T0123/A0/1234/{WEBHOOK_SECRET}", "Slack"),
    (f"https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/{WEBHOOK_SECRET}/c", "Teams"),
    (f"https://outlook.office.com/webhook/a@b/IncomingWebhook/{WEBHOOK_SECRET}/c", "Teams"),
    (f"https://discord.com/api/webhooks/1234567890/{WEBHOOK_SECRET}", "Discord"),
    (f"https://canary.discordapp.com/api/v10/webhooks/1234567890/{WEBHOOK_SECRET}", "Discord"),
    (f"https://hooks.slack.com./services/T0123/B0456/{WEBHOOK_SECRET}", "Slack"),  # the root's dot
])
def test_a_notify_url_whose_path_is_a_webhooks_secret_is_refused_and_told_to_use_the_secret(url: str,
                                                                                          receiver: str) -> None:
    """Slack, Teams and Discord webhooks keep their secret in the path, which the query check does not see."""
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "notify_url": url})
    assert receiver in info.value.message and "'notify_url_secret'" in info.value.hint
    assert "notify-url-<name>" in info.value.hint
    said = info.value.message + info.value.hint
    assert WEBHOOK_SECRET not in said and "T0123" not in said and "1234567890" not in said


@pytest.mark.parametrize("url", [
    "https://prod-03.westus.logic.azure.com:443/workflows/c4ed/triggers/manual/paths/invoke?api-version=2016-06-01"
    "&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=" + HOOK_SIG,
    "https://default1234.56.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/abc/"
    "triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=" + HOOK_SIG,
])
def test_power_automate_and_logic_apps_workflow_urls_are_refused_by_their_sig(url: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "notify_url": url})
    assert "(sig)" in info.value.message and HOOK_SIG not in info.value.message + info.value.hint


@pytest.mark.parametrize("url", ["https://hooks.slack.com/other", "https://notslack.example.org/services/a/b/c",
                                 "https://discord.com/channels/1/2", "https://evilhooks.slack.com.example.org/"
                                 "services/a", "https://webhook.office.com.example.org/webhookb2/x"])
def test_other_addresses_on_or_beside_those_hosts_are_still_taken(url: str) -> None:
    assert parse_task_request({"container": "cams", "notify_url": url}).notify_url == url


@pytest.mark.parametrize("url", ["https://hooks.example.org/t?site=a", "https://hooks.example.org/t?sv=1.0",
                                 "https://hooks.example.org/t?keys=1&codes=2", "https://hooks.example.org/sig/code"])
def test_a_query_without_a_secret_looking_parameter_is_still_taken(url: str) -> None:
    assert parse_task_request({"container": "cams", "notify_url": url}).notify_url == url


def test_a_task_started_with_such_a_notify_url_is_found_again_by_the_secret_that_replaces_it() -> None:
    """A request accepted before the refusal, posted again (a retry, resuming a failed task), is refused; the same
    request with the address moved into a secret is the same task (both are settings, not identity), so it finds
    the task rather than starting the work a second time."""
    body = {"container": "cams", "model": "MDV5A", "request_name": "site A", "notify_url": LOGIC_APP}
    before = TaskRequest(**body)  # what an earlier release took and stored
    with pytest.raises(RequestInvalid):
        parse_task_request(body)
    moved = parse_task_request({**body, "notify_url": None, "notify_url_secret": "notify-url-lab-hook"})
    assert moved.task_id == before.task_id and moved.task_id_for("ana") == before.task_id_for("ana")


# ------------------------------------------------------------------ the edge


def _settings(**env: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_MODEL": "MDV5A", **env})


class _Stored:
    """A task hub holding one running task whose input is ``request`` (None: no task)."""

    def __init__(self, request: dict[str, Any] | None = None) -> None:
        self.request = request

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if self.request is None:
            return SimpleNamespace(runtime_status=None, custom_status={}, input_=None)
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Running"), custom_status={"stage": "detecting"},
                               input_={"task_id": instance_id, "request": self.request})


@pytest.fixture
def local_store(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"notify-key": SIGNING}))
    return {"TRAPBATCH_LOCAL_SECRETS_FILE": str(path), "TRAPBATCH_NOTIFY_HOSTS": "hooks.example.org",
            "TRAPBATCH_NOTIFY_SECRET": "notify-key"}


@pytest.mark.parametrize("drop, said", [
    ("TRAPBATCH_LOCAL_SECRETS_FILE", "no Key Vault configured"),
    ("TRAPBATCH_NOTIFY_HOSTS", "TRAPBATCH_NOTIFY_HOSTS names no host"),
    ("TRAPBATCH_NOTIFY_SECRET", "TRAPBATCH_NOTIFY_SECRET"),
])
def test_the_edge_refuses_a_notify_url_secret_the_app_could_never_read_or_send(
        monkeypatch: pytest.MonkeyPatch, local_store: dict[str, str], drop: str, said: str) -> None:
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    body = {"container": "photos", "notify_url_secret": "notify-url-lab-hook"}
    env = {k: v for k, v in local_store.items() if k != drop}
    with pytest.raises(RequestInvalid) as info:
        asyncio.run(starters.start_task(_Stored(), body, _settings(**env)))
    assert info.value.status_code == 400 and said in info.value.message
    assert "'notify-url-lab-hook'" not in info.value.hint
    assert "notify_url_secret" in info.value.message + info.value.hint


def test_the_edge_refuses_the_signing_keys_own_secret_as_an_address(monkeypatch: pytest.MonkeyPatch,
                                                                      local_store: dict[str, str]) -> None:
    """Read as an address, the key would be sent nowhere (it is no URL), but naming it is a mistake said at once."""
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    with pytest.raises(RequestInvalid) as info:
        asyncio.run(starters.start_task(_Stored(), {"container": "photos", "notify_url_secret": "Notify-Key"},
                                        _settings(**local_store, TRAPBATCH_NOTIFY_URL_SECRET_PREFIX="notify-")))
    assert "signs notifications" in info.value.message and SIGNING not in info.value.message


def test_the_edge_takes_a_notify_url_secret_without_reading_it_and_names_it_when_not_applied(
        monkeypatch: pytest.MonkeyPatch, local_store: dict[str, str]) -> None:
    """The secret need not exist yet at the start (it is read when the task ends); a task found again that was
    started with the address in the clear says the secret was not applied to it (a re-run takes it)."""
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    body = {"container": "photos", "notify_url_secret": "notify-url-not-created-yet"}
    started, task_id = asyncio.run(starters.start_task(_Stored({"container": "photos"}), body,
                                                       _settings(**local_store)))
    assert not started and task_id == parse_task_request({"container": "photos", "model": "MDV5A"}).task_id
    stored = TaskRequest(container="photos", model="MDV5A", notify_url="https://hooks.example.org/old").to_dict()
    posted = parse_task_request({**body, "model": "MDV5A"}).to_dict()
    links = {"status_url": "s", "results_url": "r"}
    answer = asyncio.run(starters._known_task(_Stored(stored), task_id, links, posted))  # type: ignore[arg-type]
    assert answer["not_applied"] == ["notify_url", "notify_url_secret"]
    assert "notify_url, notify_url_secret differ from the task's and were not applied: they apply" in answer["hint"]
    # one field, in the singular: "preview_threshold differ from the task's" read wrong
    moved = _Stored({**posted, "preview_threshold": 0.5})
    one = asyncio.run(starters._known_task(moved, task_id, links, posted))  # type: ignore[arg-type]
    assert one["not_applied"] == ["preview_threshold"]
    assert "; preview_threshold differs from the task's and was not applied: it applies to a run" in one["hint"]
    same = asyncio.run(starters._known_task(_Stored(posted), task_id, links, posted))  # type: ignore[arg-type]
    assert "not_applied" not in same


# ------------------------------------------------------------------ the sending activity


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver on loopback (``answer``: its status code; ``got``: what arrived, path and body)."""
    state: dict[str, Any] = {"answer": 204, "got": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            state["got"].append((self.path, dict(self.headers), raw))
            self.send_response(state["answer"])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["host"] = f"127.0.0.1:{server.server_port}"
    state["url"] = f"http://{state['host']}/workflows/x/run?sv=1.0&sig={HOOK_SIG}"
    yield state
    server.shutdown()


def _store(tmp_path: Path, **secrets: str) -> dict[str, str]:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"notify-key": SIGNING, **secrets}))
    return {"TRAPBATCH_LOCAL_SECRETS_FILE": str(path)}


def _payload(name: str) -> Any:
    return {"task_id": TASK, "url": "", "status": STATUS, "url_secret": name}


def test_the_activity_reads_the_address_from_the_secret_and_names_it_nowhere(
        receiver: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = _store(tmp_path, **{"notify-url-lab-hook": receiver["url"]})
    out = send(_payload("notify-url-lab-hook"), (receiver["host"],), "notify-key", env)

    assert out == {"sent": True, "status_code": 204, "reason": ""}
    [(path, headers, raw)] = receiver["got"]
    assert path == f"/workflows/x/run?sv=1.0&sig={HOOK_SIG}"  # the whole address, its query included
    assert notify.verify(SIGNING, raw, headers[notify.SIGNATURE_HEADER])
    assert HOOK_SIG not in caplog.text and receiver["host"] not in caplog.text
    assert "'notify-url-lab-hook'" in caplog.text


@pytest.mark.parametrize("address, said", [
    ("ftp://127.0.0.1/x?sig=" + HOOK_SIG, "is not an https address"),
    ("https://user:" + HOOK_SIG + "@hooks.example.org/x", "carries credentials or a fragment"),
    ("https://hooks.example.org/x#" + HOOK_SIG, "carries credentials or a fragment"),
    ("https://hooks.example.org:" + HOOK_SIG + "/x", "is no URL"),
    ("https://other.example.org/x?sig=" + HOOK_SIG, "not in TRAPBATCH_NOTIFY_HOSTS"),
    ("https://hooks.example.org/é?sig=" + HOOK_SIG, "other than ASCII"),
    ("https://" + "h" * 64 + ".example.org/x", "DNS"),
])
def test_an_address_the_app_would_not_send_to_is_the_reason_without_any_of_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, address: str, said: str) -> None:
    caplog.set_level(logging.DEBUG)
    out = send(_payload("notify-url-lab-hook"), ("hooks.example.org", "h" * 64 + ".example.org"), "notify-key",
               _store(tmp_path, **{"notify-url-lab-hook": address}))
    assert out["sent"] is False and said in out["reason"] and "'notify-url-lab-hook'" in out["reason"], out
    for text in (out["reason"], caplog.text):
        assert HOOK_SIG not in text and "example.org" not in text and "hhhh" not in text, text


def test_a_secret_not_in_the_store_is_tried_again_and_says_where_it_goes(tmp_path: Path) -> None:
    with pytest.raises(AddressUnavailable) as info:
        send(_payload("notify-url-lab-hook"), ("hooks.example.org",), "notify-key", _store(tmp_path))
    message = str(info.value)
    assert "'notify-url-lab-hook'" in message and "az keyvault secret set" in message and "SAS" not in message


def test_no_signing_key_or_the_signing_keys_name_is_not_sent_and_not_read(receiver: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    env = _store(tmp_path, **{"notify-url-lab-hook": receiver["url"]})
    unsigned = send(_payload("notify-url-lab-hook"), (receiver["host"],), "", env)
    the_key = send(_payload("NOTIFY-KEY"), (receiver["host"],), "notify-key", env, url_secret_prefix="notify-")
    assert not unsigned["sent"] and "TRAPBATCH_NOTIFY_SECRET" in unsigned["reason"]
    assert not the_key["sent"] and "signs notifications" in the_key["reason"] and SIGNING not in the_key["reason"]
    assert receiver["got"] == []


def test_a_receiver_that_fails_is_named_by_the_secret_not_the_host(receiver: dict[str, Any], tmp_path: Path) -> None:
    receiver["answer"] = 503
    with pytest.raises(ReceiverFailed) as info:
        send(_payload("notify-url-lab-hook"), (receiver["host"],), "notify-key",
             _store(tmp_path, **{"notify-url-lab-hook": receiver["url"]}))
    assert "503" in str(info.value) and "'notify-url-lab-hook'" in str(info.value)
    assert "127.0.0.1" not in str(info.value)


@pytest.mark.parametrize("address", [
    "http://{host}/services/T0/B0/" + HOOK_SIG + " x",  # a space: http.client refuses the path, quoting it
    "http://{host}/workflows/x/run?sv=1.0&sig=" + HOOK_SIG + " x",
])
def test_an_address_urllib_refuses_is_the_reason_without_any_of_it(
        receiver: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, address: str) -> None:
    """http.client refuses a path with a space (``InvalidURL: URL can't contain control characters. '<path>'``,
    cpython Lib/http/client.py ``_validate_path``, characters ``\\x00-\\x20\\x7f``), a ValueError the activity did not
    catch: the path, a Slack/Teams/Discord webhook's secret, reached the failure Durable records and the reason."""
    caplog.set_level(logging.DEBUG)
    env = _store(tmp_path, **{"notify-url-lab-hook": address.format(host=receiver["host"])})
    out = send(_payload("notify-url-lab-hook"), (receiver["host"],), "notify-key", env)
    assert out["sent"] is False and "'notify-url-lab-hook'" in out["reason"] and "space" in out["reason"], out
    assert HOOK_SIG not in out["reason"] + caplog.text and receiver["got"] == []


def test_whatever_urllib_refuses_past_the_checks_is_said_by_its_type_only(
        receiver: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError from urllib (InvalidURL quotes the path) is not let out of the activity, whatever check missed it."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(notify, "address_problem", lambda url: None)
    env = _store(tmp_path, **{"notify-url-lab-hook": f"http://{receiver['host']}/services/{HOOK_SIG}\x7f"})
    out = send(_payload("notify-url-lab-hook"), (receiver["host"],), "notify-key", env)
    assert out["sent"] is False and "InvalidURL" in out["reason"] and "'notify-url-lab-hook'" in out["reason"], out
    assert HOOK_SIG not in out["reason"] + caplog.text



# ------------------------------------------------------------------ only secrets stored as notification addresses


def test_the_prefix_is_an_operator_setting_whose_default_is_notify_url() -> None:
    assert _settings().notify_url_secret_prefix == notify.URL_SECRET_PREFIX == "notify-url-"
    assert _settings(TRAPBATCH_NOTIFY_URL_SECRET_PREFIX=" ").notify_url_secret_prefix == "notify-url-"  # no opt-out
    assert _settings(TRAPBATCH_NOTIFY_URL_SECRET_PREFIX="lab-hooks-").notify_url_secret_prefix == "lab-hooks-"


@pytest.mark.parametrize("name", ["partner-sas", "notify-key", "Notify-UrlX"])
def test_the_edge_refuses_a_secret_outside_the_prefix_whatever_the_store_holds(
        monkeypatch: pytest.MonkeyPatch, local_store: dict[str, str], name: str) -> None:
    """A caller who names another caller's credential_secret (or any secret of the store) learns nothing of it:
    refused before anything is read, with the same words whether it exists or not."""
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    with pytest.raises(RequestInvalid) as info:
        asyncio.run(starters.start_task(_Stored(), {"container": "photos", "notify_url_secret": name},
                                        _settings(**local_store)))
    assert info.value.status_code == 400 and "'notify-url-'" in info.value.message, info.value.message
    assert "TRAPBATCH_NOTIFY_URL_SECRET_PREFIX" in info.value.message and "signs" not in info.value.message


def test_the_activity_does_not_read_or_send_to_a_secret_outside_the_prefix(
        receiver: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A task started before the operator narrowed the prefix, or an input that names another secret, reads nothing:
    the reason is the same for a secret that holds an allowed address and for one that does not exist."""
    caplog.set_level(logging.DEBUG)
    env = _store(tmp_path, **{"partner-sas": receiver["url"]})
    there = send(_payload("partner-sas"), (receiver["host"],), "notify-key", env)
    absent = send(_payload("partner-none"), (receiver["host"],), "notify-key", env)
    assert there["sent"] is False and "TRAPBATCH_NOTIFY_URL_SECRET_PREFIX" in there["reason"], there
    assert there["reason"].replace("partner-sas", "X") == absent["reason"].replace("partner-none", "X")
    assert receiver["got"] == [] and HOOK_SIG not in caplog.text + there["reason"]
