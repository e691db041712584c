"""Record the orchestration histories of one release, for the upgrade check (test_upgrade_replay.py).

Why: Azure keeps a task's orchestration history in its task hub and, after a deployment, replays it against the new
code. The Durable extension then fails the task when the new code schedules, at some sequence number, an action of
another kind or name than the history holds ("Non-Deterministic workflow detected"); a new code that reads an
activity's old result differently fails it too. Tasks run for hours or days, so a release is deployed while tasks run.
This script runs a scenario that takes every orchestrator through its main branches on this machine (Azurite, devhost,
the local pool with a random-weight YOLOv5n network, as ``make demo``), snapshots each instance's history as it grows
(``continue_as_new`` replaces a history; the snapshots keep every execution, each to its end: ``EXECUTIONS``), and
writes them to one gzipped JSON file.
A later release's tests replay every prefix of those histories, as Azure would after a deployment, and run today's
activities on the inputs they scheduled (test_upgrade_payloads.py): an activity no recording schedules goes unchecked,
so the scenario reaches every activity today's orchestrators can still schedule (that test's ``LEGACY`` names the
others, and checks that the newest recording schedules all the rest).

Stand-ins, so that branches meant for Azure or for millions of images happen here (all in the recording's own devhost
process, ``serve``; the orchestrators and the inputs they schedule are today's, unchanged):

* a local receiver (``Receiver``): a request's ``notify_url`` (allowed by ``TRAPBATCH_NOTIFY_HOSTS``, signed with a
  secret of a local secrets file) and the Event Grid topic (``TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT`` is set, so every
  task publishes its end; the publisher's token is a local one and its transport posts to the receiver instead);
* a results zip and a re-render at ``PARTS_THRESHOLD`` cut into about three parts (their ``PART_BYTES``, hundreds of
  MB, are far above this scenario's files); a re-render at any other threshold keeps the single pass;
* a day of ``previews_expire_days`` lasts ``DAY_S`` seconds (TRAPBATCH_PREVIEWS_EXPIRE_DAY_S, tests only);
* a results zip build's sweep runs ``SWEEP_S`` seconds after the build (``core.zip_builds.SWEEP_AFTER_S``, days), so
  the scenario sees it wait and sweep (it deletes nothing then: no zip is past its bounds);
* a replaced generation's sweep runs ``REPLACED_SWEEP_S`` seconds after the re-run's promotion
  (``core.replaced.deletes_at``, TRAPBATCH_KEEP_REPLACED_DAYS days), so the scenario sees it wait and delete the first
  generation of task A (or keep it, "running", should task A's run still be telling of its end then);
* every history devhost saves is also kept under ``EXECUTIONS``, one blob per execution, which ``continue_as_new``
  does not replace: the snapshots, every half second, missed an execution's last episode when the next execution
  saved over it sooner (a shard group at TRAPBATCH_HISTORY_EVENTS' least goes on as new after each poll, so about
  half its polls' results, those that decided to go on, were in no recorded history);
* a storage account that answers "later" (``BusyStorage``) for the attempts ``BUSY_STORAGE_ATTEMPTS`` name, the
  first launch of each only (task A's): the local pool starts that attempt's real worker with its
  ``TRAPBATCH_STORAGE_CONNECTION`` pointing there (no key: a SAS of no account), so the worker's manifest read
  fails and the worker itself exits 69 (``exit_codes.STORAGE_UNAVAILABLE``) through its own classification
  (``storage_refs.service_did_not_answer``). Every answer is 429, the one "later" that azure-storage-blob 12.31
  does not retry in place (``_shared/policies.py`` ``is_retry`` retries 408 and every 5xx but 501 and 505): an
  account that cannot be reached (a refused connection, a 503) is tried three more times, 15 s or more apart
  (``ExponentialRetry``'s defaults), so that worker would run past this scenario's TRAPBATCH_MAX_TASK_SECONDS and
  be stopped (137), not exit 69. Between its two exits 69 the shard's attempt crashes after writing a result (a
  worker fault, as for shard 1): past start-up, so its shard group (``unavailable_restarts``) opens a second wait
  (orchestrations/shards.py "Unavailable exits").

    .venv/bin/python -m scripts.record_histories --out tests/orchestrations/histories/<release>.json.gz

Run it from the release's own checkout (it drives that checkout's app). Takes four to six minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from adapters.blobs import BlobStore, service_client
from devhost.azurite import start_azurite
from devhost.port_file import DevhostDidNotStart, wait_for_port_file
from devhost.store import Store
from gpu_batch import exit_codes

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "images"
HUB = "histories"
CONTAINER = "history-camera-traps"
KEY = secrets.token_urlsafe(24)
FORMAT = 1
NOTIFY_SECRET_NAME = "histories-notify"
TOPIC_ENDPOINT = "https://histories-topic.westeurope-1.eventgrid.azure.net/api/events"  # posted to Receiver instead
PARTS_THRESHOLD = 0.35  # a re-render at this threshold passes over the results in parts (serve)
DAY_S = 3  # seconds in a day of previews_expire_days
SWEEP_S = 2  # seconds from a results zip build's end to its sweep
REPLACED_SWEEP_S = 10  # seconds from a re-run's promotion to the sweep of the generation it replaced
LONG_DAYS = 365  # task A's first expiry: 18 minutes, past the scenario (its re-run moves it to one day)
CAPTURES_LIST = "lists/captures.csv"
EXECUTIONS = "recorded-executions/"  # in devhost's state container: every execution's last saved history (serve)
# task A's shard 3 (of group 1): its worker exits 69 (BusyStorage), crashes past start-up after a result (the
# faults below), exits 69 again, then runs its missing images
BUSY_STORAGE_ATTEMPTS = ("s00003/1", "s00003/3")


def say(msg: str) -> None:
    print(f"[record_histories] {msg}", flush=True)


class Snapshots:
    """Every (instance, execution) history seen, the longest copy of each, read from devhost's store every
    ``period_s`` (a thread), and at the end every execution's last saved history (``EXECUTIONS``), so the histories
    that ``continue_as_new`` replaced are kept too, to their end."""

    def __init__(self, store: Store, period_s: float = 0.5) -> None:
        self.store, self.period_s = store, period_s
        self.kept: dict[tuple[str, str], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.take()
        self.take_executions()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.take()
            except Exception as exc:  # a snapshot read racing a write: the next one gets it
                say(f"snapshot skipped ({type(exc).__name__}: {exc})")

    def take(self) -> None:
        for inst in self.store.list_instances():
            iid = inst["InstanceId"]
            self._keep(inst, self.store.load_history(iid))

    def take_executions(self) -> None:
        """Every execution's last saved history (``EXECUTIONS``), of the instances the store still has."""
        instances = {inst["InstanceId"]: inst for inst in self.store.list_instances()}
        for blob in self.store.container.list_blobs(name_starts_with=EXECUTIONS):
            saved = json.loads(self.store.container.download_blob(blob.name).readall())
            inst = instances.get(saved["instance_id"])
            if inst is not None:
                self._keep(inst, saved["doc"])

    def _keep(self, inst: dict[str, Any], doc: dict[str, Any] | None) -> None:
        if not doc or not doc.get("history"):
            return
        iid = inst["InstanceId"]
        key = (iid, str(doc.get("execution_id", "")))
        old = self.kept.get(key)
        if old is None or len(doc["history"]) > len(old["history"]):
            self.kept[key] = {"instance_id": iid, "name": inst.get("Name"), "execution_id": key[1],
                              "parent_instance_id": inst.get("ParentInstanceId") or None,
                              "input": doc.get("input"), "history": doc["history"],
                              "recorded": doc.get("recorded", []), "action_ids": doc.get("action_ids", []),
                              "status": inst.get("Status")}


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        r = requests.request(method, f"{self.base}/api/{path}", json=body, headers={"x-functions-key": KEY},
                             timeout=60)
        try:
            return r.status_code, dict(r.json())
        except ValueError:
            return r.status_code, {"text": r.text}

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 600, poll_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                say(f"{what}: done")
                return
            time.sleep(poll_s)
        raise SystemExit(f"{what}: not done within {timeout_s:.0f} s")


