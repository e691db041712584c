"""Word when a task ends: the signed body (core/notify.py), the request field, and the activity that sends it to a real
local HTTP receiver (activities/notify.py)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from activities import notify as notify_activity
from activities.notify import ReceiverFailed, send
from adapters import clients
from core import notify
from core.errors import RequestInvalid
from core.requests import parse_task_request
from core.settings import Settings
from gpu_batch.storage_refs import KEY_VAULT_ENV, secret_reader_from_env
from gpu_batch.tests.test_pool_azure_batch import FakeCredential
from gpu_batch.tests.test_storage_refs import FakeVault

SECRET = "notify-secret-value"
STATUS = {"stage": "completed", "images": 10, "failed": 1, "previews": {"folder": "task-x-0123abcd"},
          "results": {"container": "trapbatch", "blob": "results/t/detections.json"}}


def test_the_body_is_signed_and_the_receiver_can_verify_it() -> None:
    raw = notify.body("task-0123456789abcdef0123", STATUS)
    doc = json.loads(raw)
    assert doc["task_id"] == "task-0123456789abcdef0123" and doc["stage"] == "completed"
    assert "previews" not in doc  # the preview folder's address is unguessable on purpose: never sent around
    header = notify.signature(SECRET, raw)
    assert header.startswith("sha256=") and notify.verify(SECRET, raw, header)
    assert not notify.verify("other secret", raw, header) and not notify.verify(SECRET, raw + b" ", header)


FAILURES: dict[str, Any] = {  # every failure a pipeline acting on the word must see
    "failure_reasons": {"auth": 2, "undecodable": 1},
    "repeated_detections": {"locations": 0, "blob": "", "error": "MemoryError: search ran out",
                            "hint": "POST .../repeats/search to run it again"},
    "not_images": {"files": 12040, "kinds": {".mp4": 12000, ".txt": 40}},
    "pool_job_error": "could not close pool job task-x: run `az batch job delete --job-id task-x`",
    "shards_given_up": {"count": 2, "examples": ["shard-00003", "shard-00007"], "hint": "run it again"},
    "damaged": {"count": 1, "examples": ["cam1/IMG_0007.JPG"], "blob": "results/t/damaged.csv",
                "hint": "copy these photos again from the cards"},  # photos cut short: re-copy them
    "results": {"container": "trapbatch", "blob": "results/t/detections.json",
                "exports_error": "exports failed: TimeoutError"},
}


def test_the_body_carries_every_failure_and_the_previews_expiry_but_not_their_address() -> None:
    previews = {"container": "$web", "counts": {"animal": 3}, "expires": "2026-04-01T00:00:00+00:00",
                "expiry_error": "HttpResponseError: throttled", "not_published": "deleted",
                "pictures_missing": {"count": 2, "of": 9, "reasons": {"unreadable": 2}, "examples": ["a/1.jpg"]},
                "folder": "task-x-unguessable0123", "blob": "task-x-unguessable0123/index.html",
                "public_url": "https://web.example/task-x-unguessable0123/index.html", "local_url": "http://h/web/x"}
    status = {**STATUS, **FAILURES, "previews": previews, "pool_job": "task-x", "owner": "ana", "generation": "r1",
              "notification": {"sent": True}}
    doc = json.loads(notify.body("task-0123456789abcdef0123", status))
    for key, value in FAILURES.items():
        assert doc[key] == value, key
    assert doc["previews"] == {k: previews[k] for k in ("container", "counts", "expires", "expiry_error",
                                                         "not_published", "pictures_missing")}
    assert "unguessable" not in json.dumps(doc) and "web.example" not in json.dumps(doc)
    assert not {"pool_job", "owner", "generation", "notification"} & set(doc)
    assert "previews" not in notify.public_status("t", {"stage": "failed", "previews": {"folder": "f"}})


def test_the_body_names_the_pool_job_only_in_the_command_that_ends_it_as_docs_cli_md_says() -> None:
    """A job left open is said with the command that ends it (orchestrations.task ``_job_left_open``), which needs
    the job's name: the notification carries that text whole, and not the ``pool_job`` field. docs/cli.md "Word when a
    task ends" said the notification never carried the pool job's name, which a receiver's author took at its word."""
    from orchestrations.task import _job_left_open

    job = "task-0123456789abcdef0123_r261206200000ab12"
    status = {**STATUS, "pool_job": job, "pool_job_error": _job_left_open(job, RuntimeError("BatchUnavailable"))}
    doc = notify.public_status("task-0123456789abcdef0123", status)
    assert "pool_job" not in doc
    assert doc["pool_job_error"] == status["pool_job_error"]
    assert f"'az batch job stop --job-id {job}'" in doc["pool_job_error"]
    section = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8").split(
        "## Word when a task ends")[1].split("\n## ")[0]
    assert "nor the pool job's name" not in section
    assert "`pool_job_error` (a pool job left open, still holding nodes: its name and the command that ends it)" in (
        " ".join(section.split()))


