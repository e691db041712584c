"""A small v2-model Durable app exercising every durable feature devhost claims, through the real SDK."""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
from typing import Dict

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()
ATTEMPTS: dict[str, int] = {}
_lock = threading.Lock()


@bp.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    if city == "Boom":
        raise ValueError("activity exploded for Boom")
    return f"Hello {city}!"


@bp.activity_trigger(input_name="payload", activity="Double")
async def double_it(payload: Dict[str, int]) -> dict[str, int]:
    return {"n": payload["n"] * 2}


@bp.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails until it has been called ``int(key.split(':')[1])`` times (counted per key, in this process)."""
    with _lock:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        n = ATTEMPTS[key]
    if n < int(key.split(":")[1]):
        raise RuntimeError(f"flaky {key} failed on attempt {n}")
    return f"{key} ok after {n}"


@bp.activity_trigger(input_name="path")
def slow_marker(path: str) -> str:
    """Sleeps, then appends one line to ``path``: lets a test count how often an activity ran."""
    import time

    time.sleep(float(os.environ.get("SAMPLE_SLOW_S", "0.5")))
    with open(path, "a") as f:
        f.write("ran\n")
    return "slept"


app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(bp)


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new(req.route_params["functionName"], None, req.get_json())
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{instanceId}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def http_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    st = await client.get_status(req.route_params["instanceId"])
    body = {"runtimeStatus": st.runtime_status.value if st.runtime_status else None, "output": st.output,
            "customStatus": st.custom_status}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="events/{instanceId}/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_raise(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["instanceId"], req.route_params["name"], req.get_json())
    return func.HttpResponse(status_code=202)


@app.route(route="terminate/{instanceId}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instanceId"], "stopped by test")
    return func.HttpResponse(status_code=202)


@app.blob_trigger(arg_name="blob", path="drops/{name}", connection="AzureWebJobsStorage")
@app.durable_client_input(client_name="client")
async def on_drop(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    await client.start_new("fanout", None, json.loads(blob.read()))


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    cities = context.get_input()
    results = yield context.task_all([context.call_activity(say_hello, c) for c in cities])
    context.set_custom_status({"stage": "doubled", "n": len(results)})
    doubled = yield context.call_activity("Double", {"n": len(results)})
    return {"results": results, "doubled": doubled}


@app.orchestration_trigger(context_name="context")
def features(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Timer, activity failure caught, sub-orchestration, guid, clock."""
    start = context.current_utc_datetime
    yield context.create_timer(start + dt.timedelta(seconds=0.3))
    try:
        yield context.call_activity("say_hello", "Boom")
        caught = None
    except Exception as exc:
        caught = str(exc).splitlines()[0]
    child = yield context.call_sub_orchestrator("fanout", ["Oslo"])
    child2 = yield context.call_sub_orchestrator("fanout", ["Rome"], "fixed-child-id")
    return {"caught": caught, "child": child, "child2": child2, "guid": str(context.new_guid()),
            "waited": (context.current_utc_datetime - start).total_seconds()}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """task_any between an external event and a timeout timer."""
    seconds = context.get_input() or 30
    event = context.wait_for_external_event("Approve")
    timeout = context.create_timer(context.current_utc_datetime + dt.timedelta(seconds=seconds))
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        return {"approved": event.result}
    return {"approved": None}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """continue_as_new until n reaches the target, with an activity per generation."""
    state = context.get_input()
    yield context.call_activity("say_hello", f"gen{state['n']}")
    if state["n"] < state["target"]:
        context.continue_as_new({"n": state["n"] + 1, "target": state["target"]})
        return None
    return {"n": state["n"]}


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    keys = context.get_input()
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    ok = yield context.task_all([context.call_activity_with_retry("flaky", opts, k) for k in keys["ok"]])
    after = yield context.call_activity("say_hello", "after-retries")
    try:
        yield context.call_activity_with_retry("flaky", opts, keys["fail"])
        failed = None
    except Exception as exc:
        failed = str(exc).splitlines()[0]
    return {"ok": ok, "after": after, "failed": failed}


