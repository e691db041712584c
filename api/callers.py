"""Who a request comes from, and what that caller may do (``TRAPBATCH_CALLER_AUTH``).

``none`` (the default) is trapbatch as it was: there is no caller identity, so **every holder of a function key is an
operator** who lists, reads, cancels and starts every task, with no limits. Use it only where one team holds the keys.

``easyauth`` trusts App Service Authentication ("Easy Auth") with Microsoft Entra ID, and nothing else: the platform
verifies the caller's token before the request reaches the app, then sets ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON
``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}``), ``X-MS-CLIENT-PRINCIPAL-ID`` and
``-NAME``; external requests cannot set those headers (the platform removes client-supplied copies; docs
``app-service/configure-authentication-user-identities.md``). A request without them, or with headers that do not
decode, is 401 (never 500). devhost does the same locally from a callers file (devhost/README.md).

The caller's id is ``X-MS-CLIENT-PRINCIPAL-ID`` (for Entra ID the object id of the user or service principal). An
operator is a caller whose ``roles`` claims (the principal's ``role_typ``, or ``roles``) hold
``TRAPBATCH_OPERATOR_ROLE`` (an app role of the app registration, default ``trapbatch.operator``).

What a non-operator may do (``enforce_*`` below and ``api.starters``): see and act on its own tasks only (403
otherwise), and start tasks within ``TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK``, ``_MAX_ACTIVE_TASKS`` and
``_MIN_IMAGES_PER_SHARD`` (0: unlimited). Operators are exempt.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from core.errors import CallerForbidden, CallerLimitExceeded, CallerUnauthenticated
from core.requests import TaskRequest
from core.settings import Settings

PRINCIPAL = "x-ms-client-principal"
PRINCIPAL_ID = "x-ms-client-principal-id"
PRINCIPAL_NAME = "x-ms-client-principal-name"
PRINCIPAL_IDP = "x-ms-client-principal-idp"
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
MAX_PRINCIPAL_BYTES = 32 * 1024  # Easy Auth's header is a few KB; anything far larger is not one
MAX_ID_LENGTH = 200  # the request's 'caller' field holds it
_ID_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces: GUIDs, sub values
SIGN_IN_HINT = ("this trapbatch identifies callers with Microsoft Entra ID (App Service Authentication): send "
                "'Authorization: Bearer <token>' for the app registration named in the deployment (e.g. az account "
                "get-access-token --resource api://<client id>); the function key alone is not enough")


@dataclass(frozen=True, slots=True)
class Caller:
    """A request's caller. ``id`` is "" when ``TRAPBATCH_CALLER_AUTH=none`` (everyone is an anonymous operator)."""

    id: str
    name: str = ""
    roles: tuple[str, ...] = ()
    operator: bool = False

    @property
    def verified(self) -> bool:
        return bool(self.id)


