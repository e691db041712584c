"""The ``trapbatch`` command against a real devhost (real orchestrations, the local pool, a tiny real checkpoint), run
as an operator runs it: a separate process, configured by environment variables."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.blobs import BlobStore
from devhost.azurite import PortReservation
from tests.waiting import wait_until
from tests.integration.conftest import upload_images

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "cli-tests-function-key-not-to-be-printed"


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="c" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def trapbatch(*args: str, url: str, key: str = FUNCTION_KEY, extra_env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env.update({"TRAPBATCH_URL": url, "TRAPBATCH_KEY": key, "TRAPBATCH_CONFIG": "/nonexistent/config.toml",
                **(extra_env or {})})
    proc = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert key not in proc.stdout + proc.stderr or not key  # the key is never printed
    return proc


def pool_rows(connection: str, task_id: str) -> list[dict[str, Any]]:
    """The local pool's task rows of any run of ``task_id`` (job ids are ``<task id>`` or ``<task id>_<run>``)."""
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(connection).create_table_if_not_exists("trapbatchpool")
    return [dict(e) for e in table.query_entities("PartitionKey ge @a and PartitionKey lt @b",
                                                  parameters={"a": task_id, "b": task_id + "`"})]


def test_submit_wait_completes_and_results_downloads_every_file(host, store: BlobStore, unique_name: str,  # type: ignore[no-untyped-def]
                                                               storage_connection: str, tmp_path: Path) -> None:
    names = upload_images(store, unique_name, 6, corrupt=0)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"container": unique_name, "request_name": "from a file"}))

    done = trapbatch("submit", str(request), "--wait", url=host.base_url)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    task_id = done.stdout.split()[1]
    assert done.stdout.startswith(f"task {task_id} started")
    assert "detecting:" in done.stdout and "completed" in done.stdout  # plain progress lines off a terminal
    status = json.loads(trapbatch("status", task_id, "--json", url=host.base_url).stdout)
    assert status["stage"] == "completed" and status["images"] == 6

    again = trapbatch("submit", "--container", unique_name, "--name", "other label", url=host.base_url)
    assert again.returncode == 0 and f"task {task_id} already known" in again.stdout

    listed = trapbatch("list", "--json", url=host.base_url)
    assert [t["id"] for t in json.loads(listed.stdout)["tasks"]] == [task_id]

    folder = tmp_path / "out"
    got = trapbatch("results", task_id, "--out", str(folder), "--previews", url=host.base_url,
                    extra_env={"TRAPBATCH_STORAGE_CONNECTION": storage_connection})
    assert got.returncode == 0, got.stderr
    assert storage_connection not in got.stdout + got.stderr
    doc = json.loads((folder / "detections.json").read_text())
    assert sorted(im["file"] for im in doc["images"]) == names
    assert len((folder / "detections.csv").read_text().splitlines()) == 1 + len(names)
    assert (folder / "repeated-detections.json").exists()  # named by the status, fetched too
    exported = {p.relative_to(folder).as_posix() for p in (folder / "exports").rglob("*") if p.is_file()}
    assert {"exports/coco.json", "exports/camtrap-dp/datapackage.json", "exports/camtrap-dp/media.csv"} <= exported
    assert not list(folder.rglob("*.part"))  # every download finished and renamed
    assert (folder / "previews" / "index.html").read_text().count(task_id) > 0
    assert "preview site: http" in got.stdout

    repeats = trapbatch("repeats", task_id, "--json", url=host.base_url)
    assert repeats.returncode == 0 and json.loads(repeats.stdout)["locations"] == []
    nothing = trapbatch("repeats", task_id, "--remove", "all", url=host.base_url)
    assert nothing.returncode == 4 and "nothing to remove" in nothing.stderr and "next:" in nothing.stderr
    searched = trapbatch("repeats", task_id, "--search", "--occurrence-threshold", "5", "--json", url=host.base_url)
    assert searched.returncode == 0, searched.stderr
    sid = json.loads(searched.stdout)["search"]
    assert json.loads(searched.stdout)["options"]["occurrence_threshold"] == 5
    listed_again = wait_until(lambda: (lambda a: a if a["search"] == sid else None)(
        json.loads(trapbatch("repeats", task_id, "--json", url=host.base_url).stdout)), 120, "the new list")
    assert listed_again["search_options"]["occurrence_threshold"] == 5
    shown = trapbatch("repeats", task_id, url=host.base_url)
    assert f"list {sid}: --occurrence-threshold 5" in shown.stdout  # the flags of repeats --search
    assert "no repeated detections in this list: nothing to remove" in shown.stdout  # no "--keep ..." to suggest
    stale = trapbatch("repeats", task_id, "--remove", "all", url=host.base_url)  # chosen from the merge's list
    assert stale.returncode == 4 and "409" in stale.stderr and sid in stale.stderr
    current = trapbatch("repeats", task_id, "--remove", "all", "--list", sid, url=host.base_url)
    assert current.returncode == 4 and "nothing to remove" in current.stderr

    finished = trapbatch("cancel", task_id, url=host.base_url)  # 409 with the API's own hint
    assert finished.returncode == 4
    assert "409" in finished.stderr and "only a running task can be cancelled" in finished.stderr

    neither = trapbatch("previews", task_id, url=host.base_url)
    assert neither.returncode == 2 and "--threshold T" in neither.stderr and "--delete" in neither.stderr
    assert [n for n in store.list_names("$web", "") if n.startswith(task_id)]  # the pages are there, until:
    deleted = trapbatch("previews", task_id, "--delete", url=host.base_url)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted" in deleted.stdout and "no longer works" in deleted.stdout
    assert not [n for n in store.list_names("$web", "") if n.startswith(task_id)]  # off the website
    gone = trapbatch("previews", task_id, "--delete", url=host.base_url)
    assert gone.returncode == 4 and "404" in gone.stderr and "no preview pages" in gone.stderr


