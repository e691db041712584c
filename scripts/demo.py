"""`make demo`: one task end to end on the bundled sample images, on this machine.

Starts Azurite (in memory) and devhost (the local stand-in for `func host start`) on free loopback ports, uploads
samples/images to a container, starts a task through the HTTP API exactly as a user would, with the functions of the
``trapbatch`` command (cli/: the same client, progress lines and downloads), shows progress, then downloads the merged
results and the preview site into demo-output/ and prints a summary. Everything it started is stopped on
exit, also on Ctrl-C or failure.

Model: TRAPBATCH_MODEL (a MegaDetector checkpoint path, or a known name such as MDV5A when the machine can download it).
Without one, a small YOLOv5 network with RANDOM weights is built, and the demo says loudly that its detections are
meaningless: it proves the pipeline, not the detector.

Workers: the shards run on the resident worker (``TRAPBATCH_WORKER_RESIDENT=1``, as ``azd up`` with
``residentWorker`` sets up on Batch nodes), so the torch import and model load are paid once, not by each of the
five shards (65 s of demo became ~25 s here); its server is stopped with the rest. ``TRAPBATCH_WORKER_RESIDENT=0
make demo`` runs a worker process per shard instead.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file (python scripts/demo.py), not as -m scripts.demo:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages are beside scripts/

from adapters.blobs import BlobStore, service_client
from cli.client import ApiClient
from cli.config import Config
from cli.download import blob_service, download
from cli.progress import LineReporter, wait_for, zooniverse_cut_short_line
from core import mdformat, notimages
from devhost.azurite import Azurite, start_azurite
from devhost.port_file import DevhostDidNotStart, wait_for_port_file
from gpu_batch.formats.detections_csv import capture_time
from gpu_batch.worker.resident_protocol import stop_server

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "images"
OUT = Path(os.environ.get("TRAPBATCH_DEMO_OUTPUT", ROOT / "demo-output")).resolve()
CONTAINER = "demo-camera-traps"
THRESHOLD = 0.2
# devhost requires a function key on /api/ routes, as the Functions host does (auth_level=FUNCTION); the demo makes
# one for its own devhost and sends it with every request (as `trapbatch --key` / TRAPBATCH_KEY would).
FUNCTION_KEY = secrets.token_urlsafe(24)


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def demo_model() -> str:
    model = os.environ.get("TRAPBATCH_MODEL", "")
    if model:
        say(f"model: {model}")
        return model
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    path = ROOT / ".cache" / "models" / "demo-yolov5n-random.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_test_checkpoint(path)
    bar = "!" * 78
    say(bar)
    say("NO TRAPBATCH_MODEL GIVEN: using a small YOLOv5n network with RANDOM weights.")
    say("Its detections are MEANINGLESS; this run proves the pipeline, not the detector.")
    say("For real detections: TRAPBATCH_MODEL=/path/to/md_v5a.0.0.pt make demo")
    say(bar)
    return str(path)


def upload_samples(store: BlobStore) -> int:
    store.ensure_container(CONTAINER)
    n = 0
    for path in sorted(SAMPLES.rglob("*")):
        if path.is_file():
            store.write_bytes(CONTAINER, path.relative_to(SAMPLES).as_posix(), path.read_bytes())
            n += 1
    return n


def validate_with_megadetector(doc: dict[str, Any]) -> str:
    """Run MegaDetector's own validator when the package is installed (``make setup-test`` installs it for the tests)."""
    try:
        from megadetector.postprocessing.validate_batch_results import (ValidateBatchResultsOptions,
                                                                         validate_batch_results)
    except ImportError:
        return "validated by trapbatch (install megadetector to also run its validate_batch_results)"
    result = validate_batch_results(doc, ValidateBatchResultsOptions())["validation_results"]
    if result["errors"]:
        raise SystemExit(f"MegaDetector's validate_batch_results rejected the output: {result['errors']}")
    return "passes MegaDetector's validate_batch_results"


