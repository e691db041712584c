from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import OrchestrationKnobs, Settings, drop_trigger_source
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


def test_the_apps_own_secrets_come_from_the_app_vault_which_never_reaches_the_workers() -> None:
    """The GPU nodes read TRAPBATCH_KEY_VAULT_URL's vault by names requests choose, so the notification signing key
    has a vault of its own (TRAPBATCH_APP_KEY_VAULT_URL). Unset, the app reads it where it always did: the one vault,
    or locally the secrets file."""
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    both = Settings.from_env({**base, "TRAPBATCH_KEY_VAULT_URL": "https://kv-abc.vault.azure.net/",
                              "TRAPBATCH_APP_KEY_VAULT_URL": " https://kva-abc.vault.azure.net/ "})
    assert both.app_key_vault_url == "https://kva-abc.vault.azure.net/"
    assert both.app_secret_store_env() == {KEY_VAULT_ENV: "https://kva-abc.vault.azure.net/"}
    # what the workers get (and the sources' reader uses) is the sources' vault alone
    assert both.secret_store_env() == {KEY_VAULT_ENV: "https://kv-abc.vault.azure.net/"}
    one = Settings.from_env({**base, "TRAPBATCH_KEY_VAULT_URL": "https://kv-abc.vault.azure.net/"})
    assert one.app_key_vault_url == "" and one.app_secret_store_env() == one.secret_store_env()
    local = Settings.from_env({**base, "TRAPBATCH_LOCAL_SECRETS_FILE": "/tmp/s.json"})
    assert local.app_secret_store_env() == {LOCAL_SECRETS_ENV: "/tmp/s.json"}
    assert Settings.from_env(base).app_secret_store_env() == {}


def test_drop_trigger_source_defaults_to_event_grid_and_refuses_anything_else() -> None:
    """Flex Consumption runs only the Event Grid blob trigger (flex-consumption-plan.md); ``func host start`` with
    Azurite has no Event Grid, so local.settings.example.json polls instead."""
    assert drop_trigger_source({}) == "EventGrid"
    assert drop_trigger_source({"TRAPBATCH_DROP_TRIGGER_SOURCE": "LogsAndContainerScan"}) == "LogsAndContainerScan"
    with pytest.raises(ConfigError) as info:
        drop_trigger_source({"TRAPBATCH_DROP_TRIGGER_SOURCE": "Polling"})
    assert "EventGrid" in info.value.hint
    example = json.loads((Path(__file__).resolve().parents[2] / "local.settings.example.json").read_text())
    assert example["Values"]["TRAPBATCH_DROP_TRIGGER_SOURCE"] == "LogsAndContainerScan"


def test_local_settings_example_names_only_settings_read_and_the_readme_gives_its_values() -> None:
    """README "With Azure Functions Core Tools" has newcomers copy local.settings.example.json and says what it sets
    (shards of 1,000, polls every 5-60 s): nothing tied the file to the code, so a misspelt or renamed variable there
    was silently ignored (the app would run on its defaults), a value the app refuses failed only at ``func host
    start``, and a changed value left the README's words stating the old one."""
    import inspect
    import re

    import core.settings as module

    root = Path(__file__).resolve().parents[2]
    values = json.loads((root / "local.settings.example.json").read_text(encoding="utf-8"))["Values"]
    # the Functions host's own, as Core Tools' ``func init`` writes them; every other name is the app's
    host = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"}
    read = set(re.findall(r'"((?:TRAPBATCH_|AzureWebJobs)\w+)"', inspect.getsource(module)))
    assert sorted(n for n in values if n not in host and n not in read) == []
    knobs = Settings.from_env(values).knobs  # loads as the app loads it
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"cp local\.settings\.example\.json local\.settings\.json .*?shards of ([\d,]+), polls every "
                     r"(\d+)-(\d+) s", readme)
    assert said, "README says which local-run values the example sets"
    assert (int(said.group(1).replace(",", "")), float(said.group(2)), float(said.group(3))) == \
        (knobs.images_per_shard, knobs.poll_min_s, knobs.poll_max_s)


def test_the_drop_trigger_is_declared_with_the_event_grid_source() -> None:
    from api import starters

    binding = starters.task_dropped._function.get_trigger().get_dict_repr()
    assert binding["type"] == "blobTrigger" and binding["source"] == "EventGrid"
    assert binding["path"] == "incoming/{name}"


def test_public_web_url_is_read_without_a_trailing_slash() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_PUBLIC_WEB_URL": "https://a.z6.web.core.windows.net/"})
    assert s.public_web_url == "https://a.z6.web.core.windows.net"


BATCH_ENV = {"AzureWebJobsStorage": "x", "TRAPBATCH_POOL": "azure_batch",
             "TRAPBATCH_BATCH_ACCOUNT_URL": "https://acct.westeurope.batch.azure.com", "TRAPBATCH_BATCH_POOL_ID": "gpu",
             "TRAPBATCH_WORKER_IMAGE": "acr.azurecr.io/trapbatch-worker:1",
             "TRAPBATCH_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net",
             "TRAPBATCH_WORKER_IDENTITY": "client-guid",
             "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID": "/subscriptions/s/resourceGroups/g/providers/"
                                                      "Microsoft.ManagedIdentity/userAssignedIdentities/nodes"}


