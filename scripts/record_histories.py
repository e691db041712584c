"""Record the orchestration histories of one release, for the upgrade check (test_upgrade_replay.py).

Why: Azure keeps a task's orchestration history in its task hub and, after a deployment, replays it against the new
code. The Durable extension then fails the task when the new code schedules, at some sequence number, an action of
another kind or name than the history holds ("Non-Deterministic workflow detected"); a new code that reads an
activity's old result differently fails it too. Tasks run for hours or days, so a release is deployed while tasks run.
This script runs a scenario that takes every orchestrator through its main branches on this machine (Azurite, devhost,
the local pool with a random-weight YOLOv5n network, as ``make demo``), snapshots each instance's history as it grows
(``continue_as_new`` replaces a history; the snapshots keep every execution), and writes them to one gzipped JSON file.
A later release's tests replay every prefix of those histories, as Azure would after a deployment.

    .venv/bin/python -m scripts.record_histories --out tests/orchestrations/histories/<release>.json.gz

Run it from the release's own checkout (it drives that checkout's app). Takes two to four minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

from adapters.blobs import BlobStore, service_client
from devhost.azurite import free_port, start_azurite
from devhost.store import Store

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "images"
HUB = "histories"
CONTAINER = "history-camera-traps"
KEY = secrets.token_urlsafe(24)
FORMAT = 1


def say(msg: str) -> None:
    print(f"[record_histories] {msg}", flush=True)


class Snapshots:
    """Every (instance, execution) history seen, the longest copy of each, read from devhost's store every
    ``period_s`` (a thread), so the histories that ``continue_as_new`` replaced are kept too."""

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

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.take()
            except Exception as exc:  # a snapshot read racing a write: the next one gets it
                say(f"snapshot skipped ({type(exc).__name__}: {exc})")

    def take(self) -> None:
        for inst in self.store.list_instances():
            iid = inst["InstanceId"]
            doc = self.store.load_history(iid)
            if not doc or not doc.get("history"):
                continue
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


def _ended(api: Api, task: str) -> bool:
    code, st = api.call("GET", f"tasks/{task}")
    return code == 200 and st.get("runtime_status") in ("Completed", "Failed", "Terminated")


def _quiet(store: Store, skip_names: tuple[str, ...]) -> Callable[[], bool]:
    """True once no instance is running or pending except those named in ``skip_names`` (an expiry waits days)."""
    def check() -> bool:
        return not [i for i in store.list_instances()
                    if i.get("Status") in ("Running", "Pending") and i.get("Name") not in skip_names]
    return check


def scenario(api: Api, store: Store) -> None:
    """Take each orchestrator through its main branches; each step says what it covers."""
    from core import contracts as c

    quiet = _quiet(store, (c.EXPIRY_ORCHESTRATOR,))
    # a task with a crashed shard (resubmitted: only its missing images), a preview expiry and the repeat search
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories A",
                                           "first_n": 36, "previews_expire_days": 1})
    assert code in (200, 201, 202), (code, ans)
    task_a = ans["id"]
    api.wait("task A", lambda: _ended(api, task_a))
    api.wait("task A's follow-ups", quiet)
    steps: list[tuple[str, str, str, Any]] = [
        ("re-render at another threshold", "POST", f"tasks/{task_a}/previews", {"threshold": 0.35}),
        ("repeat search again", "POST", f"tasks/{task_a}/repeats/search",  # loose: random weights repeat little
         {"occurrence_threshold": 2, "iou_threshold": 0.5, "confidence_min": 0.0,
          "max_suspicious_detection_size": 1.0}),
        ("repeat removal", "POST", f"tasks/{task_a}/repeats", {"remove": "all"}),  # of the search's list
        ("results zip", "GET", f"tasks/{task_a}/results", None),
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
    # a task cancelled while its shards run
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories B (cancelled)",
                                           "first_n": 12})
    task_b = ans["id"]
    api.wait("task B detecting", lambda: api.call("GET", f"tasks/{task_b}")[1].get("stage") == "detecting", 300,
             poll_s=0.2)
    code, ans = api.call("POST", f"tasks/{task_b}/cancel")
    say(f"cancel: {code}")
    api.wait("task B ended", lambda: _ended(api, task_b))
    # an estimate, then a task over the confirmation threshold (all 41 images), confirmed, whose last shard cannot
    # load its model on two attempts: the task fails (the other groups told to stop, the pool job closed)
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories C", "dry_run": True})
    api.wait("estimate", lambda: _ended(api, ans["id"]))
    code, ans = api.call("POST", "tasks", {"container": CONTAINER, "request_name": "histories C"})
    task_c = ans["id"]
    api.wait("task C awaiting confirmation",
             lambda: api.call("GET", f"tasks/{task_c}")[1].get("stage") == "awaiting_confirmation", 300)
    code, ans = api.call("POST", f"tasks/{task_c}/confirm")
    say(f"confirm: {code}")
    api.wait("task C (failing)", lambda: _ended(api, task_c))
    api.wait("everything", quiet)


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
    try:
        conn = azurite.connection_string
        blobs = BlobStore(service_client(conn))
        blobs.ensure_container(CONTAINER)
        for path in sorted(SAMPLES.rglob("*")):
            if path.is_file():
                blobs.write_bytes(CONTAINER, path.relative_to(SAMPLES).as_posix(), path.read_bytes())
        port = free_port()
        env = {**os.environ, "AzureWebJobsStorage": conn, "TRAPBATCH_POOL": "local", "TRAPBATCH_POLL_MIN_S": "1",
               "TRAPBATCH_POLL_MAX_S": "2", "TRAPBATCH_IMAGES_PER_SHARD": "6", "TRAPBATCH_LOCAL_CONCURRENCY": "2",
               "TRAPBATCH_SHARDS_PER_GROUP": "3", "TRAPBATCH_MAX_IN_FLIGHT": "4",
               "TRAPBATCH_DEVHOST_FUNCTION_KEY": KEY, "TRAPBATCH_MODEL": demo_model(), "TRAPBATCH_DEVICE": "cpu",
               "TRAPBATCH_WORKER_RESIDENT": "0", "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "1",
               "TRAPBATCH_CONFIRM_ABOVE_IMAGES": "40", "TRAPBATCH_PREVIEW_THRESHOLD": "0.2",
               # shard 1's first attempt crashes after one image: its missing images are resubmitted; shard 2's
               # first attempt hangs until the pool stops it at TRAPBATCH_MAX_TASK_SECONDS, and its group polls long
               # enough meanwhile to continue as new (TRAPBATCH_HISTORY_EVENTS at its least); shard 6 (only task C
               # has one) exits 3, the model cannot be loaded, on both attempts: task C fails
               "TRAPBATCH_WORKER_FAULTS": json.dumps({"s00001/1": "crash_after:1", "s00002/1": "hang",
                                                      "s00006/1": "exit:3", "s00006/2": "exit:3"}),
               "TRAPBATCH_MAX_TASK_SECONDS": "60", "TRAPBATCH_HISTORY_EVENTS": "200",
               "TRAPBATCH_PUBLIC_WEB_URL": "https://example.z6.web.core.windows.net/"}
        log = work / "devhost.log"
        devhost = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--hub", HUB], cwd=ROOT,
                                   env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(base + "/api/tasks", headers={"x-functions-key": KEY}, timeout=2)
                break
            except requests.ConnectionError:
                if devhost.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"devhost did not start; see {log}") from None
                time.sleep(0.3)
        snaps = Snapshots(Store(conn, HUB))
        snaps.start()
        try:
            scenario(Api(base), Store(conn, HUB))
        finally:
            snaps.stop()
        instances = sorted(snaps.kept.values(), key=lambda d: (d["instance_id"], d["history"][0]["Timestamp"]))
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
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
