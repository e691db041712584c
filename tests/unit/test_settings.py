from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import OrchestrationKnobs, Settings
from gpu_batch.storage_refs import KEY_VAULT_ENV, LOCAL_SECRETS_ENV


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_POLL_MIN_S": "0.5",
                           "TRAPBATCH_WORKER_FAULTS": '{"s00000/1": "crash_after:2"}'})
    assert s.pool == "local" and s.container == "trapbatch" and s.knobs.poll_min_s == 0.5
    assert s.worker_faults == {"s00000/1": "crash_after:2"}
    assert "UseDevelopmentStorage" not in repr(s)  # the connection string never shows in logs
    assert OrchestrationKnobs.from_dict(s.knobs.to_dict()) == s.knobs


def test_identity_based_storage() -> None:
    s = Settings.from_env({"AzureWebJobsStorage__accountName": "acct"})
    assert s.storage_connection == "identity:https://acct.blob.core.windows.net"


@pytest.mark.parametrize("env, needle", [
    ({}, "AzureWebJobsStorage is not set"),
    ({"AzureWebJobsStorage": "x", "TRAPBATCH_MAX_ATTEMPTS": "many"}, "TRAPBATCH_MAX_ATTEMPTS"),
    ({"AzureWebJobsStorage": "x", "TRAPBATCH_MAX_ATTEMPTS": "0"}, "below the minimum"),
    ({"AzureWebJobsStorage": "x", "TRAPBATCH_POOL": "k8s"}, "not a pool kind"),
    ({"AzureWebJobsStorage": "x", "TRAPBATCH_POOL": "azure_batch"}, "TRAPBATCH_BATCH_ACCOUNT_URL"),
    ({"AzureWebJobsStorage": "x", "TRAPBATCH_WORKER_FAULTS": "{"}, "not JSON"),
])
def test_config_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert needle in str(info.value)
    assert info.value.hint


def test_secret_store_settings_reach_the_workers_by_name_only() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert Settings.from_env(base).secret_store_env() == {}
    s = Settings.from_env({**base, "TRAPBATCH_KEY_VAULT_URL": "https://kv.vault.azure.net/"})
    assert s.secret_store_env() == {"TRAPBATCH_KEY_VAULT_URL": "https://kv.vault.azure.net/"}
    local = Settings.from_env({**base, "TRAPBATCH_LOCAL_SECRETS_FILE": "/tmp/s.json"})
    assert local.secret_store_env() == {"TRAPBATCH_LOCAL_SECRETS_FILE": "/tmp/s.json"}
    # the names the worker's secret reader looks up
    assert set(s.secret_store_env()) | set(local.secret_store_env()) == {KEY_VAULT_ENV, LOCAL_SECRETS_ENV}
