"""Caller identity from App Service Authentication headers (api/callers.py), and the per-caller limits.

Whatever the headers hold, the answer is the caller or a 401 with a hint: never a 500."""
from __future__ import annotations

import asyncio
import base64
import json
from enum import Enum
from types import SimpleNamespace
from typing import Any

import pytest

from api import callers, starters
from api.callers import Caller, caller_from_headers, enforce_owner, enforce_request_limits
from api.edge import error_response
from core.errors import CallerForbidden, CallerLimitExceeded, CallerUnauthenticated, TooManyActiveTasks
from core.requests import parse_task_request
from core.settings import Settings
from core.errors import ConfigError

OID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def _settings(**env: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})


EASY = _settings(TRAPBATCH_CALLER_AUTH="easyauth")


def _principal(claims: list[dict[str, str]], role_typ: str = "roles", urlsafe: bool = False) -> str:
    raw = json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_typ}).encode()
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()


def _headers(roles: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID},
              {"typ": "name", "val": "Ana Ecologist"}] + [{"typ": "roles", "val": r} for r in roles]
    return {"X-MS-CLIENT-PRINCIPAL": _principal(claims), "X-MS-CLIENT-PRINCIPAL-ID": OID,
            "X-MS-CLIENT-PRINCIPAL-NAME": "ana@example.org", **extra}


def test_none_mode_makes_every_key_holder_an_anonymous_operator_whatever_the_headers() -> None:
    s = _settings()
    assert s.caller_auth == "none"
    for headers in ({}, _headers(), {"X-MS-CLIENT-PRINCIPAL": "garbage"}):
        caller = caller_from_headers(headers, s)
        assert caller.operator and not caller.verified


def test_a_valid_principal_gives_the_id_name_and_roles() -> None:
    caller = caller_from_headers(_headers(roles=("reader",)), EASY)
    assert caller == Caller(id=OID, name="ana@example.org", roles=("reader",), operator=False)


def test_the_operator_role_comes_from_the_roles_claim_and_is_configurable() -> None:
    assert caller_from_headers(_headers(roles=("trapbatch.operator",)), EASY).operator
    custom = _settings(TRAPBATCH_CALLER_AUTH="easyauth", TRAPBATCH_OPERATOR_ROLE="Batch.Admin")
    assert not caller_from_headers(_headers(roles=("trapbatch.operator",)), custom).operator
    assert caller_from_headers(_headers(roles=("Batch.Admin",)), custom).operator
    # the principal's role_typ names the role claim (a long URI for some providers)
    uri = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    headers = {"x-ms-client-principal": _principal([{"typ": uri, "val": "trapbatch.operator"}], role_typ=uri),
               "x-ms-client-principal-id": OID}  # lower-case names, as some frameworks present them
    assert caller_from_headers(headers, EASY).operator


def test_a_role_named_in_another_claim_does_not_make_an_operator() -> None:
    claims = [{"typ": "name", "val": "trapbatch.operator"}, {"typ": "groups", "val": "trapbatch.operator"}]
    headers = {"X-MS-CLIENT-PRINCIPAL": _principal(claims), "X-MS-CLIENT-PRINCIPAL-ID": OID}
    assert not caller_from_headers(headers, EASY).operator


def test_the_id_falls_back_to_the_object_id_claim_and_urlsafe_base64_is_read() -> None:
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID},
              {"typ": "name", "val": "svc"}]
    caller = caller_from_headers({"X-MS-CLIENT-PRINCIPAL": _principal(claims, urlsafe=True)}, EASY)
    assert caller.id == OID and caller.name == "svc"


@pytest.mark.parametrize("headers", [
    {},
    {"X-MS-CLIENT-PRINCIPAL-ID": OID},  # the id alone is not what Easy Auth sends
    {"X-MS-CLIENT-PRINCIPAL": ""},
    {"X-MS-CLIENT-PRINCIPAL": "not base64 at all!!", "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"\xff\xfe\x00garbage").decode(), "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"{not json").decode(), "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[1, 2]").decode(), "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": "x"}').decode(), "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[" * 100000).decode(), "X-MS-CLIENT-PRINCIPAL-ID": OID},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": []}').decode()},  # no id anywhere
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": []}').decode(), "X-MS-CLIENT-PRINCIPAL-ID": "a b"},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": []}').decode(), "X-MS-CLIENT-PRINCIPAL-ID": "x" * 201},
])
def test_missing_or_garbage_headers_are_401_with_a_hint_never_500(headers: dict[str, str]) -> None:
    with pytest.raises(CallerUnauthenticated) as caught:
        caller_from_headers(headers, EASY)
    response = error_response(caught.value)
    assert response.status_code == 401
    body = json.loads(response.get_body())
    assert "Entra ID" in body["hint"] and body["error"].startswith("no verified caller identity")


def test_an_unknown_caller_auth_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TRAPBATCH_CALLER_AUTH"):
        _settings(TRAPBATCH_CALLER_AUTH="keys")


def test_the_caller_auth_mode_is_read_as_every_other_choice_whatever_its_case_and_spaces() -> None:
    """As ``_choice`` reads the other choices: ``EasyAuth`` (as the portal spells the feature) stopped the app."""
    from core.settings import caller_auth_mode

    assert _settings(TRAPBATCH_CALLER_AUTH=" EasyAuth ").caller_auth == "easyauth"
    assert caller_auth_mode({"TRAPBATCH_CALLER_AUTH": "EASYAUTH"}) == "easyauth"
    assert caller_auth_mode({"TRAPBATCH_CALLER_AUTH": "  "}) == caller_auth_mode({}) == "none"