class Receiver:
    """The scenario's notification receiver and Event Grid topic stand-in: a local HTTP server that takes every POST
    (``/notify``: a task's ``notify_url``; ``/topic``: what the publisher sends the topic) and answers 200, as a
    receiver that took it would. Keeps what came, to say it did (a notification's signature checked)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.posts.append((urlsplit(self.path).path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for at, headers, body in self.posts if at == path]

    def signed(self, headers: dict[str, str], body: bytes) -> bool:
        from core import notify

        return hmac.compare_digest(headers.get(notify.SIGNATURE_HEADER, ""), notify.signature(self.secret, body))


class BusyStorage:
    """The storage account of the attempts ``BUSY_STORAGE_ATTEMPTS`` name (module docstring): a local HTTP server that
    answers every request 429 with Azure Storage's error body, as an account that says "later" would."""

    BODY = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>the recording\'s busy '
            b'storage stand-in (scripts/record_histories.py): try again later</Message></Error>')

    def __init__(self) -> None:
        body = self.BODY

        class Handler(BaseHTTPRequestHandler):
            def _later(self) -> None:
                self.send_response(429)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = _later  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a SAS of no account: nothing here is a key, and the worker sends it only to this server
        self.connection = (f"BlobEndpoint=http://127.0.0.1:{self._server.server_address[1]}/devstoreaccount1;"
                           "SharedAccessSignature=sv=2020-02-10&sig=busy-storage-stand-in")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()