@pytest.mark.parametrize("url,allowed,ok", [
    ("https://hooks.example.org/x", ("hooks.example.org",), True),
    ("https://HOOKS.example.org/x", ("hooks.example.org",), True),
    ("https://hooks.example.org.evil.net/x", ("hooks.example.org",), False),
    ("http://127.0.0.1:8080/x", ("127.0.0.1",), False),  # a port must be named
    ("http://127.0.0.1:8080/x", ("127.0.0.1:8080",), True),
    ("https://hooks.example.org/x", (), False)])
def test_only_allow_listed_hosts(url: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert notify.host_allowed(url, allowed) is ok


def test_notify_url_is_validated_and_not_part_of_the_task_id() -> None:
    plain = parse_task_request({"container": "cams"})
    told = parse_task_request({"container": "cams", "notify_url": "https://hooks.example.org/t"})
    assert told.notify_url == "https://hooks.example.org/t" and told.task_id == plain.task_id
    for bad in ("http://hooks.example.org/t", "https://user:pw@hooks.example.org/", "ftp://x/", "https://", 5):
        with pytest.raises(RequestInvalid, match="notify_url"):
            parse_task_request({"container": "cams", "notify_url": bad})
    assert parse_task_request({"container": "cams", "notify_url": "http://127.0.0.1:9/x"}).notify_url


def test_settings_read_the_allow_list_and_the_secret_name() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_NOTIFY_HOSTS": "Hooks.example.org, 127.0.0.1:81",
                           "TRAPBATCH_NOTIFY_SECRET": "notify-key"})
    assert s.notify_hosts == ("hooks.example.org", "127.0.0.1:81") and s.notify_secret == "notify-key"


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver on loopback; ``answer`` sets its status code, ``got`` collects what arrived."""
    state: dict[str, Any] = {"answer": 204, "got": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            state["got"].append((dict(self.headers), raw))
            self.send_response(state["answer"])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}/hook"
    state["host"] = f"127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()


@pytest.fixture
def secrets_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"notify-key": SECRET}))
    return {"TRAPBATCH_LOCAL_SECRETS_FILE": str(path)}


def test_the_activity_posts_one_signed_notification(receiver: dict[str, Any], secrets_env: dict[str, str]) -> None:
    out = send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
               (receiver["host"],), "notify-key", secrets_env)

    assert out == {"sent": True, "status_code": 204, "reason": ""}
    [(headers, raw)] = receiver["got"]
    assert notify.verify(SECRET, raw, headers[notify.SIGNATURE_HEADER])
    assert headers[notify.DELIVERY_HEADER] == "task-0123456789abcdef0123/completed"
    assert json.loads(raw)["images"] == 10 and SECRET.encode() not in raw


def test_the_signed_body_says_when_it_was_sent_so_a_replayed_one_can_be_refused(
        receiver: dict[str, Any], secrets_env: dict[str, str]) -> None:
    """The signature proves who wrote a body, not when: a body recorded on its way verified when sent again days
    later. ``sent_at`` (ISO 8601, UTC, whole seconds) is inside what is signed, so a receiver can refuse an old one;
    changed, the signature fails."""
    before = datetime.now(timezone.utc).replace(microsecond=0)
    send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
         (receiver["host"],), "notify-key", secrets_env)
    after = datetime.now(timezone.utc)
    [(headers, raw)] = receiver["got"]
    sent = datetime.fromisoformat(json.loads(raw)["sent_at"])
    assert sent.utcoffset() == timedelta(0) and before <= sent <= after
    replayed = raw.replace(json.dumps(json.loads(raw)["sent_at"]).encode(), b'"2026-01-01T00:00:00+00:00"')
    assert replayed != raw and not notify.verify(SECRET, replayed, headers[notify.SIGNATURE_HEADER])
    assert notify.verify(SECRET, raw, headers[notify.SIGNATURE_HEADER])


def test_the_body_and_the_delivery_id_name_the_run_so_two_runs_ends_differ(
        receiver: dict[str, Any], secrets_env: dict[str, str]) -> None:
    """A task ends once per run (a re-run, a run resuming a terminated one): the body's ``run`` says which, and the
    delivery id (``<task id>/<run>/<stage>``, the event's id) differs between runs. Before, a re-run's "completed"
    had the first run's delivery id, and a receiver that drops repeats by it, as docs/cli.md advises, dropped it. A
    run without an id is sent as before."""
    tid = "task-0123456789abcdef0123"
    for run in ("r261201120000ab12", "r261201130000cd34", ""):
        payload = {"task_id": tid, "url": receiver["url"], "status": STATUS, **({"run": run} if run else {})}
        assert send(payload, (receiver["host"],), "notify-key", secrets_env)["sent"]  # type: ignore[arg-type]

    [first, second, without] = receiver["got"]
    assert [h[notify.DELIVERY_HEADER] for h, _ in receiver["got"]] == [
        f"{tid}/r261201120000ab12/completed", f"{tid}/r261201130000cd34/completed", f"{tid}/completed"]
    assert json.loads(first[1])["run"] == "r261201120000ab12" and json.loads(second[1])["run"] == "r261201130000cd34"
    sent = json.loads(without[1])
    assert "run" not in sent and without[1] == notify.body(tid, STATUS, sent_at=sent["sent_at"])


def test_nothing_is_sent_to_a_host_off_the_list_or_without_a_secret(receiver: dict[str, Any],
                                                                   secrets_env: dict[str, str]) -> None:
    payload = {"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS}
    off = send(payload, ("hooks.example.org",), "notify-key", secrets_env)  # type: ignore[arg-type]
    unsigned = send(payload, (receiver["host"],), "", secrets_env)  # type: ignore[arg-type]
    assert not off["sent"] and "TRAPBATCH_NOTIFY_HOSTS" in off["reason"]
    assert not unsigned["sent"] and "TRAPBATCH_NOTIFY_SECRET" in unsigned["reason"]
    assert receiver["got"] == []


def test_a_receiver_error_raises_so_the_orchestrator_retries(receiver: dict[str, Any],
                                                             secrets_env: dict[str, str]) -> None:
    receiver["answer"] = 503
    with pytest.raises(ReceiverFailed, match="503"):
        send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
             (receiver["host"],), "notify-key", secrets_env)
    receiver["answer"] = 302  # a redirect is not followed (it could lead off the allow-list)
    with pytest.raises(ReceiverFailed, match="302"):
        send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
             (receiver["host"],), "notify-key", secrets_env)


@pytest.mark.parametrize("url, allowed, ok", [
    ("https://hooks.example.org:443/x", ("hooks.example.org",), True),  # was 'hooks.example.org:443': refused
    ("https://hooks.example.org/x", ("Hooks.Example.org:443",), True),
    ("https://hooks.example.org:8443/x", ("hooks.example.org",), False),
    ("https://hooks.example.org:8443/x", ("hooks.example.org:8443",), True),
    ("http://localhost:80/x", ("localhost",), True),
    ("http://localhost:8080/x", ("localhost",), False),
    ("http://localhost:80/x", ("localhost:80",), True),
    ("http://localhost/x", ("localhost:80",), True),
    ("http://hooks.example.org/x", ("hooks.example.org:443",), False),  # an https entry does not name http
])
def test_the_schemes_own_port_is_the_host_the_allow_list_names(url: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert notify.host_allowed(url, allowed) is ok


def test_the_activity_reads_the_signing_key_from_the_app_vault_not_the_sources_vault(
        receiver: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU nodes read the sources' vault (TRAPBATCH_KEY_VAULT_URL) and decode untrusted images: a key kept there
    let a compromised node forge notifications. With TRAPBATCH_APP_KEY_VAULT_URL set, the activity asks that vault
    (Key Vault's HTTP API, through a fake transport) and never the sources' one, even with an old copy left there."""
    sources_url, app_url = "https://kv-abc.vault.azure.net/", "https://kva-abc.vault.azure.net/"
    vaults = {sources_url: FakeVault({"notify-key": "old copy the nodes can read"}),
              app_url: FakeVault({"notify-key": SECRET})}
    monkeypatch.setattr(notify_activity, "secret_reader_from_env", lambda env, **_: secret_reader_from_env(
        env, transport=vaults[env[KEY_VAULT_ENV]], credential=FakeCredential()))
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_KEY_VAULT_URL": sources_url,
           "TRAPBATCH_APP_KEY_VAULT_URL": app_url, "TRAPBATCH_NOTIFY_HOSTS": receiver["host"],
           "TRAPBATCH_NOTIFY_SECRET": "notify-key"}
    monkeypatch.setattr(clients, "settings", lambda: Settings.from_env(env))
    activity = notify_activity.notify_task_end._function.get_user_function()

    out = activity({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS})

    assert out == {"sent": True, "status_code": 204, "reason": ""}
    [(headers, raw)] = receiver["got"]
    assert notify.verify(SECRET, raw, headers[notify.SIGNATURE_HEADER])
    asked = vaults[app_url].requests[-1]
    assert asked.url.startswith(f"{app_url}secrets/notify-key/?api-version=")
    assert asked.headers["Authorization"] == "Bearer entra-token"
    assert vaults[sources_url].requests == []