ANONYMOUS_OPERATOR = Caller(id="", name="", roles=(), operator=True)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Header lookup, case-insensitive (frameworks present them lower- or title-case)."""
    getter = getattr(headers, "get", None)
    value = getter(name) if getter is not None else None
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _unauthenticated(why: str) -> CallerUnauthenticated:
    return CallerUnauthenticated(f"no verified caller identity: {why}", SIGN_IN_HINT)


def decode_principal(raw: str) -> dict[str, Any]:
    """The JSON object in an ``X-MS-CLIENT-PRINCIPAL`` header; ``CallerUnauthenticated`` for anything else."""
    if len(raw) > MAX_PRINCIPAL_BYTES:
        raise _unauthenticated("the X-MS-CLIENT-PRINCIPAL header is too large")
    text = raw.strip()
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text)
                                else None, validate=True)
        principal = json.loads(data.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _unauthenticated("the X-MS-CLIENT-PRINCIPAL header is not base64-encoded JSON") from None
    if not isinstance(principal, dict) or not isinstance(principal.get("claims", []), list):
        raise _unauthenticated("the X-MS-CLIENT-PRINCIPAL header is not a client principal")
    return principal


def _claims(principal: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for claim in principal.get("claims") or []:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            out.append((claim["typ"], claim["val"]))
    return out


def caller_from_headers(headers: Mapping[str, str], settings: Settings) -> Caller:
    """The caller of a request under ``settings.caller_auth``; ``CallerUnauthenticated`` (401) when there is none."""
    if settings.caller_auth == "none":
        return ANONYMOUS_OPERATOR
    raw = _header(headers, PRINCIPAL)
    if not raw:
        raise _unauthenticated("the request carries no X-MS-CLIENT-PRINCIPAL header (App Service Authentication "
                               "sets it for signed-in callers)")
    principal = decode_principal(raw)
    claims = _claims(principal)
    caller_id = (_header(headers, PRINCIPAL_ID) or "").strip() or next(
        (v for t, v in claims if t in OBJECT_ID_CLAIMS), "")
    if not caller_id:
        raise _unauthenticated("the client principal names no caller id (X-MS-CLIENT-PRINCIPAL-ID)")
    if not _ID_RE.match(caller_id):
        raise _unauthenticated("the caller id is not a printable identifier of at most 200 characters")
    role_typ = principal.get("role_typ") if isinstance(principal.get("role_typ"), str) else ""
    role_types = {*ROLE_CLAIMS, role_typ} - {""}
    roles = tuple(dict.fromkeys(v for t, v in claims if t in role_types))
    name = (_header(headers, PRINCIPAL_NAME) or "").strip()
    if not name:
        name_typ = principal.get("name_typ") if isinstance(principal.get("name_typ"), str) else "name"
        name = next((v for t, v in claims if t == name_typ), "")
    return Caller(id=caller_id, name=name[:200], roles=roles, operator=settings.operator_role in roles)


# ------------------------------------------------------------------ what a caller may do


def owner_of(task_input: Mapping[str, Any]) -> str:
    """The verified caller who started a task ("" for tasks started without ``easyauth``, or by a blob drop)."""
    owner = task_input.get("owner")
    return owner if isinstance(owner, str) else ""


def may_see(caller: Caller, owner: str) -> bool:
    return caller.operator or (bool(owner) and owner == caller.id)


def enforce_owner(caller: Caller, task_id: str, owner: str) -> None:
    if not may_see(caller, owner):
        raise CallerForbidden(f"task {task_id} belongs to another caller",
                              "you can see and act on the tasks you started (GET /api/tasks lists them); an "
                              "operator (app role TRAPBATCH_OPERATOR_ROLE) can act on every task")


def enforce_request_limits(caller: Caller, request: TaskRequest, settings: Settings) -> None:
    """The per-caller limits knowable before enumeration; operators (and ``none``) are exempt.

    ``TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK``: how many images a prefix holds is known only once enumeration has listed
    them, which is the orchestration's work; so a capped caller must bound the task in the request itself, with
    ``first_n`` or ``sample_n`` at most the cap. A request without either is refused with that hint."""
    if caller.operator:
        return
    cap = settings.caller_max_images_per_task
    if cap:
        asked = request.first_n if request.first_n is not None else request.sample_n
        field = "first_n" if request.first_n is not None else "sample_n"
        if asked is None:
            raise CallerLimitExceeded(
                f"this trapbatch runs at most {cap} images per task for you, and the request does not bound the "
                "number of images", f'add "first_n": {cap} (the first {cap} images) or "sample_n": {cap} (a random '
                "sample), or ask an operator to run the whole container")
        if asked > cap:
            raise CallerLimitExceeded(f"'{field}' is {asked}, above your limit of {cap} images per task",
                                      f'use "{field}": {cap} or less, or ask an operator')
    floor = settings.caller_min_images_per_shard
    if floor and request.images_per_shard < floor:
        raise CallerLimitExceeded(
            f"'images_per_shard' is {request.images_per_shard}, below the minimum of {floor} for your tasks",
            f'use "images_per_shard": {floor} or more, or leave it out (each shard pays a GPU node\'s start-up)')