def test_the_storage_account_url_is_read_without_the_blanks_around_it() -> None:
    """The pool refuses blanks and control characters in it (every Batch task carries the raw value, while urlsplit
    strips them): a newline pasted after it is trimmed here, as other URL settings are, rather than refused there."""
    s = Settings.from_env({**BATCH_ENV, "TRAPBATCH_STORAGE_ACCOUNT_URL": " https://acct.blob.core.windows.net/\n"})
    assert s.storage_account_url == "https://acct.blob.core.windows.net/"


def test_the_worker_key_vault_url_is_read_without_the_blanks_around_it() -> None:
    """Every Batch task carries it in its environment, where the worker builds its Key Vault client from it: a
    newline pasted after it is trimmed here, as the app's own vault URL is."""
    s = Settings.from_env({**BATCH_ENV, "TRAPBATCH_KEY_VAULT_URL": " https://kv-abc.vault.azure.net/\n"})
    assert s.key_vault_url == "https://kv-abc.vault.azure.net/"


def test_the_batch_pool_gets_the_node_identity_it_uploads_logs_with() -> None:
    from adapters import clients

    with pytest.raises(ConfigError) as info:
        Settings.from_env({k: v for k, v in BATCH_ENV.items() if k != "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID"})
    assert "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID" in str(info.value)
    pool = clients.pool(Settings.from_env({**BATCH_ENV, "TRAPBATCH_CONTAINER": "state"}))
    assert type(pool).__name__ == "AzureBatchPool"
    assert pool.identity_resource_id == BATCH_ENV["TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID"]  # type: ignore[attr-defined]
    assert pool.log_container == "state"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value,resident", [("", False), ("0", False), ("no", False), ("1", True), ("true", True),
                                            ("yes", True), ("On", True)])
def test_the_resident_worker_setting_reaches_the_pool_through_settings(value: str, resident: bool) -> None:
    """TRAPBATCH_WORKER_RESIDENT is read once, here, and handed to the pool (which reads no environment for it)."""
    from adapters import clients

    s = Settings.from_env({**BATCH_ENV, "TRAPBATCH_WORKER_RESIDENT": value})
    assert s.worker_resident is resident
    assert clients.pool(s).resident is resident  # type: ignore[attr-defined]


@pytest.mark.parametrize("env,model,requested,expected", [
    ({}, "MDV5A", None, 0.2),  # MegaDetector's typical threshold for the model
    ({}, "MDV1000-REDWOOD", None, 0.3),
    ({}, "blob://models/mystery.pt", None, 0.2),  # MegaDetector's fallback
    ({"TRAPBATCH_PREVIEW_THRESHOLD": "0.4"}, "MDV1000-REDWOOD", None, 0.4),  # the operator's default wins
    ({"TRAPBATCH_PREVIEW_THRESHOLD": "0.4"}, "MDV5A", 0.15, 0.15),  # and the request over both
])
def test_the_preview_threshold_comes_from_the_request_the_app_or_the_model(
        env: dict[str, str], model: str, requested: float | None, expected: float) -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})
    assert s.threshold_for(model, requested) == expected


def test_export_settings() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_EXPORT_ATTRIBUTION": "Univ. of X",
                           "TRAPBATCH_EXPORT_LICENSE": "CC-BY-4.0", "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "500",
                           "TRAPBATCH_EXPORT_IMAGE_SIZES": "false", "TRAPBATCH_ZOONIVERSE_MAX_FRAMES": "5"})
    assert (s.export_attribution, s.export_license, s.zooniverse_batch_size, s.export_image_sizes) == \
        ("Univ. of X", "CC-BY-4.0", 500, False)
    assert s.zooniverse_max_frames == 5
    assert Settings.from_env({"AzureWebJobsStorage": "x"}).export_image_sizes is True
    assert Settings.from_env({"AzureWebJobsStorage": "x"}).zooniverse_max_frames == 20  # a request's visits' most
    for name, bad in (("TRAPBATCH_EXPORT_IMAGE_SIZES", "maybe"), ("TRAPBATCH_PREVIEW_THRESHOLD", "1.5"),
                      ("TRAPBATCH_PREVIEW_THRESHOLD", "0.001"),  # below what a request may ask (0.005)
                      ("TRAPBATCH_IMAGES_PER_SHARD", "100001"),  # above what a request may ask
                      ("TRAPBATCH_ZOONIVERSE_BATCH_SIZE", "0"), ("TRAPBATCH_ZOONIVERSE_MAX_FRAMES", "0"),
                      ("TRAPBATCH_ZOONIVERSE_MAX_FRAMES", "1001")):  # bounds the subject the combine holds
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({"AzureWebJobsStorage": "x", name: bad})


def test_history_events_knob_has_a_default_well_under_5000_and_a_floor() -> None:
    base = {"AzureWebJobsStorage": "x"}
    assert Settings.from_env(base).knobs.history_events == 1000
    assert Settings.from_env({**base, "TRAPBATCH_HISTORY_EVENTS": "300"}).knobs.history_events == 300
    with pytest.raises(ConfigError, match="TRAPBATCH_HISTORY_EVENTS=100 is below the minimum 200"):
        Settings.from_env({**base, "TRAPBATCH_HISTORY_EVENTS": "100"})
    # an input from before the knob (polls_per_generation) still loads, with the default
    assert OrchestrationKnobs.from_dict({"polls_per_generation": 50, "max_in_flight": 7}) == OrchestrationKnobs(
        max_in_flight=7)