ENVIRONMENT = """environment:
  TRAPBATCH_DEMO_OUTPUT       the output folder (default: demo-output/); EMPTIED first
  TRAPBATCH_MODEL             a MegaDetector checkpoint (default: a random-weight network: meaningless boxes)
  TRAPBATCH_WORKER_RESIDENT   0: a worker process per shard instead of one resident worker
  TRAPBATCH_LOCAL_CONCURRENCY shards run at once (default 1)"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The demo takes no options, only ``--help``. Why parse at all: ``--help`` (or any argument) used to start the
    demo, which empties its output folder first; an argument it does not know now ends it with exit 2, before that."""
    parser = argparse.ArgumentParser(prog="python -m scripts.demo (make demo)",
                                     description="\n\n".join((__doc__ or "").split("\n\n")[:2]),
                                     epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (module docstring); 0 when the task completed and its results check out.

    Any failure ends it with ``SystemExit`` and its reason; the ``finally`` stops devhost and Azurite either way.
    """
    parse_args(argv)
    t0 = time.monotonic()
    _fresh_output_folder()
    model = demo_model()
    say("starting Azurite (in memory) ...")
    azurite = start_azurite(log_path=OUT / "azurite.log")
    devhost: subprocess.Popen[bytes] | None = None
    # a short path (a Unix socket's is at most 107 bytes; demo-output may be deep), removed with the server
    resident = Path(tempfile.mkdtemp(prefix="trapbatch-demo-")) / "worker.sock"
    try:
        conn = azurite.connection_string
        store = BlobStore(service_client(conn))
        n_files = upload_samples(store)
        say(f"uploaded {n_files} sample files to container '{CONTAINER}'")
        log = OUT / "devhost.log"
        say(f"starting devhost (log: {_show(log)}) ...")
        port_file = resident.parent / "devhost.port"
        devhost = _start_devhost(port_file, conn, log, model, resident)
        try:
            base = wait_for_port_file(port_file, devhost, 120, log)
        except DevhostDidNotStart as exc:
            raise SystemExit(str(exc)) from None
        say(f"devhost serves on {base}")
        api = ApiClient(Config(url=base, key=FUNCTION_KEY))
        task_id = _start_task(api)
        st, task_seconds = _wait_for_task(api, task_id)
        res, doc = _download_results(api, conn, task_id, st)
        md_check = _check_results(doc)
        zooniverse = _zooniverse_folder(conn, res, st)
        _print_summary(doc, st, md_check, task_seconds, t0, zooniverse)
        return 0
    finally:
        _stop_services(devhost, azurite, resident)


def _fresh_output_folder() -> None:
    """Empty ``OUT`` and create its ``previews`` folder, so nothing from an earlier run is mistaken for this one's."""
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "previews").mkdir(parents=True)