def _ended(api: Api, task: str) -> bool:
    code, st = api.call("GET", f"tasks/{task}")
    return code == 200 and st.get("runtime_status") in ("Completed", "Failed", "Terminated")


def _quiet(store: Store, skip_names: tuple[str, ...]) -> Callable[[], bool]:
    """True once no instance is running or pending except those named in ``skip_names`` (an expiry waits days)."""
    def check() -> bool:
        return not [i for i in store.list_instances()
                    if i.get("Status") in ("Running", "Pending") and i.get("Name") not in skip_names]
    return check


def _captures_list() -> bytes:
    """Task D's image list: captures of three images (``capture_id``, ranked), one flagged invalid, one image alone
    (no capture), and one name the container lacks (``listed_not_found``)."""
    rows = ["path,capture_id,image_rank_in_capture,site,invalid"]
    for day in ("2024-06-01", "2024-06-02"):
        for k in range(1, 7):
            capture = f"C03-{day[5:]}-{(k - 1) // 3 + 1}"
            flagged = "1" if (day, k) == ("2024-06-02", 6) else "0"
            rows.append(f"camera-03/{day}/IMG_000{k}.JPG,{capture},{(k - 1) % 3 + 1},C03,{flagged}")
    rows.append("camera-03/2024-06-02/IMG_0099_night.jpg,,,C03,0")
    rows.append("camera-03/2024-06-03/IMG_0001.JPG,C03-06-03-1,1,C03,0")
    return ("\n".join(rows) + "\n").encode("utf-8")