def test_a_signing_key_missing_from_the_app_vault_says_where_it_goes_not_what_a_sas_token_needs(
        receiver: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret reader's words are for a source account's SAS token (create a SAS token; grant the GPU nodes' id):
    both wrong for the app's signing key, which the nodes must never read."""
    from activities.notify import SigningKeyUnavailable

    app_url = "https://kva-abc.vault.azure.net/"
    vault = FakeVault({})
    monkeypatch.setattr(notify_activity, "secret_reader_from_env", lambda env, **_: secret_reader_from_env(
        env, transport=vault, credential=FakeCredential()))
    with pytest.raises(SigningKeyUnavailable) as caught:
        send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
             (receiver["host"],), "notify-key", {KEY_VAULT_ENV: app_url})
    message = str(caught.value)
    assert "'notify-key'" in message and app_url in message and "AZURE_APP_KEY_VAULT_NAME" in message
    assert "SAS" not in message and "id-nodes" not in message
    assert receiver["got"] == []  # nothing unsigned was sent


def test_a_long_host_is_cut_in_every_reason_that_names_it(secrets_env: dict[str, str]) -> None:
    """A request's notify_url may be 2,000 characters, nearly all host (core.requests); the reasons that name it reach
    the task's status (``notification.reason``) and the log, so the host is cut where they are worded
    (``notify.HOST_SHOWN_CHARS``), not left whole for ``core.status_size.fit`` to find at the very end."""
    host = ".".join(["h" * 62] * 4)  # 251 characters: as long as DNS allows (253; labels at most 63)
    url = f"https://{host}/hook"
    refused = send({"task_id": "task-0123456789abcdef0123", "url": url, "status": STATUS},
                   ("hooks.example.org",), "notify-key", secrets_env)
    assert not refused["sent"] and "TRAPBATCH_NOTIFY_HOSTS" in refused["reason"]
    assert len(refused["reason"]) < 200 and host[: notify.HOST_SHOWN_CHARS - 1] + "…" in refused["reason"]
    with pytest.raises(ReceiverFailed) as failed:  # no such host: the failure after every retry names it too
        send({"task_id": "task-0123456789abcdef0123", "url": url, "status": STATUS},
             (host,), "notify-key", secrets_env)
    assert len(str(failed.value)) < 200 and str(failed.value).startswith("notification to hhh")
    assert notify.shown_host("https://Hooks.Example.org:8443/x") == "hooks.example.org:8443"  # short: whole


@pytest.mark.parametrize("host, problem", [
    ("h" * 64 + ".example.org", "label"), ("a..example.org", "label"),
    (".".join(["h" * 60] * 5), "over the 253"),
])
def test_a_host_dns_cannot_hold_is_refused_at_the_edge_and_not_sent(
        host: str, problem: str, secrets_env: dict[str, str]) -> None:
    """A label over 63 characters made ``urllib`` fail with the idna codec's UnicodeError ("label too long"), a
    receiver failure retried three times for a host that can never be reached; such a host is refused with the
    request and, for a request accepted before the check, not sent with the reason why."""
    url = f"https://{host}/hook"
    with pytest.raises(RequestInvalid, match=problem):
        parse_task_request({"container": "cams", "notify_url": url})
    refused = send({"task_id": "task-0123456789abcdef0123", "url": url, "status": STATUS},
                   (host.lower(),), "notify-key", secrets_env)
    assert not refused["sent"] and problem in refused["reason"] and len(refused["reason"]) < 250


def test_ip_literals_and_a_trailing_dot_are_host_names() -> None:
    for url in ("https://10.0.0.4/x", "https://[2001:db8::1]:8443/x", "https://hooks.example.org./x",
                "http://127.0.0.1:9/x", "https://" + ".".join(["h" * 63] * 3) + ".org/x"):
        assert notify.host_name_problem(url) is None, url


def test_the_body_is_canonical_json_signed_with_hmac_sha256() -> None:
    """A receiver may check the signature with any HMAC library and parse or re-serialize the body: compact JSON,
    keys sorted, and the hex HMAC-SHA256 of exactly those bytes with the secret."""
    raw = notify.body("t", {"stage": "completed", "images": 3, "owner": "ana"})
    assert raw == b'{"images":3,"stage":"completed","task_id":"t"}'
    assert notify.signature(SECRET, raw) == "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


def test_the_body_carries_the_times_and_every_count_of_the_final_status() -> None:
    public = ("stage", "started", "finished", "error", "images", "failed", "missing", "failed_fraction",
              "failure_reasons", "with_detections", "detections", "empty", "shards", "resubmissions",
              "shards_given_up", "not_images", "results", "repeated_detections", "pool_job_error", "estimate",
              "cost", "damaged")
    status = {key: f"value of {key}" for key in public}
    assert json.loads(notify.body("t", status)) == {"task_id": "t", **status}


def test_an_allow_list_entry_with_the_schemes_port_names_that_port_only() -> None:
    assert not notify.host_allowed("https://hooks.example.org:8443/x", ("hooks.example.org:443",))
    assert not notify.host_allowed("http://localhost:8080/x", ("localhost:80",))


def test_a_host_of_exactly_253_characters_is_a_name_and_254_is_not() -> None:
    longest = ".".join(["h" * 63] * 3) + "." + "h" * 61
    assert len(longest) == 253 and notify.host_name_problem(f"https://{longest}/x") is None
    assert "over the 253" in (notify.host_name_problem(f"https://{longest}h/x") or "")


def test_a_label_too_long_is_found_in_a_host_that_starts_with_digits_and_named_within_a_note() -> None:
    assert "label" in (notify.host_name_problem("https://1" + "h" * 63 + ".example.org/x") or "")
    long_label_host = "h" * 64 + "." + ".".join(["h" * 60] * 3)  # 247 characters, one label over 63
    reason = notify.not_sendable(f"https://{long_label_host}/x", (long_label_host,), True) or ""
    assert "label" in reason and len(reason) <= 200  # core.status_size.NOTE_CHARS: the status never cuts it


def test_a_signing_key_whose_vault_did_not_answer_says_so_not_where_to_put_it(
        receiver: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled vault (429) or one answering 503: the key is likely in place; "put it in the app's own vault"
    sent the operator to set a secret that was there."""
    from activities.notify import SigningKeyUnavailable
    from gpu_batch.tests.test_storage_refs import _BusyVault

    app_url = "https://kva-abc.vault.azure.net/"
    for status, code in ((429, "Throttled"), (503, "ServiceUnavailable")):
        vault = _BusyVault(status, code)
        monkeypatch.setattr(notify_activity, "secret_reader_from_env", lambda env, vault=vault, **_:
                            secret_reader_from_env(env, transport=vault, credential=FakeCredential()))
        with pytest.raises(SigningKeyUnavailable) as caught:
            send({"task_id": "task-0123456789abcdef0123", "url": receiver["url"], "status": STATUS},
                 (receiver["host"],), "notify-key", {KEY_VAULT_ENV: app_url})
        message = str(caught.value)
        assert "'notify-key'" in message and "did not answer" in message and "tried again" in message, message
        assert "put it" not in message and "az keyvault secret set" not in message
    assert receiver["got"] == []