@pytest.mark.parametrize("env, views", [
    ({}, True),  # the local pool: no GPU bill waits on the view
    ({"TRAPBATCH_POOL": "simulated"}, True),
    ({**BATCH_ENV}, False),  # Batch with the CLI worker: the GPU would wait ~0.25 s per 10,000 images
    ({**BATCH_ENV, "TRAPBATCH_WORKER_RESIDENT": "1"}, True),  # written after the answer, while the next shard runs
    ({**BATCH_ENV, "TRAPBATCH_MERGE_VIEWS": "on"}, True),
    ({"TRAPBATCH_MERGE_VIEWS": "OFF"}, False),
])
def test_merge_views_are_asked_for_where_no_gpu_waits_on_them(env: dict[str, str], views: bool) -> None:
    assert Settings.from_env({"AzureWebJobsStorage": "x", **env}).merge_views is views


def test_a_merge_views_setting_that_is_no_choice_says_the_choices() -> None:
    with pytest.raises(ConfigError, match="TRAPBATCH_MERGE_VIEWS='sometimes' is not one of auto, on, off"):
        Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_MERGE_VIEWS": "sometimes"})


def test_the_confirmation_wait_is_at_most_six_days_the_longest_timer_a_python_orchestration_may_wait_on() -> None:
    """A longer wait would be the SDK's LongTimerTask, whose cancel() leaves its timer open (core.settings
    ``_confirm_timeout_s``; devhost fidelity row 26): a confirmed task would stay Running for the rest of the wait."""
    base = {"AzureWebJobsStorage": "x"}
    assert Settings.from_env(base).knobs.confirm_timeout_s == 6 * 86400
    assert Settings.from_env({**base, "TRAPBATCH_CONFIRM_TIMEOUT_S": "518400"}).knobs.confirm_timeout_s == 518400
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**base, "TRAPBATCH_CONFIRM_TIMEOUT_S": "604800"})
    assert "TRAPBATCH_CONFIRM_TIMEOUT_S=604800" in str(info.value) and "six days" in str(info.value)
    assert "518400" in info.value.hint


def test_the_repeat_search_folder_cap_defaults_to_twice_a_group_and_is_refused_past_what_one_activity_takes() -> None:
    """A folder's search grows with the square of its eligible detections and runs in one activity: 800,000 (about
    a minute) by default, 3,000,000 at most (the activity's time limit and memory), with the reason said."""
    base = {"AzureWebJobsStorage": "x"}
    knobs = Settings.from_env(base).knobs
    assert knobs.repeat_max_folder_detections == 800_000 == 2 * knobs.repeat_search_detections_per_group
    set_ = {**base, "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS": "3000000"}
    assert Settings.from_env(set_).knobs.repeat_max_folder_detections == 3_000_000
    assert OrchestrationKnobs.from_dict({}).repeat_max_folder_detections == 800_000  # a task started before it
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**base, "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS": "3000001"})
    assert "square" in str(info.value) and "30-minute" in str(info.value) and "skipped" in info.value.hint
    with pytest.raises(ConfigError, match="below the minimum 1"):
        Settings.from_env({**base, "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS": "0"})


def test_every_setting_the_app_reads_is_in_the_settings_docstring_and_no_other() -> None:
    """README sends operators to core/settings.py's docstring for every setting and its default: a setting read but
    not listed there is one nobody can find, and one listed but read nowhere misleads. A line may list several with
    a shared prefix (``TRAPBATCH_POLL_MIN_S / _MAX_S``)."""
    import inspect
    import re
    import subprocess

    import core.settings as module

    doc = module.__doc__ or ""
    read = set(re.findall(r'"(TRAPBATCH_[A-Z0-9_]+)"', inspect.getsource(module)))

    def listed(name: str) -> bool:
        if re.search(rf"\b{name}\b", doc):
            return True
        return any(re.search(rf"/ {re.escape(name[len(prefix):])}\b", line) and prefix in line
                   for line in doc.splitlines() for prefix in re.findall(r"TRAPBATCH_[A-Z0-9_]+?(?=_)", name))

    assert sorted(n for n in read if not listed(n)) == []
    root = Path(module.__file__ or "").resolve().parents[1]
    # read by the app, the worker, devhost or the deployment: not by a test alone
    shipped = subprocess.run(["git", "ls-files", "--", "*.py", "host.json", "infra/*", ":!tests/*", ":!*/tests/*"],
                             cwd=root, capture_output=True, text=True, check=True).stdout.split()
    text = "\n".join((root / f).read_text(encoding="utf-8", errors="replace") for f in shipped
                     if (root / f).is_file() and f != "core/settings.py")
    own = inspect.getsource(module).replace(doc, "")
    unread = [n for n in sorted(set(re.findall(r"TRAPBATCH_[A-Z0-9_]+", doc)))
              if not re.search(rf"\b{n}\b", text) and f'"{n}"' not in own]
    assert unread == []


