"""The Functions app's managed identity credential, with a token endpoint that did not answer told apart.

Why: in Azure the app's identity is served by App Service's identity endpoint (``IDENTITY_ENDPOINT`` with
``IDENTITY_HEADER``: azure-identity 1.27.0 ``_credentials/managed_identity.py`` picks ``AppServiceCredential``), not by
IMDS as on the GPU nodes. When that endpoint does not answer, or answers 5xx, ``DefaultAzureCredential`` raises a
``ClientAuthenticationError`` shaped like the one of an identity without a role (``gpu_batch.storage_refs``,
``token_endpoint_did_not_answer``, says how each case is worded). trapbatch took it for one: its own storage answered
502 "grant the role" at the HTTP edge, and an activity failed its task after three quick calls, where a busy storage
account is waited out (``orchestrations.retries``). ``AppCredential`` raises such a failure as
``TokenEndpointUnavailable`` instead: ``adapters.storage_errors`` maps it to ``StorageUnavailable`` (503, retry), and
the orchestrations count it busy by its name (``orchestrations.retries.BUSY_TYPES``).

Must not: hide a failure that no retry fixes (no identity, the wrong client id, a 400 or 403 from the endpoint): those
stay the ``ClientAuthenticationError`` they were, with the credential's own words. One of them reads like a silent
endpoint: on App Service an app with no managed identity gets no ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``
(MicrosoftDocs/azure-docs issue #81108), so azure-identity asks IMDS, which App Service does not serve, and says "no
response from the IMDS endpoint" (``_credentials/managed_identity.py``, ``imds.py``; TROUBLESHOOTING.md, "Azure App
Service and Azure Functions Managed Identity": "The environment variables configured by the App Services host
weren't present"). There (``WEBSITE_SITE_NAME`` set: articles/app-service/reference-app-settings.md, "Read-only. App
name.") it is ``AppIdentityMissing``, worded so that no busy rule matches it; elsewhere (a VM) IMDS not answering
stays busy.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Mapping

from azure.core.exceptions import ClientAuthenticationError

from gpu_batch.storage_refs import (RefreshSparingCredential, identity_environment, managed_identity_problem,
                                    token_endpoint_did_not_answer)


class TokenEndpointUnavailable(ClientAuthenticationError):
    """The managed identity's token endpoint did not answer, or answered "later" (5xx, 429): a passing cause.

    Its message keeps the credential's ``ManagedIdentityCredential: ...`` line, which
    ``gpu_batch.storage_refs.token_endpoint_did_not_answer`` reads, so a Key Vault read failing with it is still told
    a store that did not answer (``SecretStoreUnavailable``)."""


class AppIdentityMissing(ClientAuthenticationError):
    """The app runs on App Service without a managed identity (no ``IDENTITY_ENDPOINT``): configuration, not busy.

    Its message must not repeat the credential's "no response from the IMDS endpoint" nor a ``ManagedIdentityCredential:``
    line: ``gpu_batch.storage_refs.token_endpoint_did_not_answer`` reads those as a silent endpoint."""


def app_service_without_identity(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on App Service (``WEBSITE_SITE_NAME``) that gave it no identity endpoint, so that
    azure-identity fell back to IMDS: it does so only when neither ``IDENTITY_ENDPOINT`` nor ``MSI_ENDPOINT`` is set
    (azure-identity 1.27.0 ``_credentials/managed_identity.py``, ``ManagedIdentityCredential.__init__``).
    ``MSI_ENDPOINT``/``MSI_SECRET`` are App Service's older names of the endpoint ("MSI_ENDPOINT can be used as an
    alias for IDENTITY_ENDPOINT", articles/app-service/overview-managed-identity.md): an app with them has an identity,
    and their endpoint not answering is busy, not "no identity"."""
    env = os.environ if env is None else env
    return bool(env.get("WEBSITE_SITE_NAME")) and not (env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"))


def translated(exc: ClientAuthenticationError) -> ClientAuthenticationError:
    """``exc`` as ``TokenEndpointUnavailable`` when its token endpoint did not answer (as ``AppIdentityMissing`` when
    that "endpoint" is IMDS on App Service, which means the app has no identity), else ``exc`` itself."""
    if isinstance(exc, (TokenEndpointUnavailable, AppIdentityMissing)) or not token_endpoint_did_not_answer(exc):
        return exc
    if app_service_without_identity():
        return AppIdentityMissing(message="the Function App has no managed identity: App Service set no "
                                          "IDENTITY_ENDPOINT/IDENTITY_HEADER, so azure-identity fell back to IMDS, "
                                          "which App Service does not serve. Assign the app its user-assigned "
                                          "identity (id-api-*, infra/app/api.bicep) and set AZURE_CLIENT_ID to its "
                                          "client id")
    said = managed_identity_problem(exc) or f"{type(exc).__name__}: {exc}"
    return TokenEndpointUnavailable(message="the app's managed identity got no token: its token endpoint did not "
                                            f"answer. ManagedIdentityCredential: {said[:400]}")


class AppCredential:
    """``DefaultAzureCredential`` (or ``inner``) whose passing failures are ``TokenEndpointUnavailable``.

    Both token methods are passed through, as azure-core's ``BearerTokenCredentialPolicy`` calls ``get_token_info``
    where a credential has it and ``get_token`` otherwise. The app's clients take the process's shared one
    (``app_credential``), not one each."""

    def __init__(self, inner: Any = None) -> None:
        if inner is None:
            from azure.identity import DefaultAzureCredential

            # a token whose refresh failed serves on, and the endpoint is asked again every 30 s, not at each request
            # of every client (storage_refs.RefreshSparingCredential: the shared credential keeps tokens for hours)
            inner = RefreshSparingCredential(DefaultAzureCredential())
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        try:
            return self._inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as exc:
            failure = translated(exc)
            if failure is exc:
                raise
            if not isinstance(failure, AppIdentityMissing):
                raise failure from exc
        raise failure  # outside the handler: no chain to the IMDS failure, which reads busy (AppIdentityMissing)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        try:
            return self._inner.get_token_info(*scopes, options=options)
        except ClientAuthenticationError as exc:
            failure = translated(exc)
            if failure is exc:
                raise
            if not isinstance(failure, AppIdentityMissing):
                raise failure from exc
        raise failure  # as get_token

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> AppCredential:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


_SHARED: dict[tuple[tuple[str, str], ...], AppCredential] = {}
_SHARED_LOCK = threading.Lock()


def app_credential() -> AppCredential:
    """The process's one ``AppCredential`` (per identity environment): what every client the app builds with its
    identity uses (its own account's, a source account's, Key Vault's, Batch's, Event Grid's).

    Why shared: a credential caches its tokens in itself ("the in-memory cache may be cleared by creating a new
    credential instance", azure-identity ``TOKEN_CACHING.md``), so one built per client asked App Service's identity
    endpoint for a token at each client's first request (``clients.source_store`` builds clients per listing or
    shard step; a request nothing bounds) and held its transport's sockets until a cyclic garbage collection.
    Sharing is safe: "the in-memory token cache provided by the Azure Identity library can be used by multiple
    threads concurrently" (same file); no app code closes it (a client's ``close`` closes its own transport, not
    its credential). A failed token request is not remembered: the next use asks again (``_credentials/chained.py``
    keeps only a credential that succeeded; ``_credentials/imds.py`` leaves an unanswered probe unmarked).

    Keyed by the identity-relevant environment (``gpu_batch.storage_refs.identity_environment``): a process whose
    environment names another identity (tests that point ``IDENTITY_ENDPOINT`` elsewhere) gets a credential built for
    it, never one holding another identity's token. What secrets a client reads with it stays per use
    (``clients.source_store`` reads a source's SAS from Key Vault at each call)."""
    key = identity_environment()
    with _SHARED_LOCK:  # one per key even when a burst of activities asks at once
        credential = _SHARED.get(key)
        if credential is None:
            credential = _SHARED[key] = AppCredential()
        return credential


def forget_app_credentials() -> None:
    """Drop the shared credentials (tests: a stand-in endpoint on a port an earlier test's endpoint had used must
    not find that test's token)."""
    with _SHARED_LOCK:
        _SHARED.clear()
