"""Word when a task ends: one signed JSON POST to its request's ``notify_url`` (core/notify.py says what and how),
and, for a request dropped as ``incoming/<name>.json``, an answer file beside it (``<name>.done.json`` when the task
ended, ``<name>.estimate.json`` while it awaits confirmation).

The signing key is read from the app's own vault (``TRAPBATCH_APP_KEY_VAULT_URL``; ``Settings.app_secret_store_env``),
which the GPU nodes cannot read, not from the sources' vault they share with the app.

Nothing is sent to a host outside ``TRAPBATCH_NOTIFY_HOSTS``, or without ``TRAPBATCH_NOTIFY_SECRET``: the answer then
says why, and the orchestrator does not retry (retrying cannot change a setting). A receiver that cannot be reached
or answers other than 2xx raises, so the orchestrator retries with back-off (orchestrations/task.py NOTIFY_RETRY).
Redirects are not followed: a redirect could lead to a host the allow-list does not name.
"""
from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Callable

import azure.durable_functions as df

from adapters import clients
from adapters.identity import app_credential
from adapters.transport import shared_session_transport
from core import contracts as c
from core import notify
from core.failures import failures_without_secrets
from adapters.blobs import BlobStore
from gpu_batch import layout
from gpu_batch.storage_refs import (KEY_VAULT_ENV, LOCAL_SECRETS_ENV, SecretStoreUnavailable, SourceAccessError,
                                    secret_reader_from_env)

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


def send(payload: c.NotifyInput, allowed_hosts: tuple[str, ...], secret_name: str,
         secret_env: dict[str, str]) -> c.NotifyOutput:
    url = payload["url"]
    # the app's identity (AppCredential): a token endpoint that did not answer is a store that did not answer. The
    # vault's client is made per send (the settings are read per send), over the process's shared session: one
    # connection to the vault reused, not a TLS connection per send (adapters.transport.shared_session_options)
    read = (secret_reader_from_env(secret_env, credential=app_credential(), transport=shared_session_transport())
            if secret_name else None)
    reason = notify.not_sendable(url, allowed_hosts, read is not None)
    if reason is not None or read is None:
        reason = reason or "no secret store"
        logger.warning("task %s: notification not sent: %s", payload["task_id"], reason)
        return {"sent": False, "status_code": 0, "reason": reason}
    raw = notify.body(payload["task_id"], payload["status"])
    stage = str(payload["status"].get("stage", ""))
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "trapbatch",
        notify.SIGNATURE_HEADER: notify.signature(_signing_key(read, secret_name, secret_env), raw),
        notify.DELIVERY_HEADER: f"{payload['task_id']}/{stage}"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as resp:
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        code = int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        raise ReceiverFailed(f"notification to {notify.shown_host(url)} failed: {type(exc).__name__}") from None
    if not 200 <= code < 300:
        raise ReceiverFailed(f"notification to {notify.shown_host(url)} answered {code}")
    logger.info("task %s: notified %s (%s)", payload["task_id"], notify.shown_host(url), stage)
    return {"sent": True, "status_code": code, "reason": ""}


@bp.activity_trigger(input_name="payload", activity=c.NOTIFY)
@failures_without_secrets
def notify_task_end(payload: c.NotifyInput) -> c.NotifyOutput:
    s = clients.settings()
    return send(payload, s.notify_hosts, s.notify_secret, s.app_secret_store_env())


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
    return write_drop_answer(payload, clients.store(s))