def test_trapbatchs_own_containers_are_named_as_such_and_no_others() -> None:
    """A request naming one as its images' container is refused (api.starters.start_task): the app's identity reads
    every container of its account, so a caller could list and read trapbatch's state through it."""
    from core.settings import own_container_reason

    s = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_CONTAINER": "tbstate",
                           "TRAPBATCH_MODELS_CONTAINER": "models", "TRAPBATCH_TASK_HUB": "MyHub"})
    for name in ("tbstate", "incoming", "models", "azure-webjobs-hosts", "azure-webjobs-secrets", "myhub-leases",
                 "myhub-applease", "myhub-largemessages", "app-package-trapbatch-abc1234"):
        assert own_container_reason(name, s), name
    for name in ("camera-traps", "trapbatch", "myhub-photos", "tbstate2", "incoming-photos", "models-old"):
        assert own_container_reason(name, s) is None, name


def test_decided_settings_replace_the_environments_and_leave_the_rest() -> None:
    """``DecidedSettings``: what a run decided stands against a changed environment (the request's own threshold
    still wins); a document without a field (written before it existed) leaves that field the environment's."""
    from core.settings import DecidedSettings

    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_POOL": "azure_batch",
            "TRAPBATCH_BATCH_ACCOUNT_URL": "https://b", "TRAPBATCH_BATCH_POOL_ID": "p", "TRAPBATCH_WORKER_IMAGE": "i",
            "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID": "r", "TRAPBATCH_STORAGE_ACCOUNT_URL": "https://s"}
    start = Settings.from_env({**base, "TRAPBATCH_DETECTION_THRESHOLD": "0.01", "TRAPBATCH_EVENT_INTERVAL_S": "0",
                               "TRAPBATCH_EXPORT_IMAGE_SIZES": "false", "TRAPBATCH_MAX_TASK_SECONDS": "600",
                               "TRAPBATCH_ZOONIVERSE_MAX_FRAMES": "3"})
    now = Settings.from_env({**base, "TRAPBATCH_PREVIEW_THRESHOLD": "0.6", "TRAPBATCH_MERGE_VIEWS": "on",
                             "TRAPBATCH_EXPORT_LICENSE": "CC0-1.0", "TRAPBATCH_EXPORT_DATA_LICENSE": "CC-BY-4.0",
                             "TRAPBATCH_CONTAINER": "elsewhere"})
    decided = DecidedSettings.decide(start, "MDV1000-REDWOOD")
    assert json.loads(json.dumps(decided.to_dict())) == decided.to_dict()
    applied = DecidedSettings.from_dict(decided.to_dict()).apply(now)
    assert applied.threshold_for("MDV1000-REDWOOD") == 0.3  # the model's typical one, as the start had no setting
    assert applied.threshold_for("MDV1000-REDWOOD", 0.45) == 0.45  # the request's wins
    assert (applied.detection_threshold, applied.event_interval_s, applied.export_image_sizes) == (0.01, 0.0, False)
    assert applied.merge_views is False  # Azure Batch with the CLI worker: auto was off at the start
    assert (applied.export_license, applied.knobs.max_task_seconds, applied.container) == ("", 600, "elsewhere")
    assert applied.export_data_license == ""  # decided too: the start had none
    assert applied.zooniverse_max_frames == 3 != now.zooniverse_max_frames  # the subjects' split too
    assert applied.knobs.poll_min_s == now.knobs.poll_min_s
    assert DecidedSettings.from_dict({}).apply(now) == now
    older = DecidedSettings.from_dict({"detection_threshold": 0.01}).apply(now)
    assert (older.detection_threshold, older.threshold_for("MDV5A"), older.merge_views) == (0.01, 0.6, True)


def test_tasks_start_with_the_shard_limit_in_their_knobs_and_older_inputs_have_none() -> None:
    """A task's knobs carry core.shards.MAX_SHARDS from its start; a task started before the limit existed has no
    such knob (0) and its enumeration replays unchecked, as it ran (orchestrations.enumeration)."""
    from core.shards import MAX_SHARDS

    knobs = Settings.from_env({"AzureWebJobsStorage": "x"}).knobs
    assert knobs.max_shards == MAX_SHARDS
    assert OrchestrationKnobs.from_dict({k: v for k, v in knobs.to_dict().items() if k != "max_shards"}).max_shards == 0


BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


