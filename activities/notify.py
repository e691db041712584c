"""Word when a task ends: one signed JSON POST to its request's ``notify_url`` (core/notify.py says what and how),
and, for a request dropped as ``incoming/<name>.json``, an answer file beside it (``<name>.done.json`` when the task
ended, ``<name>.estimate.json`` while it awaits confirmation), and a done file beside each request dropped while it ran
that found it started by another request (``answer_joined_drops``, adapters.joined_drops).

The signing key is read from the app's own vault (``TRAPBATCH_APP_KEY_VAULT_URL``; ``Settings.app_secret_store_env``),
which the GPU nodes cannot read, not from the sources' vault they share with the app.

Nothing is sent to a host outside ``TRAPBATCH_NOTIFY_HOSTS``, or without ``TRAPBATCH_NOTIFY_SECRET``: the answer then
says why, and the orchestrator does not retry (retrying cannot change a setting). A receiver that cannot be reached
or answers other than 2xx raises, so the orchestrator retries with back-off (orchestrations/task.py NOTIFY_RETRY).
Redirects are not followed: a redirect could lead to a host the allow-list does not name.

A request's ``notify_url_secret`` names the secret holding the address (one that carries a secret: a Logic Apps
trigger's ``sig``, a chat webhook's path). It is read here, from the store the signing key is read from, when the
notification is sent, and checked as a ``notify_url`` is at the edge (``core.notify.address_problem``) and against the
allow-list. Nothing that leaves this activity names the address or any part of it, the host included (the reason in
the status, the failure the orchestrator retries, the log): they say "the address in secret '<name>'". A secret the
store lacks, or could not read, fails as the signing key does (tried again: it may have just been set); an address
that is no https address, or whose host the allow-list lacks, is not sent to, with the reason.
"""
from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Callable

import azure.durable_functions as df

from adapters import clients
from adapters.identity import app_credential
from adapters.transport import shared_session_transport
from core import contracts as c
from core import notify
from core.failures import failures_without_secrets
from activities.superseded import refuse_if_superseded
from adapters import joined_drops
from adapters.blobs import BlobStore
from gpu_batch import layout
from gpu_batch.storage_refs import (KEY_VAULT_ENV, LOCAL_SECRETS_ENV, SecretReader, SecretStoreUnavailable,
                                    SourceAccessError, secret_reader_from_env)

logger = logging.getLogger(__name__)
bp = df.Blueprint()
TIMEOUT_S = 15


