"""Word when a task ends: the signed JSON a request's ``notify_url`` receives once per final stage.

Pure: the body, its signature and the host check. The activity (activities/notify.py) sends it; the task orchestrator
calls that activity once when the task ends (completed, completed_with_errors, cancelled, failed, expired, estimated), retrying
a receiver that is down with back-off on durable timers.

Signature: ``X-Trapbatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the secret the app setting
``TRAPBATCH_NOTIFY_SECRET`` names (a secret of the app's own Key Vault, ``TRAPBATCH_APP_KEY_VAULT_URL``, which the GPU
nodes cannot read; without it of ``TRAPBATCH_KEY_VAULT_URL``'s; or locally an entry of
``TRAPBATCH_LOCAL_SECRETS_FILE``; read as gpu_batch/storage_refs.py reads source-account secrets). The receiver
recomputes it over the bytes it got and compares in constant time (``verify``). ``X-Trapbatch-Delivery``
(``<task id>/<run>/<stage>``, ``delivery``) is the same on every retry, so a receiver can drop a repeat (a retry after
a lost answer, or an activity Durable ran twice); the body's ``run`` says which run of the task ended.

Where: only hosts in ``TRAPBATCH_NOTIFY_HOSTS`` (comma-separated host names, ``host:port`` for a port) are sent to;
the app would otherwise POST to any address a request names, from inside its network.

An address that carries a secret (a Logic Apps trigger's ``sig``, a function key's ``code``, a chat webhook's path) is
not given in the request, whose fields Durable keeps in plain tables: the request names the Key Vault secret holding
it (``notify_url_secret``), read by the sending activity only (``address_problem``, ``not_sendable_from_secret``), and
no status, log or history names the address, nor anything of it, the host included: a requester may name any secret
of the store, and the reason of a refusal must not tell them what another secret holds.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from core.status_size import shorten

SIGNATURE_HEADER = "X-Trapbatch-Signature"
DELIVERY_HEADER = "X-Trapbatch-Delivery"
# What of the final status a notification carries: the counts, and every failure a pipeline acting on it must see
# (why images failed, a failed repeat search or exports in ``results``, files not run, a pool job left open holding
# nodes, shards given up, pages whose expiry could not be scheduled). Left out on purpose: the ``pool_job`` field, the
# owner, the generation and what became of earlier deliveries (internal), and the preview pages' address. The job's
# name is said inside ``pool_job_error`` (and a failed task's ``error``), whose command that ends the job needs it: no
# secret (the task id and the run, which a task event's id carries too); docs/cli.md "Word when a task ends" says so.
# The run itself is carried beside these (``public_status``'s ``run``), not from the status, which has none.
STATUS_KEYS = ("stage", "started", "finished", "error", "images", "failed", "missing", "failed_fraction",
               "failure_reasons", "failures_hint", "with_detections", "detections", "empty", "shards", "resubmissions",
               "shards_given_up", "not_images", "results", "repeated_detections", "pool_job_error", "estimate", "cost",
               "damaged")
# The previews' fields it carries (core.contracts.PreviewsOutput): never where the pages are (a folder, page blob or
# URL), whose random part is unguessable on purpose: anyone with it sees the images. Named, not filtered out, so a
# field added to the previews later stays out until someone decides it is not an address.
PREVIEW_KEYS = ("container", "counts", "expires", "expiry_error", "not_published", "pictures_missing", "readme_error")


def public_status(task_id: str, status: Mapping[str, Any], run: str = "") -> dict[str, Any]:
    """The task id, the run's id (``run``, where the run has one) and the final status's public fields: what a
    notification and an Event Grid event carry. Why the run: a task ends once per run (a re-run, a run resuming a
    terminated one), and a receiver told of two ends of one task must tell which is the latest."""
    out = {"task_id": task_id, **({"run": run} if run else {}), **{k: status[k] for k in STATUS_KEYS if k in status}}
    previews = status.get("previews")
    if isinstance(previews, Mapping) and any(k in previews for k in PREVIEW_KEYS):
        out["previews"] = {k: previews[k] for k in PREVIEW_KEYS if k in previews}
    return out


def body(task_id: str, status: Mapping[str, Any], run: str = "", sent_at: str = "") -> bytes:
    """The notification's bytes: ``public_status`` as canonical JSON, with ``sent_at`` (this send's time, ISO 8601
    UTC, where given). Why the time, signed with the rest: the signature proves who wrote a body, not when, so a body
    recorded on its way could be sent to the receiver again, days later, and verify; with the time inside, a receiver
    can refuse one older than it expects a retry to be (the retries span about 16 minutes), besides dropping repeats
    by ``X-Trapbatch-Delivery``. A header beside the body would change what is signed and break receivers written
    for the body's signature."""
    doc = public_status(task_id, status, run)
    if sent_at:
        doc["sent_at"] = sent_at
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def delivery(task_id: str, run: str, stage: str) -> str:
    """``X-Trapbatch-Delivery``: ``<task id>/<run>/<stage>`` (``<task id>/<stage>`` for a run without an id), the
    same on every retry of one run's word, so a receiver can drop a repeat, and the Event Grid event's ``id``
    (core.task_events). Why the run: without it a re-run's end (a stage such as ``completed`` again) had the first
    run's delivery id, and a receiver that dropped repeats dropped it."""
    return "/".join(p for p in (task_id, run, stage) if p)


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify(secret: str, raw: bytes, header: str) -> bool:
    """What a receiver does: recompute the signature over the received bytes, compare in constant time."""
    return hmac.compare_digest(signature(secret, raw), header or "")