def test_a_failing_task_exits_non_zero_and_errors_say_what_to_do(host, store: BlobStore,  # type: ignore[no-untyped-def]
                                                                unique_name: str, storage_connection: str) -> None:
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "notes/readme.txt", b"no images here")

    failed = trapbatch("submit", "--container", unique_name, "--wait", url=host.base_url)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "no images" in failed.stdout + failed.stderr and "ended failed" in failed.stderr
    assert "1 file is not an image and was not run (.txt 1)" in " ".join(failed.stderr.split())  # what it found

    missing = trapbatch("status", "task-00000000000000000000", url=host.base_url)
    assert missing.returncode == 4 and "404" in missing.stderr
    # the app's hint, as the CLI: where ids are listed (it named only where a new one comes from)
    assert "next: check the id against trapbatch list, or start the task with trapbatch submit" in missing.stderr
    malformed = trapbatch("results", "task-1f0c", url=host.base_url)
    assert malformed.returncode == 4 and "trapbatch list shows them" in malformed.stderr, malformed.stderr
    refused = trapbatch("list", url=host.base_url, key="wrong-key")
    assert refused.returncode == 4 and "refused the request (function key)" in refused.stderr
    assert "TRAPBATCH_KEY" in refused.stderr
    bad = trapbatch("submit", "--container", "No_Such", url=host.base_url)
    assert bad.returncode == 2 and "not a valid blob container name" in bad.stderr  # checked before sending
    absent = trapbatch("submit", "--container", "absent-" + unique_name[:10], url=host.base_url)
    assert absent.returncode == 4 and "404" in absent.stderr and "create the container" in absent.stderr
    with PortReservation(1) as held:  # nothing listens there, and no other worker's Azurite is handed the port
        nowhere = trapbatch("list", url=f"http://127.0.0.1:{held.ports[0]}")
    assert nowhere.returncode == 4 and "cannot reach" in nowhere.stderr and "devhost --with-azurite" in nowhere.stderr
    assert "trying again" not in nowhere.stderr  # nothing listens on this machine: no wait heals that
    # what an operator meets with a wrong address or id, against the real servers: the Azurite blob port (a wrong
    # port answers 400 in XML), https:// to devhost's plain http, an id from an unset variable
    blob_port = re.search(r"BlobEndpoint=(http://[^/;]+)", storage_connection)
    assert blob_port is not None
    other = trapbatch("list", url=blob_port.group(1))
    assert other.returncode == 4 and f"is {blob_port.group(1)} the trapbatch app" in other.stderr
    tls = trapbatch("list", url=host.base_url.replace("http://", "https://"))
    assert tls.returncode == 4 and "does not speak https" in tls.stderr and f"use {host.base_url}" in tls.stderr
    empty = trapbatch("status", "", url=host.base_url)
    assert empty.returncode == 2 and "no task id given" in empty.stderr and not empty.stdout