class ReceiverFailed(RuntimeError):
    """The receiver did not take the notification; the orchestrator retries."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _signing_key(read: Callable[[str], str], name: str, secret_env: dict[str, str]) -> str:
    """The signing key, or a failure that says what to do about THIS secret: the secret reader's own words are for a
    source account's SAS token ("create it (a SAS token ...)", "grant ... the GPU nodes' id-nodes-*"), wrong here:
    the key is the app's alone, in the app's vault, which the nodes must never read. A vault that did not answer
    (``SecretStoreUnavailable``) says so: the key may well be in place, and the orchestrator tries again."""
    try:
        return read(name)
    except SecretStoreUnavailable as exc:  # nothing to put anywhere: the vault (or its token) did not come
        raise SigningKeyUnavailable(
            f"the notification signing key {name!r} (TRAPBATCH_NOTIFY_SECRET) could not be read: {str(exc)[:300]}; "
            "a passing failure, tried again with the notification (nothing to set or grant)") from None
    except SourceAccessError as exc:
        where = secret_env.get(KEY_VAULT_ENV) or secret_env.get(LOCAL_SECRETS_ENV) or "the secret store"
        raise SigningKeyUnavailable(
            f"the notification signing key {name!r} (TRAPBATCH_NOTIFY_SECRET) could not be read from {where}: "
            f"{str(exc).split(';')[0]}; put it in the app's own vault (docs/deploy.md, 'Signed notifications': "
            "az keyvault secret set --vault-name $AZURE_APP_KEY_VAULT_NAME), which only the app's identity "
            "(id-api-*, role Key Vault Secrets User, granted by infra/) reads") from None


class SigningKeyUnavailable(RuntimeError):
    """The signing key could not be read; the orchestrator retries (it may have just been set)."""


class AddressUnavailable(RuntimeError):
    """The secret holding the notification's address could not be read; the orchestrator retries (it may have just
    been set, or the vault did not answer)."""


def _address_from_secret(read: SecretReader, name: str, allowed_hosts: tuple[str, ...],
                         secret_env: dict[str, str]) -> tuple[str, str]:
    """``(address, "")`` read from secret ``name``, or ``("", why it is not sent to)``; raises
    ``AddressUnavailable`` when the secret could not be read. No message names the value or any part of it: the
    secret reader's words name the vault and the secret's name only, and their advice is cut off (it is for a
    source account's SAS token)."""
    try:
        url = read(name).strip()
    except SecretStoreUnavailable as exc:
        raise AddressUnavailable(
            f"the notification address in secret {name!r} (notify_url_secret) could not be read: {str(exc)[:300]}; "
            "a passing failure, tried again with the notification (nothing to set or grant)") from None
    except SourceAccessError as exc:
        where = secret_env.get(KEY_VAULT_ENV) or secret_env.get(LOCAL_SECRETS_ENV) or "the secret store"
        raise AddressUnavailable(
            f"the notification address in secret {name!r} (notify_url_secret) could not be read from {where}: "
            f"{str(exc).split(';')[0]}; put the receiver's address there (docs/deploy.md, 'Signed notifications': "
            f"az keyvault secret set --vault-name $AZURE_APP_KEY_VAULT_NAME -n {name} --value '<address>')") from None
    why = notify.address_problem(url)
    if why is not None:
        return "", f"the address in secret {name!r} (notify_url_secret) {why}"
    if not notify.host_allowed(url, allowed_hosts):
        return "", (f"the address in secret {name!r} (notify_url_secret) is on a host not in TRAPBATCH_NOTIFY_HOSTS "
                    "(the operator adds it, as the secret shows it)")
    return url, ""


def send(payload: c.NotifyInput, allowed_hosts: tuple[str, ...], secret_name: str,
         secret_env: dict[str, str], url_secret_prefix: str = notify.URL_SECRET_PREFIX) -> c.NotifyOutput:
    address_secret = str(payload.get("url_secret") or "")
    # the app's identity (AppCredential): a token endpoint that did not answer is a store that did not answer. The
    # vault's client is made per send (the settings are read per send), over the process's shared session: one
    # connection to the vault reused, not a TLS connection per send (adapters.transport.shared_session_options)
    read = (secret_reader_from_env(secret_env, credential=app_credential(), transport=shared_session_transport())
            if secret_name or address_secret else None)
    if address_secret:  # named as the secret, never as the address or its host
        url, shown = "", f"the address in secret {address_secret!r}"
        reason = notify.not_sendable_from_secret(address_secret, allowed_hosts, secret_name, read is not None,
                                                 url_secret_prefix)
        if reason is None and read is not None:
            url, reason = _address_from_secret(read, address_secret, allowed_hosts, secret_env)
    else:
        url, shown = payload["url"], notify.shown_host(payload["url"])
        reason = notify.not_sendable(url, allowed_hosts, bool(secret_name) and read is not None)
    if reason or read is None:
        reason = reason or "no secret store"
        logger.warning("task %s: notification not sent: %s", payload["task_id"], reason)
        return {"sent": False, "status_code": 0, "reason": reason}
    run = str(payload.get("run") or "")
    raw = notify.body(payload["task_id"], payload["status"], run,
                      sent_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    stage = str(payload["status"].get("stage", ""))
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "trapbatch",
        notify.SIGNATURE_HEADER: notify.signature(_signing_key(read, secret_name, secret_env), raw),
        notify.DELIVERY_HEADER: notify.delivery(payload["task_id"], run, stage)})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as resp:
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        code = int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        raise ReceiverFailed(f"notification to {shown} failed: {type(exc).__name__}") from None
    except (ValueError, http.client.InvalidURL) as exc:  # http.client's InvalidURL (an HTTPException, not an
        # OSError urllib wraps) and urllib's "unknown url type" (a ValueError) quote the address: not retried (the
        # same address fails the same way), and said by their type only
        reason = f"{shown} was refused by urllib ({type(exc).__name__}); the operator corrects it"
        logger.warning("task %s: notification not sent: %s", payload["task_id"], reason)
        return {"sent": False, "status_code": 0, "reason": reason}
    if not 200 <= code < 300:
        raise ReceiverFailed(f"notification to {shown} answered {code}")
    logger.info("task %s: notified %s (%s)", payload["task_id"], shown, stage)
    return {"sent": True, "status_code": code, "reason": ""}


@bp.activity_trigger(input_name="payload", activity=c.NOTIFY)
@failures_without_secrets
def notify_task_end(payload: c.NotifyInput) -> c.NotifyOutput:
    s = clients.settings()
    # a terminated run's late word, once a later run replaced it: it would tell of an old end as if current
    refuse_if_superseded(clients.store(s), s, payload, "the notification of its end")
    return send(payload, s.notify_hosts, s.notify_secret, s.app_secret_store_env(), s.notify_url_secret_prefix)


def write_drop_answer(payload: c.DropAnswerInput, store: BlobStore) -> c.DropAnswerOutput:
    """The answer beside the dropped request (idempotent: a retried or replayed call writes the same content)."""
    name = layout.drop_answer_blob(payload["drop"], payload["kind"])
    store.write_json(layout.INCOMING_CONTAINER, name, {"id": payload["task_id"], **payload["status"]})
    logger.info("task %s: wrote %s/%s", payload["task_id"], layout.INCOMING_CONTAINER, name)
    return {"blob": name}


@bp.activity_trigger(input_name="payload", activity=c.DROP_ANSWER)
@failures_without_secrets
def drop_answer(payload: c.DropAnswerInput) -> c.DropAnswerOutput:
    s = clients.settings()
    # a terminated run's late file, once a later run replaced it: it would answer for the replacing run
    refuse_if_superseded(clients.store(s), s, payload, f"the {payload['kind']} file beside its dropped request")
    return write_drop_answer(payload, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.ANSWER_JOINED_DROPS)
@failures_without_secrets
def answer_joined_drops(payload: c.JoinedDropsInput) -> c.JoinedDropsOutput:
    """The run's ended marker, then the done file of every request dropped while it ran that joined it
    (adapters.joined_drops ``end_run``: that order leaves no joined drop unanswered). Idempotent: a retried call
    writes the same files."""
    s = clients.settings()
    store = clients.store(s)
    # a terminated run's late word, once a later run replaced it: a request written again under the same name, which
    # joined both runs, would get the old run's end over the new one's
    refuse_if_superseded(store, s, payload, "the done files beside the requests that joined it")
    answered = joined_drops.end_run(store, s.container, payload["task_id"], payload["run"], payload["status"],
                                    payload.get("ended_runs", []))
    return {"answered": len(answered)}