def test_owners_see_their_tasks_others_get_403_operators_see_all() -> None:
    ana, bo = Caller(id="ana"), Caller(id="bo")
    enforce_owner(ana, "task-x", "ana")
    with pytest.raises(CallerForbidden) as caught:
        enforce_owner(bo, "task-x", "ana")
    assert error_response(caught.value).status_code == 403 and "another caller" in caught.value.message
    with pytest.raises(CallerForbidden):  # a task without an owner (none mode, blob drop) is the operators'
        enforce_owner(ana, "task-x", "")
    enforce_owner(Caller(id="op", operator=True), "task-x", "ana")


def _req(**body: Any) -> Any:
    return parse_task_request({"container": "cams", **body}, "MDV5A", 10000)


LIMITS = _settings(TRAPBATCH_CALLER_AUTH="easyauth", TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK="1000",
                   TRAPBATCH_CALLER_MIN_IMAGES_PER_SHARD="500", TRAPBATCH_CALLER_MAX_ACTIVE_TASKS="2")


def test_limits_default_to_unlimited() -> None:
    s = _settings(TRAPBATCH_CALLER_AUTH="easyauth")
    assert (s.caller_max_images_per_task, s.caller_max_active_tasks, s.caller_min_images_per_shard) == (0, 0, 0)
    enforce_request_limits(Caller(id="ana"), _req(images_per_shard=1), s)
    with pytest.raises(ConfigError):
        _settings(TRAPBATCH_CALLER_MAX_ACTIVE_TASKS="-1")


def test_image_cap_needs_a_bound_in_the_request_and_refuses_more() -> None:
    ana = Caller(id="ana")
    enforce_request_limits(ana, _req(first_n=1000), LIMITS)
    enforce_request_limits(ana, _req(sample_n=10, seed=1), LIMITS)
    for body, words in (({"first_n": 1001}, "'first_n' is 1001"), ({"sample_n": 5000}, "'sample_n' is 5000"),
                        ({}, "does not bound")):
        with pytest.raises(CallerLimitExceeded) as caught:
            enforce_request_limits(ana, _req(**body), LIMITS)
        assert words in caught.value.message and error_response(caught.value).status_code == 400
        assert "1000" in caught.value.hint


def test_min_images_per_shard() -> None:
    with pytest.raises(CallerLimitExceeded, match="images_per_shard' is 499"):
        enforce_request_limits(Caller(id="ana"), _req(first_n=10, images_per_shard=499), LIMITS)
    enforce_request_limits(Caller(id="ana"), _req(first_n=10, images_per_shard=500), LIMITS)


def test_operators_are_exempt_from_limits() -> None:
    enforce_request_limits(Caller(id="op", operator=True), _req(images_per_shard=1), LIMITS)


def test_the_owner_is_part_of_the_task_id_and_the_body_caller_is_not() -> None:
    r = _req(caller="someone")
    assert r.task_id_for("") == r.task_id == _req().task_id  # none mode: ids as before
    assert r.task_id_for("ana") != r.task_id_for("bo") and r.task_id_for("ana") != r.task_id
    assert r.task_id_for("ana") == _req(caller="other label").task_id_for("ana")


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"


def test_too_many_active_tasks_is_429_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    def status(iid: str, runtime: str, owner: str) -> Any:
        return SimpleNamespace(instance_id=iid, runtime_status=_Runtime(runtime),
                               input_=json.dumps({"task_id": iid, "owner": owner}))

    listing = [status("task-" + "a" * 20, "Running", "ana"), status("task-" + "b" * 20, "Running", "ana"),
               status("task-" + "c" * 20, "Completed", "ana"), status("task-" + "d" * 20, "Running", "bo"),
               status("task-" + "a" * 20 + "-shards-0000", "Running", "")]

    async def all_instances(client: Any, prefix: str, keep: Any = None, show_input: bool = False,
                            timeout_s: float | None = None) -> list[Any]:
        assert not show_input  # the list without inputs (shard groups' are large); tasks' inputs are read by id
        return [SimpleNamespace(instance_id=st.instance_id, runtime_status=st.runtime_status, input_=None)
                for st in listing if keep is None or keep(st.instance_id)]

    class Client:
        reads: list[str] = []

        async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
            self.reads.append(instance_id)
            return next(st for st in listing if st.instance_id == instance_id)

    client: Any = Client()
    monkeypatch.setattr(starters, "_all_instances", all_instances)
    with pytest.raises(TooManyActiveTasks) as caught:
        asyncio.run(starters._enforce_active_limit(client, Caller(id="ana"), LIMITS))
    response = error_response(caught.value)
    assert response.status_code == 429 and response.headers["Retry-After"] == "300"
    assert "2" in caught.value.message and "GET /api/tasks" in caught.value.hint
    assert sorted(client.reads) == ["task-" + "a" * 20, "task-" + "b" * 20, "task-" + "d" * 20]  # the running only
    asyncio.run(starters._enforce_active_limit(client, Caller(id="bo"), LIMITS))
    asyncio.run(starters._enforce_active_limit(client, Caller(id="op", operator=True), LIMITS))
    assert callers.owner_of({"owner": 3}) == ""


def test_reading_the_tasks_inputs_for_the_list_keeps_to_the_listings_deadline() -> None:
    """A caller's list reads every task's input by id; past what is left of the 200 s (Azure cuts an HTTP function
    at 230 s with a bare 502) it answers 503 with what to do, as a slow instance list does."""
    from core.errors import InstanceListTooSlow

    class Slow:
        async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
            await asyncio.sleep(5)

    with pytest.raises(InstanceListTooSlow) as caught:
        slow: Any = Slow()
        asyncio.run(starters._task_inputs(slow, ["task-" + "a" * 20, "task-" + "b" * 20], 0.05))
    assert error_response(caught.value).status_code == 503 and "purge" in caught.value.hint