@pytest.mark.parametrize("env, needle", [
    # poll delays become a shard group's durable timers: NaN and infinity raised in the orchestrator (timedelta),
    # a negative or zero one polled without a pause
    ({"TRAPBATCH_POLL_MIN_S": "nan"}, "TRAPBATCH_POLL_MIN_S=nan must be a positive number"),
    ({"TRAPBATCH_POLL_MIN_S": "-5"}, "TRAPBATCH_POLL_MIN_S=-5.0 must be a positive number"),
    ({"TRAPBATCH_POLL_MAX_S": "inf"}, "TRAPBATCH_POLL_MAX_S=inf must be a positive number"),
    ({"TRAPBATCH_POLL_MAX_S": "0"}, "TRAPBATCH_POLL_MAX_S=0.0 must be a positive number"),
    ({"TRAPBATCH_POLL_MIN_S": "60", "TRAPBATCH_POLL_MAX_S": "10"}, "TRAPBATCH_POLL_MAX_S=10 is below"),
    # a confidence: 2 kept no detection, -1 or NaN every box or none
    ({"TRAPBATCH_DETECTION_THRESHOLD": "2"}, "TRAPBATCH_DETECTION_THRESHOLD=2.0 is not a fraction from 0 to 1"),
    ({"TRAPBATCH_DETECTION_THRESHOLD": "nan"}, "TRAPBATCH_DETECTION_THRESHOLD=nan is not a fraction"),
    # the worker refused it with exit 2 on every shard of the local pool; now the app's start says the choices
    ({"TRAPBATCH_DEVICE": "gpu"}, "TRAPBATCH_DEVICE='gpu' is not one of auto, cpu, cuda"),
    # was silently off
    ({"TRAPBATCH_WORKER_RESIDENT": "ture"}, "TRAPBATCH_WORKER_RESIDENT='ture' is not true or false"),
    # the range a request's own event_interval_s takes (core.requests.MAX_EVENT_INTERVAL_S)
    ({"TRAPBATCH_EVENT_INTERVAL_S": "86401"}, "TRAPBATCH_EVENT_INTERVAL_S=86401 is above 86400 s"),
])
def test_invalid_values_are_refused_at_start_naming_the_variable_and_what_to_write(env: dict[str, str],
                                                                                   needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, **env})
    assert needle in str(info.value)
    assert "e.g." in info.value.hint


def test_an_empty_text_setting_is_its_default_as_an_empty_number_is() -> None:
    """``"TRAPBATCH_CONTAINER": ""`` (local.settings.json, an app setting left blank) named no container: every blob
    call then failed far from the setting. Empty numbers always meant their default; text settings now do too."""
    empty = Settings.from_env({**BASE, **{name: "" for name in ("TRAPBATCH_CONTAINER", "TRAPBATCH_WEB_CONTAINER",
                                                                "TRAPBATCH_DEVICE", "TRAPBATCH_POOL",
                                                                "TRAPBATCH_POLL_MIN_S", "TRAPBATCH_WORKER_RESIDENT")}})
    assert empty == Settings.from_env(BASE)
    assert (empty.container, empty.web_container, empty.device, empty.pool) == ("trapbatch", "$web", "auto", "local")


@pytest.mark.parametrize("word, on", [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("0", False),
                                      ("false", False), ("no", False), ("off", False)])
def test_every_on_off_setting_takes_the_same_words(word: str, on: bool) -> None:
    """TRAPBATCH_WORKER_RESIDENT took yes/on and any other word as off; TRAPBATCH_EXPORT_IMAGE_SIZES refused yes."""
    s = Settings.from_env({**BASE, "TRAPBATCH_WORKER_RESIDENT": word, "TRAPBATCH_EXPORT_IMAGE_SIZES": word})
    assert (s.worker_resident, s.export_image_sizes) == (on, on)


def test_the_worker_and_the_app_share_the_detection_threshold_and_device_constants() -> None:
    """One number for MegaDetector's output threshold, one tuple of worker devices (gpu_batch.manifest)."""
    from core.requests import MIN_PREVIEW_THRESHOLD
    from gpu_batch import manifest
    from gpu_batch.worker import __main__ as worker

    assert Settings.from_env(BASE).detection_threshold == manifest.DEFAULT_DETECTION_THRESHOLD == MIN_PREVIEW_THRESHOLD
    assert manifest.ShardManifest.from_dict({"task_id": "t", "shard_id": "s", "attempt": 1, "source_container": "c",
                                             "images": [], "output_container": "o", "output_blob": "b",
                                             "model": "m"}).detection_threshold == manifest.DEFAULT_DETECTION_THRESHOLD
    assert worker.DEVICES is manifest.DEVICES


def test_the_settings_docstring_gives_each_default_the_code_uses() -> None:
    """README sends operators to core/settings.py's docstring for each setting's default; the names are checked above,
    this checks the values: setting a variable to the default its entry states must change nothing."""
    import re

    import core.settings as module
    from gpu_batch.worker import resident_protocol

    doc = module.__doc__ or ""
    entries = {name: " ".join(text.split()) for name, text in
               re.findall(r"^    (TRAPBATCH_[A-Z0-9_]+)(.*?)(?=^    \S|\Z)", doc, re.S | re.M)}
    documented: dict[str, str] = {}
    for name, text in entries.items():
        if pair := re.match(r"/ (_[A-Z0-9_]+) .*?\(default ([\d.]+) / ([\d.]+)", text):  # ``_MIN_S / _MAX_S``
            documented[name], documented[name.rsplit("_", 2)[0] + pair.group(1)] = pair.group(2), pair.group(3)
        elif found := (re.search(r"\(default(?: and most)? (?:``)?([^\s`,;:)]+)", text)
                       or re.search(r"``([^`]+)`` \(default[:)]", text)):
            documented[name] = "" if found.group(1) == "empty" else found.group(1)
    assert len(documented) >= 35, sorted(documented)  # the parse still finds the entries
    default = Settings.from_env(BASE)
    differ = {name: value for name, value in documented.items() if Settings.from_env({**BASE, name: value}) != default}
    assert differ == {}
    # the resident worker's own variables, read on the nodes (gpu_batch.worker.resident_protocol)
    resident = entries["TRAPBATCH_WORKER_RESIDENT"]
    assert f"TRAPBATCH_RESIDENT_IDLE_S (server exits after this long without a shard, default " \
           f"{resident_protocol.DEFAULT_IDLE_S:g})" in resident
    assert f"default {resident_protocol.DEFAULT_START_S:g})" in resident.split("TRAPBATCH_RESIDENT_START_S", 1)[1]


