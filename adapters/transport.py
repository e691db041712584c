"""Client options for the Azure SDK's HTTP transport: skip requests' per-request environment scan when the
environment has nothing for it to find.

Why: azure-core's ``RequestsTransport`` sets ``requests.Session.trust_env`` from ``use_env_settings`` (default True),
and with it set requests re-reads the environment on *every* request (proxy variables, ``NO_PROXY`` matching, CA
bundle variables, a ``.netrc`` lookup: ``requests.Session.merge_environment_settings``). Measured on a 2-core box
against Azurite: 4.7 ms of CPU per small blob read, 3.6 ms without it, about a quarter of the SDK's cost of each of the
many small requests the control plane makes (issue 11).

The scan only matters when something is there to find, so ``use_env_settings`` is turned off only when the
environment holds no proxy variable (``urllib.request.getproxies``, which requests itself uses) and no netrc file:
what requests would have found is then nothing, and the requests go out exactly as before. A CA bundle variable
(``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``: the order of ``merge_environment_settings``) is what requests would
verify TLS with, so it is passed as the client's ``connection_verify`` instead. With a proxy or a netrc file nothing
changes. Decided when a client is created, so a process whose environment changes later keeps its clients' setting.

Clients made per call (``shared_session_options``): another account's storage client, a Key Vault client, a client
bound by one caller's deadline. Each made its own ``requests.Session`` whose kept-alive sockets stayed open until a
cyclic garbage collection (azure-core's pipeline objects refer to each other), rare in the app
(``core.collector``: thresholds raised to 50,000): ten source-account listings held 20 descriptors, freed by one
``gc.collect()``. Such clients send through one process-wide session instead, whose connections are reused and
bounded (requests' ``HTTPAdapter``: 10 hosts' pools of 10 connections each). Why it matters: the Functions sandbox
limits outbound connections per instance (600 active, 1,200 in all, on the Consumption plan) and says to reuse clients
rather than create one per invocation (MicrosoftDocs azure-docs ``articles/azure-functions/manage-connections.md``,
learn.microsoft.com/azure/azure-functions/manage-connections).
"""
from __future__ import annotations

import os
import threading
import urllib.request
from pathlib import Path
from typing import Any, Mapping

# azure-core's class as imported, to make the shared session with (a test may stand in another transport for the
# clients: the session is still requests')
from azure.core.pipeline.transport import RequestsTransport as _SessionMaker

from gpu_batch.storage_refs import new_shared_session

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
NETRC_FILES = (".netrc", "_netrc")  # requests.utils.NETRC_FILES


def environment_has_http_settings(environ: Mapping[str, str] | None = None) -> bool:
    """Whether requests' environment scan could change a request in a way ``connection_verify`` cannot stand in
    for: a proxy or a netrc file."""
    env = os.environ if environ is None else environ
    if env is os.environ:
        proxies = urllib.request.getproxies()
    else:  # the same rule over the given mapping (tests)
        proxies = {k.lower()[:-6]: v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    if any(key != "no" for key in proxies):
        return True
    netrc = env.get("NETRC")
    if netrc:
        return Path(netrc).expanduser().exists()
    home = Path(env.get("HOME") or Path.home())
    return any((home / name).exists() for name in NETRC_FILES)


def transport_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client (passed on to its ``RequestsTransport``)."""
    env = os.environ if environ is None else environ
    if environment_has_http_settings(env):
        return {}
    bundle = next((env[name] for name in CA_BUNDLE_VARIABLES if env.get(name)), None)
    return {"use_env_settings": False, **({"connection_verify": bundle} if bundle else {})}


_SESSIONS: dict[bool, Any] = {}  # requests' trust_env -> the process's session with it
_SESSIONS_LOCK = threading.Lock()

def shared_session_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client made per call (the module docstring): ``transport_options``, and the
    process's shared ``requests.Session`` as ``session`` with ``session_owner=False``, so the client's
    ``RequestsTransport`` sends through it and its ``close`` leaves it open (azure-core 1.41
    ``pipeline/transport/_requests_basic.py``). The SDK's other choices stay: a storage client still gets its 20-s
    connection and 60-s read timeouts, which it sets on the transport it builds from these arguments
    (azure-storage-blob 12.31 ``_shared/base_client.py`` ``_create_pipeline``).

    One session per value of requests' ``trust_env`` (``use_env_settings``: a proxy in the environment keeps it on),
    made by ``gpu_batch.storage_refs.new_shared_session`` (as azure-core makes its own, with a pool of 64 connections
    a host and no cookies), as the GPU worker's is."""
    options = transport_options(environ)
    trust_env = bool(options.get("use_env_settings", True))
    with _SESSIONS_LOCK:  # one session, not one per first caller racing
        session = _SESSIONS.get(trust_env)
        if session is None:
            session = _SESSIONS[trust_env] = new_shared_session(_SessionMaker, **options)
    return {**options, "session": session, "session_owner": False}


def shared_session_transport(environ: Mapping[str, str] | None = None) -> Any:
    """A ``RequestsTransport`` over the process's shared session (``shared_session_options``), for a client that takes
    a transport (a Key Vault reader, a deadline's wrapper: ``storage_refs.deadline_vault_options``)."""
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport(**shared_session_options(environ))