@app.orchestration_trigger(context_name="context")
def retries_after_days(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Calls ``say_hello`` with a retry policy whose first retry waits ``input`` days, and catches a failure."""
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=int(context.get_input() * 86_400_000),
                           max_number_of_attempts=2)
    try:
        return (yield context.call_activity_with_retry("say_hello", opts, "days"))
    except Exception as exc:
        return "caught: " + str(exc)


@app.orchestration_trigger(context_name="context")
def sleepy(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    context.set_custom_status("sleeping")
    yield context.create_timer(context.current_utc_datetime + dt.timedelta(hours=1))
    return "woke"


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity("say_hello", "ok")
    raise RuntimeError("orchestrator bug")


@app.orchestration_trigger(context_name="context")
def fails_saying_why(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a status, runs an activity, then sets the status it fails with (as trapbatch's task does) and raises."""
    context.set_custom_status({"stage": "working"})
    yield context.call_activity("say_hello", "ok")
    context.set_custom_status({"stage": "failed", "hint": "do this next"})
    raise RuntimeError("it failed")


@app.orchestration_trigger(context_name="context")
def status_across_generations(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a custom status, goes on as new, and in the new generation runs a slow activity before setting one."""
    state = context.get_input()
    if state["gen"] == 0:
        context.set_custom_status({"gen": 0})
        context.continue_as_new({"gen": 1, "path": state["path"]})
        return None
    yield context.call_activity("slow_marker", state["path"])
    context.set_custom_status({"gen": 1})
    return "done"


STATUS_VERSION = {"value": "v1"}  # the orchestrator's code version; a test changes it, as a deployment would


@app.orchestration_trigger(context_name="context")
def status_then_waits(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a status naming the code's version (``STATUS_VERSION``) and waits an hour; with input "continued", it
    first goes on as new once, and its second generation waits without setting one; with "continued, sets", its
    second generation sets its own first (``gen`` 1); with "continued twice", its second generation goes on as new at
    once without setting one, and its third waits without setting one."""
    if context.get_input() == "continued, none":
        context.continue_as_new("second")
        return None
    if context.get_input() == "continued twice":
        context.set_custom_status({"version": STATUS_VERSION["value"], "gen": 0})
        context.continue_as_new("continued, none")
        return None
    if context.get_input() in ("continued", "continued, sets"):
        context.set_custom_status({"version": STATUS_VERSION["value"], "gen": 0})
        context.continue_as_new("second" if context.get_input() == "continued" else "second, sets")
        return None
    if context.get_input() == "second, sets":
        context.set_custom_status({"version": STATUS_VERSION["value"], "gen": 1})
    elif context.get_input() != "second":
        context.set_custom_status({"version": STATUS_VERSION["value"]})
    yield context.create_timer(context.current_utc_datetime + dt.timedelta(hours=1))
    return "woke"


@app.orchestration_trigger(context_name="context")
def slow_steps(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    path = context.get_input()
    out = []
    for _ in range(4):
        out.append((yield context.call_activity("slow_marker", path)))
    return out


NONDET_FLAG = {"value": "a", "activity": "say_hello", "kind": "activity"}


@app.orchestration_trigger(context_name="context")
def nondet(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Reads a global (not replay-safe): tests flip the activity's input, name or kind while it waits for "Go"."""
    if NONDET_FLAG["kind"] == "timer":
        first = yield context.create_timer(context.current_utc_datetime + dt.timedelta(seconds=0.1))
    else:
        first = yield context.call_activity(NONDET_FLAG["activity"], NONDET_FLAG["value"])
    context.set_custom_status("waiting")
    yield context.wait_for_external_event("Go")
    return first


# ----------------------------------------------------------------- for test_fidelity.py
POISON_TRIES: dict[str, int] = {}
SLOW_GATE = threading.Event()


@app.activity_trigger(input_name="seconds")
def nap(seconds: float) -> str:
    """Sleeps ``seconds``: runs past a short functionTimeout."""
    import time

    time.sleep(seconds)
    return "rested"


@app.orchestration_trigger(context_name="context")
def napping(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    try:
        return (yield context.call_activity("nap", context.get_input()))
    except Exception as exc:
        return "failed: " + str(exc).splitlines()[0].strip()


@app.orchestration_trigger(context_name="context")
def parent_of_sleepy(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Waits on a sleepy child with the id given as input; reports how the child ended."""
    try:
        yield context.call_sub_orchestrator("sleepy", None, context.get_input())
        return "child completed"
    except Exception as exc:
        return "child failed: " + str(exc)


@app.orchestration_trigger(context_name="context")
def calls_in_other_case(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Calls ``say_hello`` by its name in capitals."""
    return (yield context.call_activity("SAY_HELLO", "case"))


@app.orchestration_trigger(context_name="context")
def calls_missing(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Calls an activity (input "activity") or a sub-orchestrator (else) that the app does not have, and catches the
    failure if there is one to catch."""
    try:
        if context.get_input() == "activity":
            yield context.call_activity("no_such_activity", 1)
        else:
            yield context.call_sub_orchestrator("no_such_orchestrator", 1)
        return "called"
    except Exception as exc:
        return "caught: " + str(exc)


@app.orchestration_trigger(context_name="context")
def chatty(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a custom status of ``input`` characters."""
    context.set_custom_status("x" * context.get_input())
    yield context.call_activity("say_hello", "chatty")
    return "done"


@app.orchestration_trigger(context_name="context")
def grower(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """continue_as_new once with its (large) input, then returns it: a large input, history and output."""
    state = context.get_input()
    if state["n"] < 1:
        context.continue_as_new({"n": state["n"] + 1, "pad": state["pad"]})
        return None
    yield context.call_activity("say_hello", "grown")
    return state


SPOOL_BARRIER = threading.Barrier(2, timeout=60)


@app.activity_trigger(input_name="size")
def spool(size: int) -> int:
    """Writes ``size`` bytes to a temporary file, a kilobyte at a time, and holds them until it returns."""
    import tempfile

    with tempfile.TemporaryFile("w+b") as fp:
        fp.write(b"x" * (size // 2))
        try:
            SPOOL_BARRIER.wait()  # the two calls of one ``spooler`` hold their files at the same time
        except threading.BrokenBarrierError:
            pass
        for _ in range((size - size // 2) // 1024):
            fp.write(b"x" * 1024)
        return fp.tell()


@app.orchestration_trigger(context_name="context")
def spooler(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Two ``spool`` activities at once, of ``input`` bytes each."""
    size = context.get_input()
    results = yield context.task_all([context.call_activity("spool", size), context.call_activity("spool", size)])
    return sum(results)


@app.route(route="secure/echo", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def secure_echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("function-level ok")


@app.route(route="secure/admin", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def secure_admin(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin-level ok")


@app.route(route="secure/body-size", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def secure_body_size(req: func.HttpRequest) -> func.HttpResponse:
    """How many body bytes reached the function (the host's request-body limit decides which bodies do)."""
    return func.HttpResponse(str(len(req.get_body())))


@app.route(route="raises-timeout", methods=["GET"])
def raises_timeout(req: func.HttpRequest) -> func.HttpResponse:
    """Fails at once with the builtin TimeoutError (what a socket or HTTP client timeout raises)."""
    raise TimeoutError("the downstream call timed out")


@app.route(route="slow-sync", methods=["GET"])
def slow_sync(req: func.HttpRequest) -> func.HttpResponse:
    """A sync function that blocks until a test opens SLOW_GATE (the worker runs sync functions in a thread pool)."""
    SLOW_GATE.wait(30)
    return func.HttpResponse("released")


@app.blob_trigger(arg_name="blob", path="poisoned/{name}", connection="AzureWebJobsStorage")
def on_poisoned(blob: func.InputStream) -> None:
    """Always fails, counting its tries per blob."""
    with _lock:
        POISON_TRIES[blob.name or ""] = POISON_TRIES.get(blob.name or "", 0) + 1
    raise RuntimeError(f"cannot digest {blob.name}")


GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    with _lock:
        return GATES.setdefault(name, threading.Event())


@app.activity_trigger(input_name="name")
def gated(name: str) -> str:
    """Runs until a test opens ``gate(name)``: an activity that stays open for as long as a test needs. Opens
    ``gate(name + ":started")`` first, so a test knows the episode that scheduled it has been stored."""
    gate(name + ":started").set()
    gate(name).wait(120)
    return name


@app.orchestration_trigger(context_name="context")
def status_carried_one_episode(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a status and goes on as new; the second generation sets none while it runs ``gated`` twice (gates
    ``<gate>-a`` then ``<gate>-b``), then sets one. ``fail``: "first" raises in that generation's first episode,
    "later" after its first activity, both without setting a status."""
    state = context.get_input()
    if state["gen"] == 0:
        context.set_custom_status({"gen": 0})
        context.continue_as_new({**state, "gen": 1})
        return None
    if state.get("fail") == "first":
        raise RuntimeError("the second generation failed at once")
    yield context.call_activity("gated", state["gate"] + "-a")
    if state.get("fail") == "later":
        raise RuntimeError("the second generation failed later")
    yield context.call_activity("gated", state["gate"] + "-b")
    context.set_custom_status({"gen": 1})
    return "done"


@app.orchestration_trigger(context_name="context")
def outgrows_its_status(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Sets a small status, runs an activity, then sets one over the extension's 16 KB (which fails it)."""
    context.set_custom_status({"stage": "working"})
    yield context.call_activity("say_hello", "grow")
    context.set_custom_status("x" * 9000)
    return "done"


@app.orchestration_trigger(context_name="context")
def leaves_open(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Returns, raises or goes on as new while a task it scheduled may still be open; the input says which."""
    spec = context.get_input()
    later = context.current_utc_datetime + dt.timedelta(hours=1)
    if spec["kind"] in ("timer", "cancelled timer"):  # a timeout that loses its race
        timeout = context.create_timer(later)
        yield context.task_any([context.call_activity("say_hello", "fast"), timeout])
        if spec["kind"] == "cancelled timer":
            timeout.cancel()
    elif spec["kind"] in ("failed task_all", "continue"):
        try:
            yield context.task_all([context.call_activity("say_hello", "Boom"),
                                    context.call_activity("gated", spec["gate"])])
        except Exception:
            context.set_custom_status("past the failure")
            if spec["kind"] == "continue":
                context.continue_as_new({"kind": "cancelled timer"})
                return None
            raise
    context.set_custom_status("returned")
    return "done"


@app.orchestration_trigger(context_name="context")
def approval_days(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """``approval`` with a timeout of ``input`` days."""
    event = context.wait_for_external_event("Approve")
    timeout = context.create_timer(context.current_utc_datetime + dt.timedelta(days=context.get_input()))
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        context.set_custom_status("approved")
        return {"approved": event.result}
    return {"approved": None}


@app.orchestration_trigger(context_name="context")
def after_failed_fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """A fan-out whose first member fails while the other runs on, then an activity in the ``except``."""
    try:
        yield context.task_all([context.call_activity("say_hello", "Boom"),
                                context.call_activity("gated", context.get_input())])
    except Exception:
        context.set_custom_status("past the failure")
        return (yield context.call_activity("say_hello", "after"))
    return "no failure"


@app.orchestration_trigger(context_name="context")
def busy_then_approval(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """An activity (``gated``: open until the test says), then ``approval``'s wait: an event may come before it."""
    yield context.call_activity("gated", context.get_input())
    context.set_custom_status("waiting")
    event = context.wait_for_external_event("Approve")
    timeout = context.create_timer(context.current_utc_datetime + dt.timedelta(hours=1))
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        return {"approved": event.result}
    return {"approved": None}


@app.orchestration_trigger(context_name="context")
def gated_fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """``gated`` for ``<gate>-0`` .. ``<gate>-<n-1>`` at once."""
    state = context.get_input()
    return (yield context.task_all([context.call_activity("gated", f"{state['gate']}-{i}") for i in range(state["n"])]))