def test_the_defaults_the_docs_give_beside_a_setting_are_the_codes() -> None:
    """README.md, docs/ and devhost/README.md repeat a setting's default where they use it (```TRAPBATCH_X`` (60)``,
    ```TRAPBATCH_X``, 10000``, ```TRAPBATCH_X`` eligible detections (default 800,000``, ``... (50 MiB)``): the
    docstring's defaults are checked above, these copies were not, and a changed default left them stating the old
    one. Setting the variable to the value a doc states must change nothing."""
    import re

    root = Path(__file__).resolve().parents[2]
    units = {"KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
    default = Settings.from_env(BASE)
    settings_source = (root / "core" / "settings.py").read_text(encoding="utf-8")
    stated, differ = [], []
    for doc in [root / "README.md", root / "devhost" / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = " ".join(doc.read_text(encoding="utf-8").split())
        for name, value, unit in re.findall(r"`(TRAPBATCH_[A-Z0-9_]+)`(?:[^`.;()]{0,40}\(default |,? \(?(?:default "
                                            r"(?:and most |is )?)?)(\d[\d,]*(?:\.\d+)?)(?: (KiB|MiB|GiB|s)\b)?", text):
            number = value.replace(",", "")
            if unit in units:
                number = str(int(float(number) * units[unit]))
            stated.append(name)
            if Settings.from_env({**BASE, name: number}) != default:
                differ.append(f"{doc.relative_to(root)}: {name} {value} {unit}".strip())
        # words: ``(default `trapbatch.operator`)``, ``By default (`TRAPBATCH_CALLER_AUTH=none`)``, ``, `auto` by
        # default``; of the variables core/settings.py reads (the worker's own are checked where they are read)
        words = re.findall(r"`(TRAPBATCH_[A-Z0-9_]+)`[^`.;()]{0,40}\(default `([^`]+)`", text)
        words += re.findall(r"[Bb]y default \(`(TRAPBATCH_[A-Z0-9_]+)=([^`]+)`\)", text)
        words += re.findall(r"`(TRAPBATCH_[A-Z0-9_]+)`, `([^`]+)` by default", text)
        for name, value in words:
            if f'"{name}"' not in settings_source:
                continue
            stated.append(name)
            if Settings.from_env({**BASE, name: value}) != default:
                differ.append(f"{doc.relative_to(root)}: {name} {value}")
    assert len(stated) >= 15, stated  # the parse still finds them
    assert differ == []


def test_every_settings_entry_says_what_an_unset_variable_means() -> None:
    """An entry that names a variable but not what leaving it out does leaves the operator guessing:
    TRAPBATCH_MODEL_CACHE said only "where workers cache model files", while an unset one is the worker user's
    ``~/.cache/trapbatch/models`` and Azure Batch nodes never get it (they cache in the node's shared folder). Each
    entry says its default (or ``unset``), or is one of those below, which name a resource or a secret that has none
    (infra/ sets them, or leaving them out turns their feature off, as their entries say)."""
    import re

    import core.settings as module
    from gpu_batch.worker import caches

    no_default = {"AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "TRAPBATCH_PUBLIC_WEB_URL",
                  "TRAPBATCH_MODELS_CONTAINER", "TRAPBATCH_WORKER_FAULTS", "TRAPBATCH_KEY_VAULT_URL",
                  "TRAPBATCH_LOCAL_SECRETS_FILE", "TRAPBATCH_POOL_VM_SIZE", "TRAPBATCH_NOTIFY_SECRET",
                  "TRAPBATCH_BATCH_ACCOUNT_URL", "TRAPBATCH_WORKER_IDENTITY"}
    doc = module.__doc__ or ""
    entries = {name: " ".join(text.split()) for name, text in
               re.findall(r"^    ((?:TRAPBATCH_|AzureWebJobsStorage)\w*)(.*?)(?=^    \S|\Z)", doc, re.S | re.M)}
    assert len(entries) >= 60, sorted(entries)
    unsaid = sorted(name for name, text in entries.items()
                    if name not in no_default and not re.search(r"\bdefault|\bunset\b", text, re.I))
    assert unsaid == []
    # the model cache's entry gives the folders the workers fall back to
    cache = entries["TRAPBATCH_MODEL_CACHE"]
    assert caches.model_cache_dir({}) == Path.home() / ".cache" / "trapbatch" / "models"
    assert "``~/.cache/trapbatch/models``" in cache
    node = "$AZ_BATCH_NODE_SHARED_DIR"
    assert f"``{caches.model_cache_dir({'AZ_BATCH_NODE_SHARED_DIR': node})}``" in cache


def test_the_settings_docstring_states_each_bound_the_code_refuses_past() -> None:
    """An operator reads a setting's range in core/settings.py's docstring (README sends them there) and learns it
    otherwise only from a refused start: TRAPBATCH_IMAGES_PER_SHARD above 100000, TRAPBATCH_PREVIEW_THRESHOLD below
    0.005 and TRAPBATCH_MAX_FAILED_FRACTION above 1 were refused without the docstring saying so. Found on the
    readers' calls in the module's source (``_int(..., maximum=)``, ``_fraction``, ``_threshold``, ``_positive``),
    so a bound added later fails here until its entry states it."""
    import ast
    import inspect
    import re

    import core.settings as module

    doc = module.__doc__ or ""
    entries = {name: " ".join(text.split()) for name, text in
               re.findall(r"^    (TRAPBATCH_[A-Z0-9_]+)(.*?)(?=^    \S|\Z)", doc, re.S | re.M)}

    def entry(name: str) -> str:
        if name in entries:
            return entries[name]
        shared = [text for head, text in entries.items()  # ``TRAPBATCH_POLL_MIN_S / _MAX_S``
                  for suffix in re.findall(r"^(?:/ _[A-Z0-9_]+ )*/ (_[A-Z0-9_]+)", text)
                  + re.findall(r"/ (_[A-Z0-9_]+)", text.split("  ")[0])
                  if any(head[:cut] + suffix == name for cut in [m.start() for m in re.finditer("_", head)])]
        assert shared, name
        return shared[0]

    def number(value: float) -> str:  # 100000, written 100000 or 100,000
        return rf"{value:g}" if value != int(value) else rf"{int(value):,}".replace(",", ",?")

    unstated = []
    for call in ast.walk(ast.parse(inspect.getsource(module))):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and len(call.args) >= 2
                and isinstance(call.args[1], ast.Constant) and str(call.args[1].value).startswith("TRAPBATCH_")):
            continue
        name, reader = str(call.args[1].value), call.func.id
        keywords = {k.arg: eval(compile(ast.Expression(k.value), "", "eval"), vars(module)) for k in call.keywords}
        text = entry(name)
        wanted: list[str] = []
        if reader == "_int" and keywords.get("maximum") is not None:
            wanted.append(rf"most {number(keywords['maximum'])}\b")
        if reader == "_int" and keywords.get("minimum", 1) > 1:
            wanted.append(rf"(minimum|at least) {number(keywords['minimum'])}\b")
        if reader == "_fraction":
            wanted.append(r"\b0 to 1\b|\(0-1\)")
        if reader == "_threshold":
            wanted.append(rf"{number(module.MIN_PREVIEW_THRESHOLD)} to 1\b")
        if reader == "_positive":
            wanted.append(r"0 or more|\b0 to\b" if keywords.get("allow_zero") else r"positive|above 0")
        unstated += [f"{name}: {pattern}" for pattern in wanted if not re.search(pattern, text)]
    # the readers of their own, each with its bound
    for name, pattern in (("TRAPBATCH_LINK_DAYS", rf"most {module.MAX_LINK_DAYS:g}\b"),
                          ("TRAPBATCH_CONFIRM_TIMEOUT_S", rf"most {module.CONFIRM_TIMEOUT_MAX_S}\b"),
                          ("TRAPBATCH_EVENT_INTERVAL_S", rf"0 to {module.MAX_EVENT_INTERVAL_S}\b"),
                          ("TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS", rf"at most {module.MAX_FOLDER_DETECTIONS}\b")):
        unstated += [f"{name}: {pattern}"] if not re.search(pattern, entry(name)) else []
    assert unstated == [], unstated


def test_every_variable_the_shipped_code_reads_is_named_in_the_docs() -> None:
    """A variable read by the app, the worker, devhost, the demo, the CLI or the deployment's hooks, but named in no
    document (README.md, docs/, devhost/README.md, this module's docstring), is one only its reader knows:
    ``TRAPBATCH_DEMO_OUTPUT`` (the demo empties that folder first), the worker's ``TRAPBATCH_WORKER_FAULT`` and the
    hooks' ``TRAPBATCH_WORKER_IMAGE_NAME`` were. The benchmarks (bench/) say their own."""
    import re
    import subprocess

    import core.settings as module

    root = Path(module.__file__ or "").resolve().parents[1]
    shipped = subprocess.run(["git", "ls-files", "--", "*.py", "*.sh", "*.ps1", "*.bicep", "Makefile", "host.json",
                              "azure.yaml", "infra/*.json", ":!tests/*", ":!*/tests/*", ":!bench/*"],
                             cwd=root, capture_output=True, text=True, check=True).stdout.split()
    code = "\n".join((root / f).read_text(encoding="utf-8", errors="replace") for f in shipped if (root / f).is_file())
    # a name as a string, a shell or PowerShell variable, or an assignment; not a constant's name (TRAPBATCH_OWN)
    read = set(re.findall(r'(?:"|\$\{?|\$env:)(TRAPBATCH_[A-Z0-9_]*[A-Z0-9])\b', code))
    read |= set(re.findall(r"\b(TRAPBATCH_[A-Z0-9_]*[A-Z0-9])=", code))
    docs = "\n".join(p.read_text(encoding="utf-8") for p in
                     [root / "README.md", root / "devhost" / "README.md", *sorted((root / "docs").glob("*.md"))])
    docs += "\n" + (module.__doc__ or "")
    named = set(re.findall(r"\bTRAPBATCH_[A-Z0-9_]*[A-Z0-9]\b", docs))
    for head, tails in re.findall(r"\b(TRAPBATCH_[A-Z0-9_]+)((?: / _[A-Z0-9_]+)+)", docs):  # ``_MIN_S / _MAX_S``
        for tail in re.findall(r"_[A-Z0-9_]+", tails):
            named |= {head[:cut] + tail for cut in [m.start() for m in re.finditer("_", head)][1:]}
    assert sorted(read - named) == [], "name them where their readers' users look"
    # and the other way: a variable the docs name that nothing reads (a renamed one) is set in vain; a name ending in
    # ``_`` is a family (``TRAPBATCH_CALLER_MAX_*``)
    every = set(re.findall(r"\bTRAPBATCH_[A-Z0-9_]*[A-Z0-9]\b", code))
    assert sorted(n for n in set(re.findall(r"\bTRAPBATCH_[A-Z0-9_]*[A-Z0-9]\b", docs)) if n not in every) == []


def test_each_range_takes_its_own_limits() -> None:
    """The bounds are inclusive where the docstring and the request's own range say so (a request may ask for the
    limit itself): the largest shard, the lowest preview threshold, a day's event interval, a 7-day link, a least
    poll delay equal to the most; and a TRAPBATCH_POLL_MIN_S above 300 s alone raises the most to it."""
    from core.requests import MAX_EVENT_INTERVAL_S, MAX_IMAGES_PER_SHARD, MIN_PREVIEW_THRESHOLD
    from core.settings import MAX_LINK_DAYS

    s = Settings.from_env({**BASE, "TRAPBATCH_IMAGES_PER_SHARD": str(MAX_IMAGES_PER_SHARD),
                           "TRAPBATCH_PREVIEW_THRESHOLD": str(MIN_PREVIEW_THRESHOLD),
                           "TRAPBATCH_EVENT_INTERVAL_S": str(MAX_EVENT_INTERVAL_S),
                           "TRAPBATCH_LINK_DAYS": str(MAX_LINK_DAYS),
                           "TRAPBATCH_POLL_MIN_S": "45", "TRAPBATCH_POLL_MAX_S": "45"})
    assert (s.knobs.images_per_shard, s.preview_threshold, s.event_interval_s, s.link_days) == (
        MAX_IMAGES_PER_SHARD, MIN_PREVIEW_THRESHOLD, MAX_EVENT_INTERVAL_S, MAX_LINK_DAYS)
    assert (s.knobs.poll_min_s, s.knobs.poll_max_s) == (45.0, 45.0)
    slow = Settings.from_env({**BASE, "TRAPBATCH_POLL_MIN_S": "600"}).knobs
    assert (slow.poll_min_s, slow.poll_max_s) == (600.0, 600.0)


def test_a_link_of_zero_days_is_refused() -> None:
    """A user delegation SAS valid for no time is no link: 0 is outside ``0 < days <= 7``."""
    with pytest.raises(ConfigError, match="TRAPBATCH_LINK_DAYS"):
        Settings.from_env({**BASE, "TRAPBATCH_LINK_DAYS": "0"})


def test_text_settings_are_read_without_surrounding_blanks() -> None:
    """An app setting pasted with a trailing space named a container no one created."""
    s = Settings.from_env({**BASE, "TRAPBATCH_CONTAINER": " mystate ", "TRAPBATCH_POOL": " local "})
    assert (s.container, s.pool) == ("mystate", "local")


def test_max_task_seconds_is_refused_past_batchs_180_day_task_lifetime() -> None:
    """Batch ends a task 180 days after it was added, whatever its maxWallClockTime (Tasks - Create Task, REST
    reference); a larger limit promised what Batch never keeps, and a huge one overflowed ``timedelta`` only when
    the first shard was sent, long after the app started."""
    limit = Settings.from_env({**BASE, "TRAPBATCH_MAX_TASK_SECONDS": str(180 * 86400)}).knobs.max_task_seconds
    assert limit == 15552000
    with pytest.raises(ConfigError, match=r"TRAPBATCH_MAX_TASK_SECONDS=15552001 is above the maximum 15552000"):
        Settings.from_env({**BASE, "TRAPBATCH_MAX_TASK_SECONDS": "15552001"})


def test_the_marker_host_grace_is_the_platforms_unless_a_test_shortens_it() -> None:
    """``TRAPBATCH_MARKER_HOST_GONE_AFTER_S`` is for tests (devhost's scaled Event Grid schedule): by default the
    grace api.arrivals counts across Event Grid's deliveries is the platform's DNS blip, 120 s."""
    from gpu_batch.storage_refs import HOST_GONE_AFTER_S

    assert Settings.from_env({"AzureWebJobsStorage": "x"}).marker_host_gone_after_s == HOST_GONE_AFTER_S == 120.0
    env = {"AzureWebJobsStorage": "x", "TRAPBATCH_MARKER_HOST_GONE_AFTER_S": "1.5"}
    assert Settings.from_env(env).marker_host_gone_after_s == 1.5
    with pytest.raises(ConfigError, match="TRAPBATCH_MARKER_HOST_GONE_AFTER_S"):
        Settings.from_env({**env, "TRAPBATCH_MARKER_HOST_GONE_AFTER_S": "0"})