_DEFAULT_PORTS = {"https": 443, "http": 80}
# The most of a host a message names (``shown_host``). A DNS name has at most 253 characters (RFC 1035 2.3.4), but a
# request's notify_url may be 2,000 (core.requests), nearly all of it host; the reasons that name it reach the task's
# status (``NotifyOutput.reason``, the failure after every retry) and the log. 120 characters tell any real host
# apart, and keep such a reason under ``core.status_size.NOTE_CHARS``, so the status never has to cut it.
HOST_SHOWN_CHARS = 120


def host_of(url: str) -> str:
    """``host`` or ``host:port`` (lower-case) of a URL, as allow-list entries are written: the scheme's own port is
    left out (``https://h:443/`` is ``h``, which an entry ``h`` names; it said ``h:443`` and was refused)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port
    return f"{host}:{port}" if port and port != _DEFAULT_PORTS.get(parts.scheme.lower()) else host


def shown_host(url: str) -> str:
    """``host_of(url)`` as a message names it: at most ``HOST_SHOWN_CHARS`` characters, a longer one cut with "…"."""
    return shorten(host_of(url), HOST_SHOWN_CHARS)


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """``url``'s host is on the list, written with or without its scheme's own port (``h`` and ``h:443`` both name
    ``https://h/``; ``localhost`` and ``localhost:80`` both ``http://localhost/``)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    names = {host_of(url)}
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is not None and parts.port in (None, default):
        names.add(f"{host}:{default}")
    return bool(allowed) and bool(names & {a.strip().lower() for a in allowed if a.strip()})


def host_name_problem(url: str) -> str | None:
    """Why ``url``'s host is no name DNS can hold (None: it is, or it is an IP literal): at most 253 characters,
    labels of 1 to 63 (RFC 1035 2.3.4). Why checked: ``urllib`` fails such a host with a ``UnicodeError`` ("label too
    long", from the idna codec) that read as a receiver's failure and was retried, and it can never be reached."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if not host or ":" in host or re.fullmatch(r"[0-9.]+", host):
        return None
    if len(host) > 253:
        return f"host {shorten(host, HOST_SHOWN_CHARS)!r} is {len(host)} characters long, over the 253 DNS allows"
    if any(not 1 <= len(label) <= 63 for label in host.split(".")):
        return f"host {shorten(host, HOST_SHOWN_CHARS)!r} has a label that is empty or over the 63 characters DNS allows"
    return None


def not_sendable(url: str, allowed: tuple[str, ...], signing_configured: bool) -> str | None:
    """Why this app would not send a notification to ``url`` (None: it would). The edge refuses such a request (a
    notification that can never be sent would only be missed) and the sending activity checks again at the end (the
    settings may have changed since)."""
    named = host_name_problem(url)
    if named is not None:
        return named
    if not host_allowed(url, allowed):
        return f"host {shown_host(url)!r} is not in TRAPBATCH_NOTIFY_HOSTS"
    if not signing_configured:
        return NOT_SIGNED
    return None


NOT_SIGNED = "TRAPBATCH_NOTIFY_SECRET (and a Key Vault or local secrets file holding it) is not configured"
# Query parameters whose value opens the receiver to whoever reads the address, as the receivers Azure users point a
# notification at hand them out (names compared case-insensitively): ``sig``, the Shared Access Signature of a Logic
# Apps "When an HTTP request is received" trigger URL (``...?api-version=...&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&
# sig=<value>``, as Get-AzLogicAppTriggerCallbackUrl prints it; learn.microsoft.com logic-apps-securing-a-logic-app's
# SAS table: "Specifies the signature to use for authenticating access to the trigger") and of a storage SAS; ``code``,
# an Azure Functions access key passed in the query (learn.microsoft.com function-keys-how-to); ``access_token``,
# OAuth 2.0's bearer token in a URI (RFC 6750 2.3); and the names other services give keys and tokens.
SECRET_QUERY_PARAMS = frozenset({"sig", "signature", "code", "token", "access_token", "key", "apikey", "api_key",
                                 "api-key", "secret"})
# A storage SAS is also told by its signed version with its signed expiry (``sv`` and ``se``, learn.microsoft.com
# rest/api/storageservices create-service-sas); a Logic Apps trigger URL has ``sv`` without ``se``: not enough alone.
SAS_QUERY_PAIR = ("sv", "se")


def secret_query_params(url: str) -> list[str]:
    """The query parameters of ``url`` that look like a secret (``SECRET_QUERY_PARAMS``, or ``sv`` with ``se``),
    lower-case and sorted: names only, never their values."""
    try:
        names = {name.strip().lower() for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    except ValueError:  # a query urllib cannot split: nothing it could name
        return []
    found = names & SECRET_QUERY_PARAMS
    if all(n in names for n in SAS_QUERY_PAIR):
        found |= set(SAS_QUERY_PAIR)
    return sorted(found)


# Receivers whose address carries its secret in the *path*, as their makers hand it out (host, or a subdomain of it;
# path start, compared lower-case after percent-decoding): whoever reads the address can post to the channel.
# Slack: an incoming webhook is https://hooks.slack.com/services/T.../B.../<secret> ("we don't recommend embedding a
# webhook URL in your source code", docs.slack.dev incoming-webhooks), a Workflow Builder webhook trigger
# hooks.slack.com/triggers/... or /workflows/... ("whoever holds the URL can start the workflow"). Teams: an Office 365
# connector's incoming webhook https://<tenant>.webhook.office.com/webhookb2/<group>@<tenant>/IncomingWebhook/<id>/
# <owner>, formerly outlook.office.com/webhook/... (MicrosoftDocs msteams-docs add-incoming-webhook.md). Discord:
# https://discord.com/api/webhooks/<webhook.id>/<webhook.token> (discord.com/developers/docs/resources/webhook
# "Execute Webhook", /api/v<n>/ too; discordapp.com, ptb. and canary. alike). Power Automate / Logic Apps workflow
# URLs (prod-NN.<region>.logic.azure.com, *.environment.api.powerplatform.com) carry theirs as ``sig``: the query
# check refuses them.
SECRET_PATH_RECEIVERS: tuple[tuple[str, str, str], ...] = (
    ("hooks.slack.com", r"/(services|workflows|triggers)/", "a Slack webhook"),
    ("webhook.office.com", r"/webhook(b2)?/", "a Teams incoming webhook"),
    ("outlook.office.com", r"/webhook(b2)?/", "a Teams incoming webhook"),
    ("outlook.office365.com", r"/webhook(b2)?/", "a Teams incoming webhook"),
    ("discord.com", r"/api(/v\d+)?/webhooks/", "a Discord webhook"),
    ("discordapp.com", r"/api(/v\d+)?/webhooks/", "a Discord webhook"),
)


def secret_path_receiver(url: str) -> str | None:
    """Which well-known receiver ``url`` is whose path is its secret (``SECRET_PATH_RECEIVERS``), or None; said
    without any of the address."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:  # a host urllib cannot read: refused for that, later
        return None
    path = unquote(parts.path).lower()
    for domain, start, what in SECRET_PATH_RECEIVERS:
        if (host == domain or host.endswith("." + domain)) and re.match(start, path):
            return what
    return None


ADDRESS_CHARS = 2000  # the most of a notify_url (core.requests), and of the address a notify_url_secret holds
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def address_problem(url: str) -> str | None:
    """Why ``url``, read from the secret a request's ``notify_url_secret`` names, is no address a notification goes
    to (None: it is one): the rules ``core.requests`` applies to a ``notify_url`` (an https address, http only for
    localhost, no credentials, no fragment, a host DNS can hold, at most ``ADDRESS_CHARS``), ASCII only and no space
    (what urllib can send: http.client's ``_validate_path``/``_validate_host`` refuse ``\\x00-\\x20\\x7f`` with an
    ``InvalidURL`` that quotes the path), said without any part of the address, which is a secret."""
    if len(url) > ADDRESS_CHARS:
        return f"is longer than {ADDRESS_CHARS} characters"
    if _CONTROL_RE.search(url):
        return "contains control characters"
    if " " in url:  # http.client refuses it (InvalidURL), quoting the path: the secret of a webhook's path
        return "contains a space (percent-encode it as %20)"
    if not url.isascii():  # http.client sends the request line as ASCII: it failed (UnicodeEncodeError) each retry
        return "has characters other than ASCII (percent-encode them; a host as its xn-- name)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number (urllib names it)
    except ValueError:
        return "is no URL urllib can read (a malformed host or port)"
    if parts.username or parts.password or parts.fragment:
        return "carries credentials or a fragment"
    local = parts.hostname in ("127.0.0.1", "localhost")
    if not parts.hostname or (parts.scheme != "https" and not (parts.scheme == "http" and local)):
        return "is not an https address (http only for localhost)"
    if host_name_problem(url) is not None:
        return "has a host DNS cannot hold (over 253 characters, or a label empty or over 63)"
    return None


# What every secret a request may name as its notification address starts with, unless the operator sets another
# (TRAPBATCH_NOTIFY_URL_SECRET_PREFIX). Why a prefix at all: the store is the app's (the signing key's; without
# TRAPBATCH_APP_KEY_VAULT_URL the sources' vault, holding every caller's credential_secret), and a request could
# otherwise name any secret in it: the reason in its status says whether that secret exists, and whether its value
# is an https address, a long one, ASCII, one with credentials, on an allowed host; an allowed host would be POSTed
# the task's status at another secret's address. Only secrets the operator stored under this prefix, as
# notification addresses, can be named.
URL_SECRET_PREFIX = "notify-url-"


def url_secret_prefix(configured: str) -> str:
    """The prefix in force: ``configured`` (TRAPBATCH_NOTIFY_URL_SECRET_PREFIX) stripped, else ``URL_SECRET_PREFIX``
    (an empty setting is no opt-out: every secret of the store would be nameable)."""
    return configured.strip() or URL_SECRET_PREFIX


def not_sendable_from_secret(name: str, allowed: tuple[str, ...], signing_name: str,
                             store_configured: bool, prefix: str = URL_SECRET_PREFIX) -> str | None:
    """Why this app would not send a notification to the address in secret ``name`` (None: it may, once the
    address read then passes ``address_problem`` and ``host_allowed``). Checked at the edge without reading the
    secret (it is read only when the notification is sent), and again by the sending activity. A name without
    ``prefix`` is refused first, whatever the store holds: the reason tells nothing of other secrets."""
    if not name.casefold().startswith(prefix.casefold()):  # Key Vault names are case-insensitive
        return (f"secret {name!r} does not start with {prefix!r} (TRAPBATCH_NOTIFY_URL_SECRET_PREFIX): only secrets "
                "the operator stored under that prefix, as notification addresses, can be named")
    if not store_configured:
        return "no Key Vault (or local secrets file) is configured to read it from"
    if signing_name and name.casefold() == signing_name.casefold():  # Key Vault names are case-insensitive
        return f"secret {name!r} is the key that signs notifications (TRAPBATCH_NOTIFY_SECRET), not an address"
    if not any(a.strip() for a in allowed):
        return "TRAPBATCH_NOTIFY_HOSTS names no host"
    if not signing_name:
        return NOT_SIGNED
    return None