def _start_devhost(port_file: Path, conn: str, log: Path, model: str, resident: Path) -> subprocess.Popen[bytes]:
    """Start devhost against Azurite, with the local pool, its output going to ``log``, on a port it picks itself
    and writes to ``port_file`` (a port picked here might be taken by another program before devhost binds it:
    devhost/port_file.py).

    Why these settings: short polls and 10-image shards let the few sample images show several shards and live
    progress within seconds (the polls only notice ends and show progress: the local pool starts a queued shard as
    soon as a slot frees, whatever the poll interval; gpu_batch/pool/local.py "Scheduling"); the resident worker at
    ``resident`` runs them without a start-up each (it exits by itself two minutes after its last shard, should the
    demo be killed before it stops it); its own process group lets ``_stop_services`` stop devhost with everything it
    started.
    """
    env = {**os.environ, "AzureWebJobsStorage": conn, "TRAPBATCH_POOL": "local",
           "TRAPBATCH_POLL_MIN_S": "1", "TRAPBATCH_POLL_MAX_S": "3", "TRAPBATCH_IMAGES_PER_SHARD": "10",
           "TRAPBATCH_PREVIEW_THRESHOLD": str(THRESHOLD),
           "TRAPBATCH_LOCAL_CONCURRENCY": os.environ.get("TRAPBATCH_LOCAL_CONCURRENCY", "1"),
           "TRAPBATCH_DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
           "TRAPBATCH_WORKER_RESIDENT": os.environ.get("TRAPBATCH_WORKER_RESIDENT", "1"),
           "TRAPBATCH_RESIDENT_SOCKET": str(resident), "TRAPBATCH_RESIDENT_IDLE_S": "120",
           "TRAPBATCH_MODEL": model}  # the operator's default model: requests may name only published ones
    return subprocess.Popen([sys.executable, "-m", "devhost", "--port", "0", "--port-file", str(port_file), "--hub",
                             "demo"],
                            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


RANDOM_WEIGHTS_NAME = "trapbatch demo (random-weight model: its detections are meaningless)"


def demo_request(random_weights: bool) -> dict[str, Any]:
    """The demo task's request. ``camera_depth`` 1: the samples are kept as camera/day folders, and a camera's days
    are one camera (its deployment, visits and days), not a camera a day. With the random-weight model its name
    says so: the name is the title of README.txt, of the Camtrap DP package and of COCO's description, so whoever
    is handed the demo's files (not its console) learns that its boxes are noise."""
    name = RANDOM_WEIGHTS_NAME if random_weights else "trapbatch demo"
    return {"container": CONTAINER, "request_name": name, "camera_depth": 1}


def _start_task(api: ApiClient) -> str:
    """Start the demo task through the HTTP API, as a user would, and return its id (its model: the app's default,
    random weights unless TRAPBATCH_MODEL names one)."""
    answer = api.submit(demo_request(not os.environ.get("TRAPBATCH_MODEL")))
    task_id: str = answer["id"]
    say(f"task {task_id} started; status: {answer['status_url']}")
    return task_id


def _wait_for_task(api: ApiClient, task_id: str) -> tuple[dict[str, Any], float]:
    """Follow the task's status (``trapbatch watch``'s loop), showing each change of progress, until it ends; return
    its last status and seconds.

    Exits (``SystemExit``) when the task does not finish within 30 minutes or ends other than ``Completed``.
    """
    t_start = time.monotonic()
    try:
        st = wait_for(lambda: api.status(task_id), LineReporter(say), poll_s=1, timeout_s=1800)
    except TimeoutError:
        raise SystemExit(f"the demo task did not finish within 30 minutes; see {_show(OUT / 'devhost.log')}") from None
    task_seconds = time.monotonic() - t_start
    if st["runtime_status"] != "Completed":
        # the log where it is: TRAPBATCH_DEMO_OUTPUT names another folder than demo-output/
        raise SystemExit(f"task ended {st['runtime_status']}: {st.get('error')}; see {_show(OUT / 'devhost.log')}")
    return st, task_seconds


def _download_results(api: ApiClient, conn: str, task_id: str, st: dict[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Download the merged results (JSON, CSV, the repeated-detection list) and the preview site into ``OUT``, as
    ``trapbatch results --previews`` does; return the API's results answer and the JSON document."""
    res = api.results(task_id)
    download(blob_service(conn, ""), res, st, OUT, previews=True)
    doc: dict[str, Any] = json.loads((OUT / "detections.json").read_text())
    return res, doc


def _zooniverse_folder(conn: str, res: dict[str, Any], st: dict[str, Any]) -> list[str]:
    """The Zooniverse manifests with their photos beside them, made fit for upload, as ``trapbatch zooniverse``
    writes them; the lines that say where."""
    from cli.zooniverse_upload import manifests, prepare, source_location, upload_command

    service = blob_service(conn, "")
    lines: list[str] = []
    for report in prepare(service, service, source_location(res)[0], manifests(res, st, None)[1], OUT):
        lines.append(f"zooniverse: {_show(report.manifest.parent)}/  ({report.photos} photos beside "
                     f"{report.manifest.name}: {report.copied} copied without their EXIF, {report.reencoded} "
                     f"re-encoded upright or as JPEG, {report.shrunk} shrunk; `trapbatch zooniverse <task>` makes it)")
        if report.problems:
            lines.append(f"            {len(report.problems)} photos not prepared: see {_show(report.problems_file)}")
        lines.append("            upload: "
                     + upload_command(Path(_show(report.manifest)), report.columns, bool(report.problems)))
    return lines


def _check_results(doc: dict[str, Any]) -> str:
    """Check the results list every sample once in MegaDetector's format and flag the corrupt samples as failures.

    Returns how the format was validated, for the summary. Why the demo checks: it is also an end-to-end test
    (``tests/integration/test_demo.py``), and a newcomer should see a broken pipeline fail, not a wrong file.
    """
    expected = [p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*")
                if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif")]
    mdformat.validate(doc, expected_files=expected)
    md_check = validate_with_megadetector(doc)
    unflagged = [im["file"] for im in doc["images"] if "corrupt" in im["file"] and not im.get("failure")]
    if unflagged:
        raise SystemExit(f"corrupt sample images were not reported as failures: {unflagged}")
    return md_check


def _print_summary(doc: dict[str, Any], st: dict[str, Any], md_check: str,
                   task_seconds: float, t0: float, zooniverse: Sequence[str] = ()) -> None:
    """Say where the outputs are, what was found, and how long the task and the whole demo (since ``t0``) took."""
    counts = mdformat.summarize(doc["images"], THRESHOLD)
    wall = time.monotonic() - t0
    say("=" * 78)
    if (OUT / "README.txt").is_file():  # written with the results: what each file is and what opens it
        say(f"readme:   {_show(OUT)}/README.txt  (what each of these files is and what opens it)")
    say(f"results:  {_show(OUT)}/detections.json  (MegaDetector format {doc['info']['format_version']}; {md_check})")
    say(f"table:    {_show(OUT)}/detections.csv  (one row per image, for spreadsheets)")
    say(f"previews: {_show(OUT)}/previews/index.html  (open it in a browser: the page and its thumbnails are files)")
    if (OUT / "exports").is_dir():
        say(f"exports:  {_show(OUT)}/exports/  (COCO Camera Traps, Camtrap DP, Zooniverse manifests)")
    for line in zooniverse:
        say(line)
    cut_short = zooniverse_cut_short_line((st.get("results") or {}).get("exports"), str(st.get("id")))
    if cut_short:  # the truncated sample: in the results and damaged.csv, not in the Zooniverse manifest
        say(f"zooniverse: {cut_short}")
    say(f"images: {counts['images']}  with detections >= {THRESHOLD}: {counts['with_detections']} "
        f"({counts['detections']} detections)  empty: {counts['empty']}  failures: {counts['failed']}")
    for im in doc["images"]:
        if im.get("failure"):
            say(f"  failure: {im['file']}: {im['failure']}")
    taken = sorted(capture_time(im) for im in doc["images"] if im.get("datetime"))  # as the CSV and the page show it
    if taken:  # the cameras' EXIF clocks, as the worker read them
        say(f"taken:  {taken[0]} to {taken[-1]} ({len(taken)} of {counts['images']} images have an EXIF capture "
            "time)")
    exports = (st.get("results") or {}).get("exports") or {}
    events = exports.get("events") if isinstance(exports, dict) else None  # counted by the exports (camera visits)
    if events:
        cameras = exports.get("cameras")
        say(f"events: {events} camera visits" + (f" at {cameras} cameras" if cameras else "") + " (a camera's photos "
            f"at most {os.environ.get('TRAPBATCH_EVENT_INTERVAL_S') or 60} s apart; Camtrap DP event-level "
            "observations)")
        if (OUT / "exports" / "camera-visits.csv").is_file():
            say(f"        {_show(OUT)}/exports/camera-visits.csv: each camera's visits with animals, people, "
                "vehicles and blank ones (also on the preview page)")
        if (OUT / "exports" / "camera-days.csv").is_file():
            say(f"        {_show(OUT)}/exports/camera-days.csv: each camera's photos and visits day by day, from its "
                "first photo to its last (trap effort, detection histories)")
    passed_over = doc["info"].get("trapbatch", {}).get("not_images")
    if passed_over:  # the samples hold a notes file: the task says it did not run it
        say(f"not run: {notimages.describe(passed_over)}")
        for kind, row in passed_over["kinds"].items():
            say(f"  {kind}: {', '.join(row['examples'])}")
    repeats = st.get("repeated_detections") or {}
    if repeats:
        say(f"repeated detections (same box in >= 20 images of a folder): {repeats.get('locations', 0)} places; "
            "see the preview page")
    say(f"task time {task_seconds:.1f}s ({counts['images'] / task_seconds:.2f} img/s end to end), "
        f"demo wall time {wall:.1f}s")
    if not os.environ.get("TRAPBATCH_MODEL"):
        say("(random-weight model: the detections above are meaningless)")


def stop_group(proc: subprocess.Popen[bytes] | None, grace_s: float = 15) -> None:
    """Stop a process started in a session of its own, with everything it started (its process group): SIGTERM,
    then SIGKILL after ``grace_s``. Nothing when it never started or has ended."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _stop_services(devhost: subprocess.Popen[bytes] | None, azurite: Azurite, resident: Path) -> None:
    """Stop devhost (its whole process group: SIGTERM, then SIGKILL after 15 s), the resident worker and Azurite,
    whatever happened. devhost stops the resident worker with itself (devhost/stopping.py); ``_stop_resident`` is for
    a devhost that had to be killed (the server is in a session of its own: its pid is beside its socket), and the
    pid read before says which server ran."""
    server = _resident_pid(resident)
    stop_group(devhost)
    stopped = _stop_resident(resident) or server
    azurite.stop()
    say(f"stopped devhost{f', the resident worker (pid {stopped})' if stopped else ''} and Azurite")


def _resident_pid(socket_path: Path) -> int:
    """The pid the resident worker of ``socket_path`` wrote beside its socket; 0 when none runs."""
    try:
        return int(Path(f"{socket_path}.pid").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 0


def _stop_resident(socket_path: Path) -> int:
    """End the resident worker serving ``socket_path``, if one started, and remove its folder (socket, pid file,
    log); its pid, 0 when none had started."""
    pid = stop_server(socket_path)
    shutil.rmtree(socket_path.parent, ignore_errors=True)
    return pid


if __name__ == "__main__":
    sys.exit(main())