def scenario(api: Api, store: Store, blobs: BlobStore, receiver: Receiver) -> None:
    """Take each orchestrator through its main branches, and every activity today's code schedules for a new task
    (test_upgrade_payloads.LEGACY: the others); each step says what it covers."""
    from core import contracts as c
    from core.ids import expiry_instance_id
    from gpu_batch import layout

    quiet = _quiet(store, (c.EXPIRY_ORCHESTRATOR,))
    # a task with a crashed shard (resubmitted: only its missing images), a shard whose worker exits 69 (storage did
    # not answer: no attempt spent), crashes past start-up and exits 69 again (a second wait) before it runs, a
    # preview expiry (far off, till its re-run moves it) and the repeat search
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories A",
                                           "first_n": 36, "previews_expire_days": LONG_DAYS})
    assert code in (200, 201, 202), (code, ans)
    task_a = ans["id"]
    api.wait("task A", lambda: _ended(api, task_a))
    api.wait("task A's follow-ups", quiet)
    steps: list[tuple[str, str, str, Any]] = [
        ("re-render at another threshold, in parts", "POST", f"tasks/{task_a}/previews",
         {"threshold": PARTS_THRESHOLD}),
        ("repeat search again", "POST", f"tasks/{task_a}/repeats/search",  # loose: random weights repeat little
         {"occurrence_threshold": 2, "iou_threshold": 0.5, "confidence_min": 0.0,
          "max_suspicious_detection_size": 1.0}),
        ("repeat removal", "POST", f"tasks/{task_a}/repeats", {"remove": "all"}),  # of the search's list
        ("re-render of both variants, single pass", "POST", f"tasks/{task_a}/previews", {"threshold": 0.3}),
        ("results zip, in parts", "GET", f"tasks/{task_a}/results", None),
        # its expiry, moved to a day (DAY_S) after it: the preview folder is deleted
        ("re-run, only new images, clock corrected", "POST", "tasks",
         {"container": CONTAINER, "request_name": "histories A", "first_n": 36, "previews_expire_days": 1,
          "only_new": True, "clock_corrections": {"(root)": 3600}}),
    ]
    search = ""
    for what, method, path, body in steps:
        if what == "repeat removal":
            body = {**body, "search": search}
        code, ans = api.call(method, path, body)
        search = str(ans.get("search") or search)
        say(f"{what}: {code} {json.dumps(ans)[:300]}")
        api.wait(what, lambda: _ended(api, task_a) and quiet())
    # a random sample of 12 (choose_sample), cancelled while its shards run
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories B (cancelled)",
                                           "sample_n": 12, "seed": 7})
    task_b = ans["id"]
    api.wait("task B detecting", lambda: api.call("GET", f"tasks/{task_b}")[1].get("stage") == "detecting", 300,
             poll_s=0.2)
    code, ans = api.call("POST", f"tasks/{task_b}/cancel")
    say(f"cancel: {code}")
    api.wait("task B ended", lambda: _ended(api, task_b))
    # an estimate, then a dropped request (incoming/) over the confirmation threshold (all 41 images): its estimate
    # and done files are written beside it; confirmed, its last shard cannot load its model on two attempts: the
    # task fails (the other groups told to stop, the pool job closed)
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories C", "dry_run": True})
    api.wait("estimate", lambda: _ended(api, ans["id"]))
    drop = "histories-c.json"
    blobs.write_bytes(layout.INCOMING_CONTAINER, drop,
                      json.dumps({"container": CONTAINER, "request_name": "histories C"}).encode("utf-8"))
    estimate: dict[str, Any] = {}
    api.wait("task C's estimate file", lambda: estimate.update(
        blobs.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "estimate")) or {})
        or bool(estimate), 300)
    task_c = str(estimate["id"])
    code, ans = api.call("POST", f"tasks/{task_c}/confirm")
    say(f"confirm: {code}")
    # meanwhile (task C's listing is done: the list blob does not change it) a task of an image list of captures
    # (the Zooniverse subjects are captures), whose end is notified to notify_url
    blobs.write_bytes(CONTAINER, CAPTURES_LIST, _captures_list())
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories D (captures)",
                                           "image_list": CAPTURES_LIST,
                                           "notify_url": f"http://{receiver.host}/notify"})
    assert code in (200, 201, 202), (code, ans)
    task_d = ans["id"]
    api.wait("task C (failing)", lambda: _ended(api, task_c))
    api.wait("task C's done file", lambda: blobs.exists(layout.INCOMING_CONTAINER,
                                                        layout.drop_answer_blob(drop, "done")), 120)
    api.wait("task D", lambda: _ended(api, task_d))
    api.wait("everything", quiet)
    expiry = expiry_instance_id(task_a)
    api.wait("task A's preview expiry", lambda: (store.get_instance(expiry) or {}).get("Status") == "Completed", 120)
    told = receiver.received("/notify")
    events = receiver.received("/topic")
    say(f"notifications: {len(told)} ({sum(receiver.signed(h, b) for h, b in told)} signed right); "
        f"task events published: {len(events)}")
    if not told or not all(receiver.signed(h, b) for h, b in told) or not events:
        raise SystemExit("the receiver did not get a signed notification and the task events")