def test_submit_with_folders_starts_and_follows_one_task_per_folder(host, store: BlobStore,  # type: ignore[no-untyped-def]
                                                                    unique_name: str) -> None:
    """The manual workflow's ``folder_names``: one command, a task per folder with its own results, each labelled
    with its folder; the exit code is the worst task's (a folder without images fails its task)."""
    names = upload_images(store, unique_name, 6, corrupt=0)  # cam0/ and cam1/
    store.write_bytes(unique_name, "empty/readme.txt", b"no images here")

    proc = trapbatch("submit", "--container", unique_name, "--name", "season", "--folder", "cam0",
                     "--folder", "/cam1/", "--wait", "--json", url=host.base_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finals = json.loads(proc.stdout)
    assert [(st["folder"], st["stage"], st["images"]) for st in finals] == [("cam0", "completed", 3),
                                                                            ("cam1", "completed", 3)]
    assert finals[0]["id"] != finals[1]["id"]
    for st in finals:
        doc = store.read_json(st["results"]["container"], st["results"]["blob"])
        assert sorted(im["file"] for im in doc["images"]) == [n for n in names if n.startswith(st["folder"] + "/")]
    from gpu_batch import layout

    assert [store.read_json(st["results"]["container"], layout.request_blob(st["id"]))["request_name"]
            for st in finals] == ["season: cam0", "season: cam1"]  # each labelled with its folder
    listed = {t["id"]: t for t in json.loads(trapbatch("list", "--json", url=host.base_url).stdout)["tasks"]}
    assert [listed[st["id"]]["request_name"] for st in finals] == ["season: cam0", "season: cam1"]
    assert "season: cam0" in trapbatch("list", url=host.base_url).stdout

    mixed = trapbatch("submit", "--container", unique_name, "--folder", "cam0", "--folder", "empty", "--wait",
                      url=host.base_url)
    assert mixed.returncode == 1, mixed.stdout + mixed.stderr  # cam0's task is found again; empty/ has no images
    assert "already known" in mixed.stdout and "ended failed" in mixed.stderr
    twice = trapbatch("submit", "--container", unique_name, "--folder", "cam0", "--folder", "cam0/",
                      url=host.base_url)
    assert twice.returncode == 2 and "given twice" in twice.stderr
    est = trapbatch("estimate", "--container", unique_name, "--folder", "cam1", "--folder", "cam0", "--json",
                    url=host.base_url)
    assert est.returncode == 0, est.stdout + est.stderr
    assert [(e["folder"], e["images"]) for e in json.loads(est.stdout)] == [("cam1", 3), ("cam0", 3)]
    some = trapbatch("estimate", "--container", unique_name, "--folder", "cam1", "--folder", "empty", url=host.base_url)
    assert some.returncode == 1, some.stdout + some.stderr  # empty/ has no images; cam1's estimate still printed
    assert "folder cam1" in some.stdout and "folder empty: the estimate of folder empty ended failed" in some.stderr


def test_estimate_enumerates_and_submits_no_pool_work(host, store: BlobStore, unique_name: str,  # type: ignore[no-untyped-def]
                                                      storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_images(store, unique_name, 9, corrupt=0)  # images_per_shard 4 (app_env): 3 shards
    store.write_bytes(unique_name, "cam0/VID_0001.MP4", b"a video")  # found, never run: the estimate says so
    store.write_bytes(unique_name, "notes.txt", b"field notes")  # beside cam0/readme.txt (upload_images)

    est = trapbatch("estimate", "--container", unique_name, "--json", url=host.base_url)

    assert est.returncode == 0, est.stdout + est.stderr
    figures = json.loads(est.stdout)
    assert (figures["images"], figures["shards"], figures["worker_images_per_s"]) == (9, 3, 244)
    assert figures["not_images"] == {"files": 3, "kinds": {".txt": 2, ".mp4": 1}}
    table = trapbatch("estimate", "--container", unique_name, url=host.base_url)  # the same estimate, as a table
    assert "3 files are not images and were not run (.txt 2, .mp4 1)" in " ".join(table.stdout.split())
    assert figures["gpu_hours"] > 0 and figures["wall_seconds"] > 0 and figures["cost"] is None
    listed = json.loads(trapbatch("list", "--json", url=host.base_url).stdout)["tasks"]
    assert [t["stage"] for t in listed] == ["estimated"]
    assert pool_rows(storage_connection, listed[0]["id"]) == []  # nothing reached the pool
    from core.requests import parse_task_request

    assert listed[0]["id"] != parse_task_request({"container": unique_name}).task_id  # never the real run's task
    # an estimate's results, asked for: what to do in the CLI's words, not the API's "without dry_run"
    asked = trapbatch("results", listed[0]["id"], url=host.base_url)
    assert asked.returncode == 4 and "run the same request with trapbatch submit instead of trapbatch estimate" in \
        " ".join(asked.stderr.split()) and "dry_run" not in asked.stderr, asked.stderr

    # an estimate that fails, with --json: its error as JSON on standard output, as --folder lists a folder's
    failed = trapbatch("estimate", "--container", unique_name, "--prefix", "nowhere/", "--json", url=host.base_url)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    error = json.loads(failed.stdout)
    assert error["exit_code"] == 1 and "no images" in error["error"] and error["hint"], error
    # it failed at listing: nothing reached the pool, so its status names no pool job
    status = json.loads(trapbatch("status", error["id"], "--json", url=host.base_url).stdout)
    assert status["stage"] == "failed" and "pool_job" not in status, status


def test_the_end_of_a_task_is_announced_once_with_a_signed_post(host, store: BlobStore, unique_name: str,  # type: ignore[no-untyped-def]
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """On devhost (real orchestration, real activity, a real HTTP receiver): one signed POST per task end, for an
    estimate (no pool work, so it is quick) started with ``trapbatch estimate --notify-url``."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from core import notify

    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"notify-key": "s3cret-for-hmac"}))
    upload_images(store, unique_name, 3, corrupt=0)
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    # a notification the app could never send is refused at the start (it was accepted, and silently never sent)
    unlisted = trapbatch("submit", "--container", unique_name, "--notify-url", hook, url=host.base_url)
    assert unlisted.returncode == 4 and "400" in unlisted.stderr and "TRAPBATCH_NOTIFY_HOSTS" in unlisted.stderr
    # no task exists yet: what follows one without a notification is submit --wait, there is no id to watch
    assert "leave --notify-url out and follow the task with trapbatch submit --wait" in " ".join(
        unlisted.stderr.split()) and "<task id>" not in unlisted.stderr, unlisted.stderr
    monkeypatch.setenv("TRAPBATCH_NOTIFY_HOSTS", f"127.0.0.1:{server.server_port}")
    unsigned = trapbatch("submit", "--container", unique_name, "--notify-url", hook, url=host.base_url)
    assert unsigned.returncode == 4 and "TRAPBATCH_NOTIFY_SECRET" in unsigned.stderr
    assert json.loads(trapbatch("list", "--json", url=host.base_url).stdout)["tasks"] == []  # neither started
    monkeypatch.setenv("TRAPBATCH_NOTIFY_SECRET", "notify-key")
    monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
    try:
        est = trapbatch("estimate", "--container", unique_name, "--json", "--notify-url", hook, url=host.base_url)
        assert est.returncode == 0, est.stderr
        from tests.waiting import wait_until

        wait_until(lambda: got, 60, "the notification")
    finally:
        server.shutdown()
    [(headers, raw)] = got
    assert notify.verify("s3cret-for-hmac", raw, headers[notify.SIGNATURE_HEADER])
    doc = json.loads(raw)
    assert doc["stage"] == "estimated" and doc["estimate"]["images"] == 3
    assert doc["run"] and headers[notify.DELIVERY_HEADER] == f"{doc['task_id']}/{doc['run']}/estimated"
    told = wait_until(lambda: json.loads(trapbatch("status", doc["task_id"], "--json", url=host.base_url).stdout)
                      .get("notification"), 60, "the status to say the receiver was told")
    assert told == {"sent": True, "status_code": 200, "reason": ""}


def test_an_address_held_in_a_secret_is_told_and_kept_out_of_the_tasks_history(  # type: ignore[no-untyped-def]
        host, store: BlobStore, unique_name: str, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """On devhost (real orchestration, real activity, a real HTTP receiver): ``trapbatch estimate
    --notify-url-secret`` names a secret of the local secrets file whose value is the address, query and all (as a
    Logic Apps trigger URL's ``sig``). The receiver gets the signed POST at that address; the address is in no
    orchestration input or history, status or request file, which hold the secret's name. The same address given as
    ``--notify-url`` is refused before anything is sent, with the way out."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from core import notify
    from gpu_batch import layout

    got: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append((self.path, dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sig = "q7PiT3stSaSsIgNaTuRe0"
    hook = f"http://127.0.0.1:{server.server_port}/workflows/w1/triggers/manual/run?sv=1.0&sig={sig}"
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"notify-key": "s3cret-for-hmac", "notify-url-lab-hook": hook}))
    upload_images(store, unique_name, 3, corrupt=0)
    clear = trapbatch("estimate", "--container", unique_name, "--notify-url", hook, url=host.base_url)
    assert clear.returncode == 2 and "--notify-url-secret" in clear.stderr and sig not in clear.stderr, clear.stderr
    monkeypatch.setenv("TRAPBATCH_NOTIFY_HOSTS", f"127.0.0.1:{server.server_port}")
    monkeypatch.setenv("TRAPBATCH_NOTIFY_SECRET", "notify-key")
    monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
    try:
        est = trapbatch("estimate", "--container", unique_name, "--json", "--notify-url-secret",
                        "notify-url-lab-hook", url=host.base_url)
        assert est.returncode == 0, est.stderr
        wait_until(lambda: got, 60, "the notification")
    finally:
        server.shutdown()
    [(path, headers, raw)] = got
    assert path == f"/workflows/w1/triggers/manual/run?sv=1.0&sig={sig}"
    assert notify.verify("s3cret-for-hmac", raw, headers[notify.SIGNATURE_HEADER])
    task_id = json.loads(raw)["task_id"]
    status = wait_until(lambda: (lambda st: st if st.get("notification") else None)(
        json.loads(trapbatch("status", task_id, "--json", url=host.base_url).stdout)), 60, "the status")
    assert status["notification"] == {"sent": True, "status_code": 200, "reason": ""}
    kept = [json.dumps(status), json.dumps(store.read_json(app_env["TRAPBATCH_CONTAINER"],
                                                           layout.request_blob(task_id)))]
    for inst in host.store.list_instances():
        if inst["InstanceId"].startswith(task_id):
            kept += [json.dumps(inst), json.dumps(host.store.load_history(inst["InstanceId"]))]
    assert len(kept) > 2 and any("notify-url-lab-hook" in text for text in kept[2:]), \
        "the orchestration's input names the secret"
    assert [text for text in kept if sig in text or "/workflows/w1" in text] == []
