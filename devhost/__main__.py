"""``python -m devhost``: serve function_app.py locally, the way ``func host start`` would (see devhost/host.py)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devhost.diagnostics import describe_live_hosts
from devhost.port_file import remove_port_file, write_port_file
from devhost.stopping import (STOP_GRACE_S, OrphanReaper, Stopper, announce_stop, app_processes, become_subreaper,
                              describe, exit_now, kill_app_processes, lingering_threads, stop_app_processes,
                              withdraw_stop)

if TYPE_CHECKING:
    from devhost.event_grid import Subscription
    from devhost.host import DevHost
    from devhost.keys import CallerIdentity

DEFAULT_KEY_FILE = Path(__file__).resolve().parent / ".function-key"


# trapbatch's Event Grid subscription (infra/hooks/postdeploy.sh; tests pin both to gpu_batch.layout.READY_MARKER).
DEFAULT_EVENT_GRID = ["container_ready=/blobs/trapbatch-ready.json"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071,
                        help="the port of the HTTP listener (default %(default)s); 0: a free one the system picks, "
                             "which the startup line and --port-file name")
    parser.add_argument("--port-file", default=None, metavar="PATH",
                        help='once devhost listens, write {"port": N, "pid": P, "base_url": ...} to PATH (atomically; '
                             "removed at a clean stop): with --port 0, a caller that starts devhost never picks a port "
                             "another program may take first (devhost/port_file.py)")
    parser.add_argument("--hub", default=None,
                        help="task hub name (default: host.json's durableTask.hubName with its %%NAME%% app setting "
                             "from the environment, as the Durable extension resolves it; trapbatch's: "
                             "$TRAPBATCH_TASK_HUB)")
    parser.add_argument("--activity-workers", type=int, default=None,
                        help="activities run at once (default: host.json's maxConcurrentActivityFunctions, else 4)")
    parser.add_argument("--blob-poll-seconds", type=float, default=2.0)
    parser.add_argument("--with-azurite", action="store_true", help="start Azurite too (state under --azurite-location)")
    parser.add_argument("--azurite-location", default=".azurite")
    parser.add_argument("--function-key", default=None,
                        help="the key /api/ routes of auth level FUNCTION require (default: $TRAPBATCH_DEVHOST_FUNCTION_KEY, "
                             "else the key in --key-file from an earlier run, else a new one)")
    parser.add_argument("--key-file", default=os.environ.get("TRAPBATCH_DEVHOST_KEY_FILE", str(DEFAULT_KEY_FILE)),
                        help="where a generated function key is kept (mode 0600) and found again on the next start; "
                             "default %(default)s")
    parser.add_argument("--callers", default=os.environ.get("TRAPBATCH_DEVHOST_CALLERS", "") or None,
                        help='JSON file {"<function key>": {"id": ..., "name": ..., "roles": [...]}}: further function '
                             "keys, each signed in as that caller the way App Service Authentication sets it (pair with "
                             "TRAPBATCH_CALLER_AUTH=easyauth; default $TRAPBATCH_DEVHOST_CALLERS)")
    parser.add_argument("--event-grid", action="append", default=None, metavar="FUNCTION=/blobs/NAME",
                        help="an Event Grid subscription as infra/hooks/postdeploy.sh creates it in Azure: BlobCreated "
                             "events for a blob NAME at the top of any container go to FUNCTION (repeatable; default "
                             f"{' '.join(DEFAULT_EVENT_GRID)} for trapbatch's app, or $TRAPBATCH_DEVHOST_EVENT_GRID)")
    parser.add_argument("--event-grid-retry-scale", type=float, default=None, metavar="FACTOR",
                        help="how long Event Grid's retry schedule of a failed delivery takes, as a multiple of the "
                             "platform's (10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h "
                             "for the event's 24-h time to live; devhost/event_grid.py): e.g. 0.01 runs it a hundred "
                             "times faster for a test or demo; the 30-s wait for an answer stays (default "
                             "$TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE, else 1.0: the platform's)")
    args = parser.parse_args(argv)
    from devhost.http_server import request_body_limit

    try:  # an app setting the host would refuse on every request: one line and exit 2, before anything starts
        request_body_limit(os.environ)
    except ValueError as exc:
        print(f"devhost: {exc}", file=sys.stderr, flush=True)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    from devhost.event_grid import Subscription
    from devhost.keys import CallersFileError, load_callers

    try:  # arguments devhost refuses: one line and exit 2, before Azurite starts (it would be left running)
        callers = load_callers(args.callers) if args.callers else {}
        env_grid = [s for s in os.environ.get("TRAPBATCH_DEVHOST_EVENT_GRID", "").split(",") if s.strip()]
        grid = args.event_grid or env_grid or (DEFAULT_EVENT_GRID if args.app == "function_app:app" else [])
        subscriptions = [Subscription.parse(s.strip()) for s in grid]
        args.event_grid_retry_scale = _retry_scale(args.event_grid_retry_scale)
    except (CallersFileError, ValueError) as exc:
        print(f"devhost: {exc}", file=sys.stderr, flush=True)
        return 2
    if not args.with_azurite and not os.environ.get("AzureWebJobsStorage", ""):
        print("AzureWebJobsStorage is not set: point it at Azurite ('UseDevelopmentStorage=true' with Azurite on its "
              "default ports) or pass --with-azurite", file=sys.stderr)
        return 2
    # Until _serve waits for it: SIGTERM unwinds (SystemExit) through the finally below, which stops the Azurite
    # started here; the default action ended the process mid-start (importing the app takes seconds) and left it.
    previous = signal.signal(signal.SIGTERM, _terminated), signal.getsignal(signal.SIGINT)
    try:
        return _start_and_serve(args, callers, subscriptions, Stopper())
    finally:
        signal.signal(signal.SIGTERM, previous[0])  # main() called in-process (tests) leaves the caller's as it was
        signal.signal(signal.SIGINT, previous[1])
        withdraw_stop()


def _start_and_serve(args: argparse.Namespace, callers: dict[str, CallerIdentity],
                     subscriptions: list[Subscription], stopper: Stopper) -> int:
    """Start Azurite where asked, then serve; every way out stops that Azurite again."""
    azurite = None
    if args.with_azurite:
        from devhost.azurite import AzuriteError, PortTaken, start_azurite

        try:  # not installed, or a port of 10000-10002 held by another program: one line, exit 2
            azurite = start_azurite(location=Path(args.azurite_location), ports=(10000, 10001, 10002))
        except AzuriteError as exc:
            # --with-azurite has no other ports: the way round a taken one (README.md "Without Core Tools: devhost")
            other_ports = ("; stop that program, or start Azurite yourself on other ports and run devhost without "
                           "--with-azurite, AzureWebJobsStorage set to its connection string (README.md, \"Without "
                           "Core Tools: devhost\")") if isinstance(exc, PortTaken) else ""
            print(f"devhost: --with-azurite: {exc}{other_ports}", file=sys.stderr, flush=True)
            return 2
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
        stopper.at_once.append(lambda: azurite.stop(timeout=5))  # last: the app's processes go first (_serve)
    try:  # every way out after this stops the Azurite started above (its processes are in sessions of their own)
        return _serve(args, os.environ["AzureWebJobsStorage"], set(azurite.pids.values()) if azurite else None,
                      callers, subscriptions, stopper)
    finally:
        if azurite:
            if stopper.requested.is_set():
                print("devhost: stopping Azurite (it saves its state: the next start resumes from it)", flush=True)
            azurite.stop()


EMULATOR_ACCOUNT = "devstoreaccount1"  # Azurite's one account, with a key published in its docs


def cli_settings_line(base_url: str, function_key: str, connection: str, own_azurite: bool) -> str | None:
    """What the ``trapbatch`` command needs to use this devhost, or None where its storage is not an emulator's.

    Why also for an Azurite on other ports (``AzureWebJobsStorage`` naming the emulator's account at other endpoints,
    as when 10000-10002 are taken): the line was printed only for ``--with-azurite`` or
    ``UseDevelopmentStorage=true``, so such a run said nothing of the settings README says devhost prints. Its
    connection string is not printed (named as the variable): never a real account's key, and no line at all for a
    real account."""
    parts = dict(p.split("=", 1) for p in connection.strip().split(";") if "=" in p)
    if own_azurite or connection.strip().rstrip(";") == "UseDevelopmentStorage=true":
        storage = "--storage-connection UseDevelopmentStorage=true (Azurite on its default ports)"
    elif parts.get("AccountName", "").strip() == EMULATOR_ACCOUNT:
        storage = '--storage-connection "$AzureWebJobsStorage" (the Azurite it names)'
    else:
        return None
    return (f"devhost: for the trapbatch command: export TRAPBATCH_URL={base_url} TRAPBATCH_KEY={function_key}; "
            f"`trapbatch results` reads from storage with {storage}; photos go up with "
            "`python -m scripts.upload_local <container> <folder>`")


def _retry_scale(given: float | None) -> float:
    """``--event-grid-retry-scale``, else ``$TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE``, else 1.0; ValueError when it
    is no positive number (``event_grid.DeliveryPolicy`` says so)."""
    from devhost.event_grid import DeliveryPolicy

    if given is None:
        raw = os.environ.get("TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE", "").strip() or "1.0"
        try:
            given = float(raw)
        except ValueError:
            raise ValueError(f"TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE={raw!r}: expected a positive number (1.0: "
                             "Event Grid's own schedule)") from None
    return DeliveryPolicy(scale=given).scale


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace, connection: str, own_azurite: set[int] | None,
           callers: dict[str, CallerIdentity], subscriptions: list[Subscription], stopper: Stopper) -> int:
    """Load the app, serve it until SIGTERM/SIGINT, stop it (devhost/stopping.py); returns the exit status (3: Azure
    would not load it). ``own_azurite``: the pids of the Azurite devhost started, which it stops last."""
    sys.path.insert(0, os.getcwd())
    module_name, _, attr = args.app.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")

    from devhost.host import DevHost
    from devhost.host_metadata import HostMetadataError
    from devhost.hostjson import HostConfig, HostJsonError
    from devhost.keys import key_from_file_or_new
    from devhost.worker_indexing import WorkerIndexingError, WorkerUnavailableError

    keys, key_source = key_from_file_or_new(Path(args.key_file), args.function_key)
    try:
        host_config = HostConfig.load(Path.cwd() / "host.json")
        hub = args.hub if args.hub is not None else host_config.task_hub(os.environ)
        host = DevHost(app, connection, task_hub=hub, host=args.host, port=args.port,
                       activity_workers=args.activity_workers, blob_poll_s=args.blob_poll_seconds,
                       function_key=keys.function_key, host_config=host_config,
                       callers=callers, event_grid=subscriptions,
                       event_grid_retry_scale=args.event_grid_retry_scale)
    except (WorkerIndexingError, WorkerUnavailableError, HostMetadataError, HostJsonError) as exc:
        # Azure would refuse to load this app (one function the worker refuses fails the whole app), or leave out
        # functions the host refuses: devhost serves none of it.
        print(f"devhost: not serving {args.app}: {exc}", file=sys.stderr, flush=True)
        return 3
    # Before host.start(): from here a SIGTERM or SIGINT is a clean stop (the port file removed, the host stopped),
    # also one sent the moment the port file appears (it was written before these were installed: the default
    # action ended devhost, the file left behind); a second one stops at once (devhost/stopping.py).
    stop = stopper.requested
    stopper.install()
    azurite_pids = own_azurite or set()
    stopper.at_once.insert(0, lambda: kill_app_processes(azurite_pids))
    if args.port_file:
        stopper.at_once.insert(0, lambda: remove_port_file(Path(args.port_file)))
    # the resident worker, left by the client that started it, stays devhost's to stop; an orphan that exits is
    # waited for (devhost/stopping.py)
    reaper = OrphanReaper().start() if become_subreaper() else None
    # kill -USR1 <pid>: what every part of devhost is doing now (a request that hangs: devhost/diagnostics.py)
    signal.signal(signal.SIGUSR1, lambda *_: print(describe_live_hosts(), file=sys.stderr, flush=True))
    host.start()
    try:
        print(f"devhost: serving {args.app} on {host.base_url}/api/ (task hub {hub}); Ctrl-C stops", flush=True)
        print(f"devhost: function key ({key_source}): {keys.function_key}\n"
              "devhost: send it as the x-functions-key header (or ?code=) to routes with auth_level FUNCTION, as on "
              "Azure", flush=True)
        settings_line = cli_settings_line(host.base_url, keys.function_key, connection, own_azurite is not None)
        if settings_line:
            print(settings_line, flush=True)
        if callers:
            print(f"devhost: {len(callers)} caller keys from {args.callers}: requests made with one carry that "
                  "caller's X-MS-CLIENT-PRINCIPAL headers, as App Service Authentication sets them "
                  f"(ids: {', '.join(sorted(c.id for c in callers.values()))})", flush=True)
        if args.port_file and not stop.is_set():  # last: a reader that finds it finds devhost listening
            write_port_file(Path(args.port_file), host.port, host.base_url)
        stop.wait()
    finally:
        if args.port_file:
            remove_port_file(Path(args.port_file))
        if reaper:
            reaper.stop()
        _stop_in_order(host, stopper, azurite_pids)
    return 0


def _stop_in_order(host: DevHost, stopper: Stopper, azurite_pids: set[int]) -> None:
    """The orderly stop (devhost/stopping.py): the activities in flight get a grace, then the app's processes are
    asked to stop and killed after another; what it does and what the next start resumes is printed."""
    t0 = time.monotonic()
    announce_stop()  # first: the local pool starts nothing more (devhost/stopping.py)
    linux = sys.platform.startswith("linux")
    running = host.engine.running_activities()
    print(f"devhost: stopping (Ctrl-C again stops at once): up to {STOP_GRACE_S:.0f} s for "
          f"{_n(running, 'activity', 'activities')} in flight to finish (one still running then runs again at the next "
          "start), then the processes the app started (the local pool's runners put their shard back in the queue: it "
          "resumes at the next start)", flush=True)
    still = host.stop(STOP_GRACE_S, stopper.hurry)
    pids = app_processes(azurite_pids) if linux else []
    if pids:
        print(f"devhost: stopping {_n(len(pids), 'process', 'processes')} the app started (SIGINT, SIGKILL after "
              f"{STOP_GRACE_S:.0f} s): " + "; ".join(describe(pid) for pid in pids), flush=True)
    asked, killed = stop_app_processes(pids, STOP_GRACE_S, stopper.hurry, azurite_pids)
    ended = len([pid for pid in asked if pid not in killed])
    print(f"devhost: stopped in {time.monotonic() - t0:.1f} s; {_n(still, 'activity', 'activities')} will run again "
          f"at the next start; {_n(ended, 'process', 'processes')} of the app ended on SIGINT"
          + (f", {len(killed)} killed (pids {', '.join(map(str, killed))}; a shard of theirs is resubmitted at the "
             "next start)" if killed else ""), flush=True)


def _n(count: int, one: str, more: str) -> str:
    return f"{count} {one if count == 1 else more}"


if __name__ == "__main__":
    code = main()
    if lingering_threads():  # an activity still running past its grace: not waited for (devhost/stopping.py)
        exit_now(code)
    sys.exit(code)