def _stand_ins(receiver: str) -> None:
    """Patch the recording's devhost process (see the module docstring): the Event Grid publisher posts to
    ``receiver`` with a local token, a results zip is cut into about three parts, and so is a re-render at
    ``PARTS_THRESHOLD``; the attempts ``BUSY_STORAGE_ATTEMPTS`` name read from ``BusyStorage``; a zip build's sweep
    comes ``SWEEP_S`` after it, a replaced generation's ``REPLACED_SWEEP_S`` after its promotion; every saved history
    is kept per execution too (``EXECUTIONS``). Only the sizes, the transport, those attempts' storage, those waits
    and that copy change: every orchestrator, activity and input is today's."""
    from azure.core.credentials import AccessToken, AccessTokenInfo
    from azure.core.pipeline.transport import RequestsTransport

    from activities import rethreshold, results_zip, task_events
    from adapters import zip_parts
    from adapters.event_grid import EventGridPublisher
    from core import replaced, zip_builds
    from gpu_batch import layout
    from gpu_batch.pool.base import ShardTask
    from gpu_batch.pool.local import LocalPool
    from gpu_batch.worker.sources import CONNECTION_ENV

    class LocalToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("local", int(time.time()) + 3600)

        def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            return AccessTokenInfo("local", int(time.time()) + 3600)

    class LocalTopic(RequestsTransport):  # type: ignore[misc]
        def send(self, request: Any, **kwargs: Any) -> Any:
            request.url = f"{receiver}?{urlsplit(request.url).query}"
            return super().send(request, **kwargs)

    @functools.cache
    def local_publisher(endpoint: str) -> EventGridPublisher:
        return EventGridPublisher(endpoint, credential=LocalToken(), transport=LocalTopic())

    task_events._publisher = local_publisher
    whole_zip, single_pass = results_zip.run_build, rethreshold.run_rethreshold

    def zip_in_parts(store: Any, container: str, task_id: str, part_bytes: int | None = None) -> Any:
        if part_bytes is None:
            files = zip_parts.plan(store, container, task_id, zip_parts.PART_BYTES)["files"]
            part_bytes = max(1, sum(int(f["size"]) for f in files) // 3)
        return whole_zip(store, container, task_id, part_bytes)

    def rethreshold_in_parts(task_id: str, threshold: float, variant: str, settings: Any, store: Any,
                             part_bytes: int | None = None) -> Any:
        if part_bytes is None and threshold == PARTS_THRESHOLD:
            size = store.size_or_none(settings.container, layout.results_blob(task_id, variant)) or 0
            part_bytes = max(1, size // 3)
        return single_pass(task_id, threshold, variant, settings, store, part_bytes)

    results_zip.run_build = zip_in_parts
    rethreshold.run_rethreshold = rethreshold_in_parts
    zip_builds.SWEEP_AFTER_S = SWEEP_S
    keep_days = replaced.deletes_at
    replaced.deletes_at = lambda when, days: (  # type: ignore[assignment]
        None if keep_days(when, days) is None else when + dt.timedelta(seconds=REPLACED_SWEEP_S))

    busy = BusyStorage()
    left = set(BUSY_STORAGE_ATTEMPTS)
    launch = LocalPool._launch

    def launch_on_busy_storage(self: LocalPool, row: dict[str, Any], gpu: int | None = None) -> bool:
        """The pool's launch; for an attempt ``left`` names, its worker (not its runner, which keeps the pool's own
        storage for the task table and the log) gets ``busy``'s connection. ``_launch`` runs under the pool's lock, so
        no other launch sees the command meanwhile."""
        spec = ShardTask.from_dict(json.loads(row["Spec"]))
        attempt = f"{spec.shard_id}/{spec.attempt}"
        if attempt not in left:
            return launch(self, row, gpu)
        worker = self.worker_command
        self.worker_command = ["env", f"{CONNECTION_ENV}={busy.connection}", *worker]
        try:
            started = launch(self, row, gpu)
        finally:
            self.worker_command = worker
        if started:
            left.discard(attempt)
            say(f"{spec.task_id}: its worker reads from the busy storage stand-in")
        return started

    LocalPool._launch = launch_on_busy_storage  # type: ignore[method-assign]

    save_history = Store.save_history

    def save_every_execution(self: Store, instance_id: str, doc: dict[str, Any]) -> None:
        """devhost's save, and a copy of it that the next execution's saves do not replace (``EXECUTIONS``)."""
        save_history(self, instance_id, doc)
        self.container.upload_blob(f"{EXECUTIONS}{doc['execution_id']}.json",
                                   json.dumps({"instance_id": instance_id, "doc": doc}).encode("utf-8"),
                                   overwrite=True)

    Store.save_history = save_every_execution  # type: ignore[method-assign]


def serve(argv: list[str]) -> int:
    """``python -m devhost argv[1:]`` with the stand-ins, the topic's posts going to ``argv[0]``."""
    _stand_ins(argv[0])
    from devhost.__main__ import main as devhost_main

    return devhost_main(argv[1:])


def shard_exits(instances: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, Any]]:
    """Each shard's worker exit codes by attempt, per shard group (``run_shards`` instance), as the group's polls
    reported them (the ``completed`` rows of its activities' results, every execution's)."""
    exits: dict[tuple[str, str], dict[int, Any]] = {}
    for inst in instances:
        if inst.get("name") != "run_shards":
            continue
        for event in inst["history"]:
            try:
                result = json.loads(event.get("Result") or "null")
            except (TypeError, ValueError):
                continue
            for row in result.get("completed", []) if isinstance(result, dict) else []:
                if isinstance(row, dict) and "shard_id" in row and "attempt" in row:
                    exits.setdefault((str(inst["instance_id"]), str(row["shard_id"])), {})[int(row["attempt"])] = \
                        row.get("exit_code")
    return exits


def waited_out(codes_by_attempt: dict[int, Any]) -> tuple[bool, bool]:
    """Whether a shard's attempts (``shard_exits``) met an exit 69 and then ran (its last attempt exited 0), and
    whether another exit 69 came after a failed attempt that was no 69 (a second wait, where the attempt between got
    past start-up, as the scenario's crash after a result does)."""
    unavailable = exit_codes.STORAGE_UNAVAILABLE
    codes = [codes_by_attempt[a] for a in sorted(codes_by_attempt)]
    if unavailable not in codes or codes[-1] != exit_codes.OK:
        return False, False
    after = codes[codes.index(unavailable) + 1:]
    return True, any(code not in (exit_codes.OK, unavailable) and unavailable in after[i + 1:]
                     for i, code in enumerate(after))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the gzipped JSON goes")
    p.add_argument("--release", default="", help="a label for the release (default: the commit)")
    args = p.parse_args(argv)
    from scripts.demo import demo_model, stop_group

    work = Path(tempfile.mkdtemp(prefix="trapbatch-histories-"))
    azurite = start_azurite(log_path=work / "azurite.log")
    devhost: subprocess.Popen[bytes] | None = None
    receiver = Receiver(secrets.token_urlsafe(24))
    receiver.start()
    try:
        from gpu_batch.layout import INCOMING_CONTAINER

        conn = azurite.connection_string
        blobs = BlobStore(service_client(conn))
        blobs.ensure_container(CONTAINER)
        blobs.ensure_container(INCOMING_CONTAINER)
        local_secrets = work / "secrets.json"
        local_secrets.write_text(json.dumps({NOTIFY_SECRET_NAME: receiver.secret}), encoding="utf-8")
        local_secrets.chmod(0o600)
        for path in sorted(SAMPLES.rglob("*")):
            if path.is_file():
                blobs.write_bytes(CONTAINER, path.relative_to(SAMPLES).as_posix(), path.read_bytes())
        env = {**os.environ, "AzureWebJobsStorage": conn, "TRAPBATCH_POOL": "local", "TRAPBATCH_POLL_MIN_S": "1",
               "TRAPBATCH_POLL_MAX_S": "2", "TRAPBATCH_IMAGES_PER_SHARD": "6", "TRAPBATCH_LOCAL_CONCURRENCY": "2",
               "TRAPBATCH_SHARDS_PER_GROUP": "3", "TRAPBATCH_MAX_IN_FLIGHT": "4",
               "TRAPBATCH_MERGE_IMAGES_PER_PART": "6",  # one shard a part: the fan-ins and exports fan out
               "TRAPBATCH_DEVHOST_FUNCTION_KEY": KEY, "TRAPBATCH_MODEL": demo_model(), "TRAPBATCH_DEVICE": "cpu",
               "TRAPBATCH_WORKER_RESIDENT": "0", "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "1",
               "TRAPBATCH_CONFIRM_ABOVE_IMAGES": "40", "TRAPBATCH_PREVIEW_THRESHOLD": "0.2",
               # shard 1's first attempt crashes after one image: its missing images are resubmitted; shard 2's
               # first attempt hangs until the pool stops it at TRAPBATCH_MAX_TASK_SECONDS, and its group polls long
               # enough meanwhile to continue as new (TRAPBATCH_HISTORY_EVENTS at its least); shard 6 (only task C
               # has one) exits 3, the model cannot be loaded, on both attempts: task C fails; shard 3's second
               # attempt, between its two exits 69 (BUSY_STORAGE_ATTEMPTS), crashes after one image
               "TRAPBATCH_WORKER_FAULTS": json.dumps({"s00001/1": "crash_after:1", "s00002/1": "hang",
                                                      "s00003/2": "crash_after:1",
                                                      "s00006/1": "exit:3", "s00006/2": "exit:3"}),
               "TRAPBATCH_MAX_TASK_SECONDS": "60", "TRAPBATCH_HISTORY_EVENTS": "200",
               "TRAPBATCH_PUBLIC_WEB_URL": "https://example.z6.web.core.windows.net/",
               "TRAPBATCH_PREVIEWS_EXPIRE_DAY_S": str(DAY_S),
               # task D's notification, to the receiver, signed with the local secrets file's secret
               "TRAPBATCH_NOTIFY_HOSTS": receiver.host, "TRAPBATCH_NOTIFY_SECRET": NOTIFY_SECRET_NAME,
               "TRAPBATCH_LOCAL_SECRETS_FILE": str(local_secrets),
               # every task's end published on the topic (serve: the receiver stands in for it)
               "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT": TOPIC_ENDPOINT}
        log = work / "devhost.log"
        serve_devhost = "import sys; from scripts.record_histories import serve; sys.exit(serve(sys.argv[1:]))"
        port_file = work / "devhost.port"  # devhost picks its port: one picked here may be taken first
        devhost = subprocess.Popen([sys.executable, "-c", serve_devhost, f"http://{receiver.host}/topic",
                                    "--port", "0", "--port-file", str(port_file), "--hub", HUB], cwd=ROOT, env=env,
                                   stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = wait_for_port_file(port_file, devhost, 120, log)
        except DevhostDidNotStart as exc:
            raise SystemExit(f"devhost did not start: {exc}") from None
        snaps = Snapshots(Store(conn, HUB))
        snaps.start()
        try:
            scenario(Api(base), Store(conn, HUB), blobs, receiver)
        finally:
            snaps.stop()
        instances = sorted(snaps.kept.values(), key=lambda d: (d["instance_id"], d["history"][0]["Timestamp"]))
        exits = shard_exits(instances)
        if not any(waited_out(codes)[1] for codes in exits.values()):  # BUSY_STORAGE_ATTEMPTS' exits 69
            seen = json.dumps({"/".join(key): codes for key, codes in exits.items()})
            raise SystemExit("no shard group's history holds a shard whose worker exited 69, failed past start-up, "
                             f"exited 69 again and then ran (BUSY_STORAGE_ATTEMPTS); nothing written. Exits: {seen}")
        doc = {"format": FORMAT, "release": args.release or _commit(), "commit": _commit(),
               "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "instances": instances}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(args.out, "wt", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
        names: dict[str, int] = {}
        for d in instances:
            names[str(d["name"])] = names.get(str(d["name"]), 0) + 1
        say(f"wrote {args.out}: {len(instances)} histories ({', '.join(f'{k} {v}' for k, v in sorted(names.items()))})")
        return 0
    finally:
        stop_group(devhost)
        receiver.stop()
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
