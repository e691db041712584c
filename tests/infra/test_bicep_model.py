"""What infra/ must contain, read from the parsed Bicep (pycep-parser, the parser checkov uses).

No Azure subscription is reachable from our build machines, so `bicep build` and a deployment are never run here
(docs/deploy.md lists what that leaves unverified). These tests stand in for the parts a compiler and a reviewer
would check: every module is wired to parameters and outputs that exist, no loop runs over a value known only
during the deployment (BCP178, what broke the previous template), and the resources, app settings and role
assignments the app needs are all there.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpu_batch.pool.azure_batch import WORKER_PYTHON
from tests.infra.bicep_model import REPO, Template, accessor_chain, loops, parse_files, walk

# Built-in role definition ids (role-based-access-control/built-in-roles.md; the Batch roles:
# articles/batch/batch-role-based-access-control.md, "Azure Batch built-in RBAC roles").
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "48e5e92e-a480-4e71-aa9c-2778f4c13781": "Azure Batch Job Submitter",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
}

# (principal, scope resource type, role) that the app, the GPU nodes and the deploying user need.
EXPECTED_ROLES = {
    ("app", "Microsoft.Storage/storageAccounts", "Storage Blob Data Owner"),
    ("app", "Microsoft.Storage/storageAccounts", "Storage Queue Data Contributor"),
    ("app", "Microsoft.Storage/storageAccounts", "Storage Table Data Contributor"),
    ("app", "Microsoft.Batch/batchAccounts", "Azure Batch Job Submitter"),
    ("app", "Microsoft.KeyVault/vaults", "Key Vault Secrets User"),
    ("app", "Microsoft.Insights/components", "Monitoring Metrics Publisher"),
    ("app", "Microsoft.EventGrid/topics", "EventGrid Data Sender"),
    # the nodes read the whole account (images, models) and write only the state container (results, logs):
    # tests/infra/test_role_coverage.py has the operations behind each role
    ("node", "Microsoft.Storage/storageAccounts", "Storage Blob Data Reader"),
    ("node", "Microsoft.Storage/storageAccounts/blobServices/containers", "Storage Blob Data Contributor"),
    ("node", "Microsoft.KeyVault/vaults", "Key Vault Secrets User"),
    ("node", "Microsoft.ContainerRegistry/registries", "AcrPull"),
    ("user", "Microsoft.Storage/storageAccounts", "Storage Blob Data Contributor"),
    ("user", "Microsoft.KeyVault/vaults", "Key Vault Secrets Officer"),
    ("user", "Microsoft.Batch/batchAccounts", "Azure Batch Job Submitter"),  # az batch job stop / enable
}

# App settings the Functions app reads in Azure (core/settings.py; host.json's %TRAPBATCH_TASK_HUB%;
# gpu_batch/pool/azure_batch.py for the nodes' identity resource id).
REQUIRED_APP_SETTINGS = {
    "TRAPBATCH_TASK_HUB", "TRAPBATCH_CONTAINER", "TRAPBATCH_PUBLIC_WEB_URL", "TRAPBATCH_DROP_TRIGGER_SOURCE",
    "TRAPBATCH_POOL", "TRAPBATCH_MODEL", "TRAPBATCH_BATCH_ACCOUNT_URL", "TRAPBATCH_BATCH_POOL_ID",
    "TRAPBATCH_WORKER_IMAGE", "TRAPBATCH_WORKER_IDENTITY", "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID",
    "TRAPBATCH_STORAGE_ACCOUNT_URL", "TRAPBATCH_KEY_VAULT_URL", "TRAPBATCH_APP_KEY_VAULT_URL",
    "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT",
    "TRAPBATCH_POOL_VM_SIZE",
}
REQUIRED_HOST_SETTINGS = {
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri", "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Settings Flex Consumption takes from functionAppConfig or rejects (functions-app-settings.md, "Flex Consumption
# plan deprecations"): none may appear anywhere in infra/.
FLEX_DEPRECATED = ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                   "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT",
                   "ENABLE_ORYX_BUILD", "linuxFxVersion",
                   # siteConfig properties ARM refuses on a Flex site: "The following list of 2 site configuration
                   # properties (Site.SiteConfig.FtpsState, Site.SiteConfig.LinuxFxVersion) for Flex Consumption
                   # sites is invalid" (reported deployments; Azure/azure-cli#31414 lists more)
                   "ftpsState", "use32BitWorkerProcess", "preWarmedInstanceCount", "netFrameworkVersion",
                   "functionsRuntimeScaleMonitoringEnabled",
                   # "Site.SiteConfig.FunctionAppScaleLimit ... for Flex Consumption sites is invalid"
                   # (Azure/azure-functions-host#10643): scale is functionAppConfig.scaleAndConcurrency's
                   "functionAppScaleLimit",
                   # the rest of the deprecations table (site properties and app settings a Flex app must not set)
                   "isReserved", "alwaysOn", "containerSize", "javaVersion", "powerShellVersion", "windowsFxVersion",
                   "WEBSITE_NODE_DEFAULT_VERSION", "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT",
                   "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
                   # and the table's networking rows (functions-app-settings.md at MicrosoftDocs-azure-docs 025a55b)
                   "WEBSITE_CONTENTOVERVNET", "WEBSITE_DNS_SERVER", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
                   "WEBSITE_SKIP_CONTENTSHARE_VALIDATION", "WEBSITE_VNET_ROUTE_ALL", "IsXenon",
                   "vnetBackupRestoreEnabled", "vnetContentShareEnabled", "vnetImagePullEnabled", "vnetRouteAllEnabled")


def main(templates: dict[str, Template]) -> Template:
    return templates["main.bicep"]


def module_file(templates: dict[str, Template], symbol: str) -> Template:
    path = main(templates).modules[symbol]["detail"]["path"]
    return templates[path]


def module_param(templates: dict[str, Template], symbol: str, name: str) -> Any:
    return main(templates).body(symbol)["params"][name]


def chain(expr: Any) -> list[str]:
    found = accessor_chain(expr)
    assert found is not None, f"not a symbol reference: {expr!r}"
    return found


# ---------------------------------------------------------------------------------------------- compiler stand-ins
def test_every_bicep_file_parses() -> None:
    """With pycep-parser, the parser checkov scans with: a file it cannot read would go unscanned, silently."""
    from tests.infra.bicep_model import bicep_files

    files = bicep_files()
    parsed = parse_files(files)
    assert len(files) >= 10 and parsed["_pycep_version"]
    errors = {path: result["error"] for path, result in parsed.items() if not path.startswith("_") and not result["ok"]}
    assert not errors, errors


def test_targets_subscription_and_creates_the_resource_group(templates: dict[str, Template]) -> None:
    m = main(templates)
    assert m.data["globals"]["scope"]["value"] == "subscription"
    (rg,) = m.of_type("Microsoft.Resources/resourceGroups").values()
    assert all(m.body(s)["scope"] == "rg" for s in m.modules), "every module deploys into the resource group"
    assert rg["location"] == "location"


def test_every_module_is_wired_to_parameters_and_outputs_that_exist(templates: dict[str, Template]) -> None:
    """What `bicep build` would say first: unknown module parameters, missing required ones, unknown outputs."""
    m = main(templates)
    for symbol, module in m.modules.items():
        target = module_file(templates, symbol)
        passed = set(m.body(symbol)["params"])
        declared = set(target.params)
        assert passed <= declared, f"{symbol}: {target.name} has no parameter(s) {passed - declared}"
        required = {p for p, spec in target.params.items() if "default" not in spec}
        assert required <= passed, f"{symbol}: required parameter(s) {required - passed} of {target.name} not passed"
    # every `<module>.outputs.<name>` in main.bicep names an output of that module's file
    for item in walk(m.data):
        ref = accessor_chain(item)
        if ref and len(ref) >= 3 and ref[0] in m.modules and ref[1] == "outputs":
            target = module_file(templates, ref[0])
            assert ref[2] in target.outputs, f"main.bicep uses {'.'.join(ref)}, not an output of {target.name}"


def runtime_loops(t: Template) -> list[str]:
    """Loops whose iterated value names a resource or module of the same file (BCP178)."""
    bad = []
    runtime = t.runtime_symbols()
    for loop in loops(t.data):
        detail = loop["loop_type"].get("detail", {})
        iterated = {k: v for k, v in detail.items() if k not in ("item_name", "index_name")}
        names = t.identifiers(iterated) & runtime
        if names:
            bad.append(f"{t.name}: loop over {sorted(names)}")
    return bad


def test_no_loop_iterates_over_a_value_known_only_during_the_deployment(templates: dict[str, Template]) -> None:
    """BCP178: a `for` must iterate over values known when the deployment starts (literals, parameters, variables
    made of them), never over a resource's properties or a module's outputs. In a module file the parameters count as
    known: the parent's values are fixed when the module's nested deployment starts."""
    problems = [p for t in templates.values() for p in runtime_loops(t)]
    assert not problems, problems


def test_the_loop_check_catches_the_previous_templates_mistake(tmp_path: Path) -> None:
    """The check above flags the loop of the old infra/main.bicep (a role assignment per principalId)."""
    old = tmp_path / "old.bicep"
    old.write_text("""
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'a'
  location: 'westeurope'
}
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: 'v'
}
resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in [appIdentity.properties.principalId]: {
  name: guid(vault.id, principal)
  scope: vault
  properties: {
    principalId: principal
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
  }
}]
""")
    parsed = parse_files([old])[str(old)]
    assert parsed["ok"], parsed
    assert runtime_loops(Template(old, parsed["template"])) != []


def test_role_assignment_names_use_no_runtime_values(templates: dict[str, Template]) -> None:
    """BCP120: a role assignment's name must be computable at the start (ids and parameters, never `.properties`)."""
    for t in templates.values():
        for symbol, body in t.of_type("Microsoft.Authorization/roleAssignments").items():
            for node in walk(body["name"]):
                ref = accessor_chain(node)
                assert not (ref and "properties" in ref), f"{t.name} {symbol}: name uses {'.'.join(ref or [])}"


# ---------------------------------------------------------------------------------------------- Functions app
def test_flex_consumption_plan_and_function_app(templates: dict[str, Template]) -> None:
    api = module_file(templates, "api")
    (plan,) = api.of_type("Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"} and plan["properties"]["reserved"] is True
    (app,) = api.of_type("Microsoft.Web/sites").values()
    assert app["kind"] == "functionapp,linux" and app["properties"]["httpsOnly"] is True
    assert app["identity"]["type"] == "UserAssigned"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"]["name"] == "python" and api.param_default(config["runtime"]["version"]) == "3.11"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer" and "deploymentContainerName" in storage["value"]
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert {"instanceMemoryMB", "maximumInstanceCount"} <= set(config["scaleAndConcurrency"])
    # 4 GB: a ten-million-image task's events step holds ~0.9 GB (bench/RESULTS.md) beside up to 7 more activities
    assert api.param_default("instanceMemoryMB") == 4096 and "instanceMemoryMB" not in str(main(templates).data)
    # azd finds the app to deploy the `api` service to by this tag (azure.yaml services.api)
    assert "azd-service-name" in str(app["tags"]) and api.param_default("serviceName") == "api"
    # the deployment container exists, and main passes the app its identity, not the nodes'
    m = main(templates)
    containers = m.resolve(module_param(templates, "storage", "containers"))
    assert module_param(templates, "api", "deploymentContainerName") in containers
    assert chain(module_param(templates, "api", "identityId")) == ["appIdentity", "outputs", "id"]


def app_settings(templates: dict[str, Template]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trapbatch's settings as main.bicep passes them, the host settings api.bicep adds)."""
    api = module_file(templates, "api")
    return module_param(templates, "api", "appSettings"), api.resolve("hostSettings")


def test_app_settings_are_complete_and_identity_based(templates: dict[str, Template]) -> None:
    api = module_file(templates, "api")
    (app,) = api.of_type("Microsoft.Web/sites").values()
    site_settings = app["properties"]["siteConfig"]["appSettings"]
    assert "loop_type" in site_settings, "siteConfig.appSettings is built from the two objects below"
    assert {"appSettings", "hostSettings"} <= api.identifiers(site_settings["loop_type"])
    trapbatch, host = app_settings(templates)
    assert REQUIRED_APP_SETTINGS <= set(trapbatch), REQUIRED_APP_SETTINGS - set(trapbatch)
    assert REQUIRED_HOST_SETTINGS <= set(host), REQUIRED_HOST_SETTINGS - set(host)
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert trapbatch["TRAPBATCH_POOL"] == "azure_batch" and trapbatch["TRAPBATCH_DROP_TRIGGER_SOURCE"] == "EventGrid"
    assert not any(k.startswith("AzureWebJobsStorage") and k.endswith(("ConnectionString", "AccountKey"))
                   or k == "AzureWebJobsStorage" for k in {**trapbatch, **host}), "no key-based storage setting"
    assert "Authorization=AAD" in host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]


def test_public_web_url_is_the_static_website_endpoint(templates: dict[str, Template]) -> None:
    trapbatch, _ = app_settings(templates)
    assert chain(trapbatch["TRAPBATCH_PUBLIC_WEB_URL"]) == ["storage", "outputs", "webEndpoint"]
    storage = module_file(templates, "storage")
    assert chain(storage.outputs["webEndpoint"]["value"]) == ["storage", "properties", "primaryEndpoints", "web"]


def test_the_app_is_told_the_pool_vm_size_the_pool_is_made_of(templates: dict[str, Template]) -> None:
    """The app prices each task's node time at the list price of the pool's size (core/cost.py): it must be the size
    the Batch module builds the pool with, not a second parameter that could differ."""
    trapbatch, _ = app_settings(templates)
    assert trapbatch["TRAPBATCH_POOL_VM_SIZE"] == module_param(templates, "batch", "vmSize") == "gpuVmSize"


def test_the_app_is_told_the_most_nodes_the_pool_scales_to(templates: dict[str, Template]) -> None:
    """A dry run estimates wall time over TRAPBATCH_POOL_NODES nodes (core/estimate.py, default 1): it must be the
    pool's own maximum, or every deployed estimate assumes one node while the pool scales to eight."""
    trapbatch, _ = app_settings(templates)
    assert module_param(templates, "batch", "maxNodes") == "maxGpuNodes"
    assert trapbatch["TRAPBATCH_POOL_NODES"] == {"function": {"type": "string",
                                                             "parameters": {"value_to_convert": "maxGpuNodes"}}}


def test_every_trapbatch_setting_is_one_the_code_reads(templates: dict[str, Template]) -> None:
    """A typo in a setting name would be silently ignored by the app: each name must occur in the app's code."""
    code = "\n".join(p.read_text() for d in ("core", "adapters", "activities", "api", "gpu_batch")
                     for p in (REPO / d).rglob("*.py") if "tests" not in p.parts)
    code += (REPO / "host.json").read_text()
    trapbatch, _ = app_settings(templates)
    unknown = [name for name in trapbatch if name not in code]
    assert not unknown, f"app settings no code reads: {unknown}"


def test_the_settings_load_as_the_app_loads_them(templates: dict[str, Template]) -> None:
    """core.settings.Settings.from_env accepts exactly what infra sets (values stand in for deployment outputs)."""
    from core.settings import Settings, drop_trigger_source

    trapbatch, host = app_settings(templates)
    env = {name: value if isinstance(value, str) and not value.isidentifier() else f"https://{name.lower()}.example/"
           for name, value in {**trapbatch, **host}.items()}
    env.update({k: v for k, v in trapbatch.items() if k in ("TRAPBATCH_POOL", "TRAPBATCH_DROP_TRIGGER_SOURCE")})
    env["TRAPBATCH_SOURCE_ACCOUNTS"] = ""
    env["TRAPBATCH_MODEL"] = "MDV5A"
    main = next(t for t in templates.values() if t.name == "main.bicep")
    env["TRAPBATCH_POOL_NODES"] = str(main.params["maxGpuNodes"]["default"])  # string(maxGpuNodes)
    env["TRAPBATCH_WORKER_TUNING"] = main.params["workerTuning"]["default"]  # workerTuning: none unless set
    # residentWorker ? '1' : '0': both words must be ones the app's on/off settings take (core.settings._bool)
    resident = trapbatch["TRAPBATCH_WORKER_RESIDENT"]["operator"]["operands"]
    assert resident["condition"] == "residentWorker", resident
    assert Settings.from_env({**env, "TRAPBATCH_WORKER_RESIDENT": resident["true_value"]}).worker_resident
    env["TRAPBATCH_WORKER_RESIDENT"] = resident["false_value"]
    settings = Settings.from_env(env)
    assert settings.pool == "azure_batch" and settings.storage_connection.startswith("identity:https://")
    assert settings.knobs.pool_nodes == 8 and settings.worker_tuning == ()
    assert drop_trigger_source(env) == "EventGrid"


def test_every_app_setting_name_reaches_the_linux_app_as_written(templates: dict[str, Template]) -> None:
    """The app reads its settings from the environment by these exact names (core/settings.py), and on Linux App
    Service "any periods in the app setting name are replaced with a _ (single underscore)" (nested keys are written
    ``__``; MicrosoftDocs/azure-docs articles/app-service/configure-common.md, "Configure app settings"): a name
    with anything but letters, digits and underscores would reach Python under another name. None may be one the
    Flex Consumption plan takes from functionAppConfig or refuses (FLEX_DEPRECATED)."""
    trapbatch, host = app_settings(templates)
    # callerSettings is empty(authClientId) ? {} : {...}: both branches; a quoted key ('a.b') keeps its quotes here
    callers = module_file(templates, "api").resolve("callerSettings")["operator"]["operands"]
    names = {n.strip("'") for n in (*trapbatch, *host, *callers["true_value"], *callers["false_value"])}
    assert "TRAPBATCH_CALLER_AUTH" in names, callers
    assert not [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    assert not names & set(FLEX_DEPRECATED)


def test_docs_deploy_md_lists_the_app_settings_infra_sets_with_their_fixed_values(
        templates: dict[str, Template]) -> None:
    """docs/deploy.md "What gets deployed" lists the app settings the template sets ("The app settings are the names
    of core/settings.py: ...") so an operator knows which ones ``azd provision`` owns and which are "Settings you add
    yourself"; nothing tied the list to main.bicep's ``appSettings`` (and api.bicep's ``callerSettings``), so a
    setting added to the template, or dropped from it, left the operator's list wrong. A value the list gives
    (``TRAPBATCH_POOL=azure_batch``) is the template's."""
    trapbatch, _ = app_settings(templates)
    # empty(authClientId) ? {} : {...}: the settings with authClientId
    callers = module_file(templates, "api").resolve("callerSettings")["operator"]["operands"]["false_value"]
    template = {**trapbatch, **{name.strip("'"): value for name, value in callers.items()}}
    doc = " ".join((REPO / "docs" / "deploy.md").read_text(encoding="utf-8").split())
    listed = doc.split("The app settings are the names of `core/settings.py`:", 1)[1].split("plus the identity", 1)[0]
    named = dict(re.findall(r"`(TRAPBATCH_[A-Z0-9_]+)(?:=(\w+))?`", listed))
    assert sorted(set(named) ^ set(template)) == [], "docs/deploy.md and infra/ differ on these settings"
    assert {name: value for name, value in named.items() if value} == \
        {name: template[name] for name, value in named.items() if value}


def test_every_azd_value_the_docs_commands_use_is_an_output_of_the_template_or_azds_own(
        templates: dict[str, Template]) -> None:
    """The docs' commands take resource names from azd's environment (``$AZURE_BATCH_ACCOUNT_NAME``,
    ``azd env get-value EVENTGRID_TASK_EVENTS_TOPIC_NAME``): azd writes each output of main.bicep there after a
    provision (learn.microsoft.com/azure/developer/azure-developer-cli/manage-environment-variables: the ``.env``
    file "is also updated automatically during azd operations ... capturing outputs from infrastructure templates"),
    beside the values azd sets itself when the environment is made. An output renamed or removed left a command that
    runs with an empty name (``az keyvault secret set --vault-name ""``) and fails far from the cause."""
    azds_own = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_PRINCIPAL_ID"}
    outputs = set(main(templates).outputs)
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    used = set(re.findall(r"\$\{?((?:AZURE|SERVICE|EVENTGRID|INCOMING|APPLICATIONINSIGHTS)_[A-Z0-9_]+)", docs))
    used |= set(re.findall(r"azd env get-value ([A-Z][A-Z0-9_]+)", docs))
    assert len(used) >= 8, sorted(used)  # the parse still finds them
    assert sorted(used - outputs - azds_own) == []


def test_host_json_task_hub_setting_is_set(templates: dict[str, Template]) -> None:
    hub = re.search(r"%(\w+)%", (REPO / "host.json").read_text())
    assert hub and hub.group(1) in app_settings(templates)[0]


def test_host_json_follows_the_durable_docs_for_flex_consumption() -> None:
    """durable/durable-functions-azure-storage-provider.md, Flex Consumption: "Reduce the queue polling interval to 10
    seconds or less. Since this plan type is more sensitive to queue polling delays"; and functionTimeout at Flex's
    default of 30 min (functions-scale.md): a ten-million-image task's longest activities take minutes of CPU beside
    up to 7 others, and a timeout restarts the worker, failing every activity it runs."""
    host = json.loads((REPO / "host.json").read_text())
    durable = host["extensions"]["durableTask"]
    assert durable["storageProvider"]["maxQueuePollingInterval"] <= "00:00:10"
    assert host["functionTimeout"] == "00:30:00"


# Every key the Functions host and the Durable extension read from host.json. Both bind with .NET configuration
# (names compared ignoring case) and skip a key they do not know without a word: a misspelt key is a setting silently
# left at its default. Sources: Azure/azure-functions-host src/WebJobs.Script/Config/ConfigurationSectionNames.cs and
# ScriptJobHostOptions.cs (bound from the root of host.json, ScriptJobHostOptionsSetup), the WebJobs SDK's
# "concurrency" and "singleton" sections; Azure/azure-functions-durable-extension
# src/WebJobs.Extensions.DurableTask/Options/DurableTaskOptions.cs, AzureStorageOptions.cs (storageProvider, with
# the provider's "type"), TraceOptions.cs (tracing) at a7c6d69 (2024-10), plus the later keys that
# durable-functions-host-json-settings.md lists (defaultVersion, versionMatchStrategy, versionFailureStrategy,
# queueClientMessageEncoding), which a newer extension from the bundle range reads; docs functions-host-json.md for
# logging and extensionBundle.
HOST_JSON_KEYS: dict[str, set[str]] = {
    "": {"version", "logging", "aggregator", "scale", "healthMonitor", "extensionBundle", "managedDependency",
         "extensions", "httpWorker", "customHandler", "retry", "sendCanceledInvocationsToWorker", "telemetryMode",
         "metadataProviderTimeout", "fileWatchingEnabled", "watchDirectories", "watchFiles", "functions",
         "functionTimeout", "concurrency", "singleton"},
    "logging": {"fileLoggingMode", "logLevel", "applicationInsights", "console"},
    "extensionBundle": {"id", "version"},
    "extensions": {"http", "durableTask", "blobs", "queues", "tables", "eventGrid", "serviceBus", "eventHubs",
                   "cosmosDB"},
    "extensions.durableTask": {
        "hubName", "httpSettings", "storageProvider", "tracing", "notifications", "maxConcurrentActivityFunctions",
        "maxConcurrentOrchestratorFunctions", "maxConcurrentEntityFunctions", "localRpcEndpointEnabled",
        "maxEntityOperationBatchSize", "extendedSessionsEnabled", "extendedSessionIdleTimeoutInSeconds",
        "maxOrchestrationActions", "overridableExistingInstanceStates", "entityMessageReorderWindowInMinutes",
        "useGracefulShutdown", "rollbackEntityOperationsOnExceptions", "throwStatusExceptionsOnRaiseEvent",
        "useAppLease", "storeInputsInOrchestrationHistory", "appLeaseOptions", "defaultVersion",
        "versionMatchStrategy", "versionFailureStrategy"},
    "extensions.durableTask.storageProvider": {
        "type", "connectionName", "connectionStringName", "controlQueueBatchSize", "partitionCount",
        "controlQueueBufferThreshold", "controlQueueVisibilityTimeout", "workItemQueueVisibilityTimeout",
        "trackingStoreConnectionName", "trackingStoreConnectionStringName", "trackingStoreNamePrefix",
        "fetchLargeMessagesAutomatically", "maxQueuePollingInterval", "useLegacyPartitionManagement",
        "useTablePartitionManagement", "allowReplayingTerminalInstances", "queueClientMessageEncoding"},
    "extensions.durableTask.tracing": {"traceInputsAndOutputs", "allowVerboseLinuxTelemetry", "traceReplayEvents",
                                       "distributedTracingEnabled", "distributedTracingProtocol", "version"},
}


def unknown_host_json_keys(doc: dict[str, Any], path: str = "") -> list[str]:
    """Keys of ``doc`` under a section of HOST_JSON_KEYS that the host or the extension does not read (any case)."""
    known = {k.lower() for k in HOST_JSON_KEYS.get(path, set())}
    unknown = []
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        if key.lower() not in known:
            unknown.append(where)
        elif isinstance(value, dict):
            section = next((s for s in HOST_JSON_KEYS if s.lower() == where.lower()), None)
            if section is not None:
                unknown += unknown_host_json_keys(value, section)
    return unknown


def test_every_host_json_key_is_one_the_host_or_the_durable_extension_reads() -> None:
    """A misspelt host.json key (maxConcurrentActivityFunction, maxQueuePollInterval) is skipped without an error on
    Azure and on devhost alike, leaving the setting at its default (100 activities a host, 30 s polls)."""
    host = json.loads((REPO / "host.json").read_text())
    assert not unknown_host_json_keys(host), unknown_host_json_keys(host)
    misspelt = json.loads(json.dumps(host))
    durable = misspelt["extensions"]["durableTask"]
    durable["maxConcurrentActivityFunction"] = durable.pop("maxConcurrentActivityFunctions")
    durable["storageProvider"]["MAXQUEUEPOLLINGINTERVAL"] = durable["storageProvider"].pop("maxQueuePollingInterval")
    misspelt["functionTimout"] = misspelt.pop("functionTimeout")
    assert unknown_host_json_keys(misspelt) == ["extensions.durableTask.maxConcurrentActivityFunction",
                                                "functionTimout"]


def test_no_flex_deprecated_setting_anywhere(templates: dict[str, Template]) -> None:
    """Checked on the parsed templates (keys and values), so comments may still name these settings."""
    for t in templates.values():
        texts = [k for item in walk(t.data) if isinstance(item, dict) for k in item] + \
                [item for item in walk(t.data) if isinstance(item, str)]
        assert not [s for s in FLEX_DEPRECATED for text in texts if s in text], t.name


# ---------------------------------------------------------------------------------------------- monitoring, events
def test_application_insights_on_log_analytics_without_local_auth(templates: dict[str, Template]) -> None:
    mon = module_file(templates, "monitoring")
    (ai,) = mon.of_type("Microsoft.Insights/components").values()
    assert ai["properties"]["DisableLocalAuth"] is True
    assert chain(ai["properties"]["WorkspaceResourceId"]) == ["logAnalytics", "id"]
    assert mon.of_type("Microsoft.OperationalInsights/workspaces")
    assert chain(module_param(templates, "api", "applicationInsightsConnectionString")) == [
        "monitoring", "outputs", "connectionString"]


def test_event_grid_system_topic_on_the_storage_account(templates: dict[str, Template]) -> None:
    eg = module_file(templates, "eventGrid")
    (topic,) = eg.of_type("Microsoft.EventGrid/systemTopics").values()
    assert topic["properties"] == {"source": "storageAccountId", "topicType": "Microsoft.Storage.StorageAccounts"}
    assert chain(module_param(templates, "eventGrid", "storageAccountId")) == ["storage", "outputs", "id"]
    m = main(templates)
    assert chain(m.outputs["EVENTGRID_SYSTEM_TOPIC_NAME"]["value"]) == ["eventGrid", "outputs", "name"]


def test_task_events_topic_takes_cloudevents_with_entra_id_only(templates: dict[str, Template]) -> None:
    """The custom topic the app publishes "task ended" events to (core/task_events.py): CloudEvents 1.0 input (what
    the app posts), no access keys (local auth off: the app's identity publishes as EventGrid Data Sender, see
    test_role_assignments), and its endpoint is the app setting that turns publishing on."""
    events = module_file(templates, "taskEvents")
    (topic,) = events.of_type("Microsoft.EventGrid/topics").values()
    props = topic["properties"]
    assert props["inputSchema"] == "CloudEventSchemaV1_0" and props["disableLocalAuth"] is True
    assert props["minimumTlsVersionAllowed"] == "1.2"
    assert chain(events.outputs["endpoint"]["value"]) == ["topic", "properties", "endpoint"]
    trapbatch, _ = app_settings(templates)
    assert chain(trapbatch["TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT"]) == ["taskEvents", "outputs", "endpoint"]
    assert chain(module_param(templates, "rbac", "taskEventsTopicName")) == ["taskEvents", "outputs", "name"]


def test_containers_match_the_app_layout(templates: dict[str, Template]) -> None:
    from gpu_batch import layout

    m = main(templates)
    containers = {m.resolve(c) for c in m.resolve(module_param(templates, "storage", "containers"))}
    assert {layout.DEFAULT_STATE_CONTAINER, layout.INCOMING_CONTAINER} <= containers
    assert m.resolve(m.outputs["INCOMING_CONTAINER_NAME"]["value"]) == layout.INCOMING_CONTAINER
    assert app_settings(templates)[0]["TRAPBATCH_WEB_CONTAINER"] == layout.STATIC_WEBSITE_CONTAINER


def test_storage_account_allows_no_key_or_anonymous_access(templates: dict[str, Template]) -> None:
    st = module_file(templates, "storage")
    (acct,) = st.of_type("Microsoft.Storage/storageAccounts").values()
    props = acct["properties"]
    assert props["allowSharedKeyAccess"] is False and props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2" and acct["kind"] == "StorageV2"


# ---------------------------------------------------------------------------------------------- registry, Batch
def test_container_registry_without_admin_user(templates: dict[str, Template]) -> None:
    reg = module_file(templates, "registry")
    (acr,) = reg.of_type("Microsoft.ContainerRegistry/registries").values()
    assert acr["properties"]["adminUserEnabled"] is False
    trapbatch, _ = app_settings(templates)
    assert trapbatch["TRAPBATCH_WORKER_IMAGE"] == "${registry.outputs.loginServer}/${workerImageName}"
    assert main(templates).resolve("workerImageName").startswith("trapbatch-worker:")


def test_batch_account_is_entra_id_only(templates: dict[str, Template]) -> None:
    b = module_file(templates, "batch")
    (account,) = b.of_type("Microsoft.Batch/batchAccounts").values()
    assert account["properties"]["allowedAuthenticationModes"] == ["AAD"]
    assert account["properties"]["poolAllocationMode"] == "BatchService"


def test_gpu_pool_pulls_from_acr_with_the_node_identity(templates: dict[str, Template]) -> None:
    b = module_file(templates, "batch")
    (pool,) = b.of_type("Microsoft.Batch/batchAccounts/pools").values()
    assert pool["identity"]["type"] == "UserAssigned"
    assert [k.strip("'") for k in pool["identity"]["userAssignedIdentities"]] == ["${nodeIdentityId}"]
    vm = pool["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"]
    containers = vm["containerConfiguration"]
    assert containers["type"] == "DockerCompatible"
    assert containers["containerRegistries"] == [{"registryServer": "registryServer",
                                                  "identityReference": {"resourceId": "nodeIdentityId"}}]
    assert chain(module_param(templates, "batch", "nodeIdentityId")) == ["nodeIdentity", "outputs", "id"]
    assert chain(module_param(templates, "batch", "registryServer")) == ["registry", "outputs", "loginServer"]
    assert pool["properties"]["taskSlotsPerNode"] == 1
    m = main(templates)
    assert m.param_default(module_param(templates, "batch", "vmSize")) == "Standard_NC4as_T4_v3"
    # the pool id the app submits to is the pool's name
    assert chain(app_settings(templates)[0]["TRAPBATCH_BATCH_POOL_ID"]) == ["batch", "outputs", "poolId"]
    assert chain(b.outputs["poolId"]["value"]) == ["pool", "name"]


def test_gpu_pool_image_and_node_agent_are_a_pair_batch_supports_past_2027(templates: dict[str, Template]) -> None:
    """Batch ends the batch.node.ubuntu 22.04 agent on 2027-06-30 and names microsoft-dsvm:ubuntu-hpc:2404 as the
    move for container pools (Azure/Batch#200); an image and an agent of different Ubuntu releases make Batch refuse
    the pool, so the two defaults must change together."""
    b = module_file(templates, "batch")
    (pool,) = b.of_type("Microsoft.Batch/batchAccounts/pools").values()
    vm = pool["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"]
    assert (vm["imageReference"]["publisher"], vm["imageReference"]["offer"], vm["imageReference"]["sku"],
            vm["nodeAgentSkuId"]) == ("imagePublisher", "imageOffer", "imageSku", "nodeAgentSkuId")
    image = tuple(b.param_default(n) for n in ("imagePublisher", "imageOffer", "imageSku"))
    assert image == ("microsoft-dsvm", "ubuntu-hpc", "2404")
    assert b.param_default("nodeAgentSkuId") == "batch.node.ubuntu 24.04"
    # nothing in main.bicep overrides them with the retiring pair
    assert not {"imageSku", "nodeAgentSkuId"} & set(main(templates).body("batch")["params"])


def _eval_formula(formula: str, pending: float) -> dict[str, Any]:
    """Evaluate the autoscale formula the way we read batch-automatic-scaling.md, with every $PendingTasks sample
    equal to ``pending`` and all samples present. Our reading, not Batch's evaluator: it checks the arithmetic of the
    Spot/dedicated split, nothing about Batch itself."""
    class Metric:
        def GetSample(self, *_: Any) -> list[float]:  # noqa: N802 - Batch's method name
            return [pending] * 10

        def GetSamplePercent(self, *_: Any) -> float:  # noqa: N802
            return 100.0

    def flat(args: tuple[Any, ...]) -> list[float]:
        out: list[float] = []
        for a in args:
            out.extend(a if isinstance(a, list) else [a])
        return out

    scope: dict[str, Any] = {"PendingTasks": Metric(), "TimeInterval_Minute": 60.0, "taskcompletion": "taskcompletion",
                             "max": lambda *a: max(flat(a)), "min": lambda *a: min(flat(a)),
                             "avg": lambda *a: sum(flat(a)) / len(flat(a))}
    for statement in filter(None, (s.strip() for s in formula.replace("\\n", "\n").split(";"))):
        lhs, rhs = (part.strip() for part in statement.split("=", 1))
        rhs = rhs.replace("$", "")
        if "?" in rhs:
            cond, rest = rhs.split("?", 1)
            yes, no = rest.split(":", 1)
            rhs = f"({yes}) if ({cond}) else ({no})"
        scope[lhs.lstrip("$")] = eval(rhs, {"__builtins__": {}}, scope)  # noqa: S307 - our own formula text
    return scope


@pytest.mark.parametrize("pending, spot, dedicated", [(0, 0, 0), (3, 3, 0), (6, 6, 0), (7, 6, 1), (50, 6, 2)])
def test_autoscale_fills_spot_first_then_dedicated(templates: dict[str, Template], pending: int, spot: int,
                                                   dedicated: int) -> None:
    """Defaults: 8 nodes at most, 75% Spot -> up to 6 Spot, then up to 2 dedicated; none without work."""
    m, b = main(templates), module_file(templates, "batch")
    max_nodes = m.param_default(module_param(templates, "batch", "maxNodes"))
    percent = m.param_default(module_param(templates, "batch", "spotPercent"))
    max_spot = max_nodes * percent // 100  # Bicep's int division
    formula = b.resolve("autoScaleFormula").replace("${maxSpotNodes}", str(max_spot)) \
        .replace("${maxDedicatedNodes}", str(max_nodes - max_spot))
    result = _eval_formula(formula, pending)
    assert (result["TargetLowPriorityNodes"], result["TargetDedicatedNodes"]) == (spot, dedicated)
    assert result["NodeDeallocationOption"] == "taskcompletion"


# ---------------------------------------------------------------------------------------------- Key Vault, roles
def test_key_vault_uses_rbac(templates: dict[str, Template]) -> None:
    kv = module_file(templates, "keyVault")
    (vault,) = kv.of_type("Microsoft.KeyVault/vaults").values()
    assert vault["properties"]["enableRbacAuthorization"] is True
    assert "accessPolicies" not in vault["properties"]


def role_assignments(templates: dict[str, Template]) -> set[tuple[str, str, str]]:
    """(principal: app|node|user, scope resource type, role name) of every assignment in app/rbac.bicep."""
    rbac = module_file(templates, "rbac")
    principals = {}
    for param in ("appPrincipalId", "nodePrincipalId", "userPrincipalId"):
        passed = module_param(templates, "rbac", param)
        principals[param] = {"appIdentity": "app", "nodeIdentity": "node"}.get(
            chain(passed)[0] if not isinstance(passed, str) else "", "user" if passed == "principalId" else "?")
    found = set()
    for symbol, body in rbac.of_type("Microsoft.Authorization/roleAssignments").items():
        props = body["properties"]
        role_fn = props["roleDefinitionId"]["function"]
        assert role_fn["type"] == "subscription_resource_id"
        role_id = rbac.resolve(role_fn["parameters"]["resource_name_1"])
        scope_type = rbac.resources[body["scope"]]["type"]
        principal = principals[props["principalId"]]
        if principal == "user":
            assert rbac.condition(symbol) is not None, f"{symbol}: the user's roles depend on a principalId being given"
            assert props["principalType"] == "userPrincipalType"
        else:
            assert props["principalType"] == "ServicePrincipal"
        found.add((principal, scope_type, ROLES.get(role_id, role_id)))
    return found


def test_role_assignments(templates: dict[str, Template]) -> None:
    assert role_assignments(templates) == EXPECTED_ROLES


def test_rbac_scopes_are_the_deployed_resources(templates: dict[str, Template]) -> None:
    """The `existing` resources rbac.bicep assigns on are the ones main.bicep created."""
    expected = {"storageAccountName": "storage", "keyVaultName": "keyVault", "appKeyVaultName": "appKeyVault",
                "batchAccountName": "batch",
                "registryName": "registry", "applicationInsightsName": "monitoring",
                "taskEventsTopicName": "taskEvents"}
    for param, module in expected.items():
        assert chain(module_param(templates, "rbac", param))[0] == module
    assert module_param(templates, "rbac", "userPrincipalId") == "principalId"
    assert "rbac" in str(main(templates).body("api")), "the app waits for its roles (dependsOn rbac)"


def test_easy_auth_requires_entra_id_for_the_api_when_a_client_id_is_given(templates: dict[str, Template]) -> None:
    """App Service Authentication (authsettingsV2) in front of the app: callers need an Entra ID token for the app
    registration the deployer names (authClientId); the app then trusts X-MS-CLIENT-PRINCIPAL (api/callers.py)."""
    api = module_file(templates, "api")
    (auth_symbol, auth), = api.of_type("Microsoft.Web/sites/config").items()
    assert auth["name"] == "authsettingsV2" and api.param_default("authClientId") == ""
    assert "authClientId" in api.identifiers(api.condition(auth_symbol)), "only with an app registration"
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True and validation["unauthenticatedClientAction"] == "Return401"
    # Event Grid's blob events and the Durable webhooks carry keys, not Entra ID tokens for this app
    # Event Grid's deliveries (blob trigger, and the marker's Event Grid trigger) carry the host's system keys, no token
    assert {"/runtime/webhooks/blobs", "/runtime/webhooks/eventgrid",
            "/runtime/webhooks/durabletask/*"} <= set(validation["excludedPaths"])
    # a subtree is written with a trailing /* (App Service's file-based auth reference); the bare prefix would match
    # only itself, and every Durable management URL has a sub-path (/instances/{id}...)
    assert "/runtime/webhooks/durabletask" not in validation["excludedPaths"]
    assert not any(p.startswith("/api") for p in validation["excludedPaths"])
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True and aad["registration"]["clientId"] == "authClientId"
    assert "authTenantId" in str(aad["registration"]["openIdIssuer"])
    assert "authClientId" in api.identifiers(aad["validation"]["allowedAudiences"])
    # with Easy Auth on, the app reads its identity headers; main's explicit settings would win
    callers = api.resolve("callerSettings")
    assert "easyauth" in str(callers) and "authClientId" in str(callers)
    (app,) = api.of_type("Microsoft.Web/sites").values()
    assert "callerSettings" in api.identifiers(app["properties"]["siteConfig"]["appSettings"]["loop_type"])


def test_the_pool_start_task_runs_the_resident_worker_the_tasks_use(templates: dict[str, Template]) -> None:
    """Start-up paid once per node (issue 14): with ``residentWorker`` the start task runs the resident server in the
    worker image the tasks name, as the tasks' own user, without holding the node back; the app's
    TRAPBATCH_WORKER_RESIDENT follows the same parameter, so tasks run the client exactly when a server is there."""
    import shlex

    from gpu_batch.worker.resident import build_parser

    b = module_file(templates, "batch")
    (pool,) = b.of_type("Microsoft.Batch/batchAccounts/pools").values()
    start = pool["properties"]["startTask"]
    assert start["containerSettings"] == {"imageName": "workerImage", "containerRunOptions": "--rm --shm-size 8g",
                                          "workingDirectory": "ContainerImageDefault"}
    # the image the tasks name (TRAPBATCH_WORKER_IMAGE) and the start task's are one expression of main.bicep
    trapbatch, _ = app_settings(templates)
    assert module_param(templates, "batch", "workerImage") == trapbatch["TRAPBATCH_WORKER_IMAGE"]
    # waitForSuccess false: tasks may start while the start task (the server) runs; that is its whole life
    assert start["waitForSuccess"] is False and start["maxTaskRetryCount"] >= 1
    # the tasks' user (gpu_batch/pool/azure_batch.py: AutoUserSpecification(scope="pool", elevation_level="nonadmin")):
    # the socket's folder is 0700, so another user's client could not connect
    assert {k: v.lower() for k, v in start["userIdentity"]["autoUser"].items()} == {"scope": "pool",
                                                                                    "elevationLevel": "nonadmin"}
    command = start["commandLine"]["operator"]
    assert command["type"] == "conditional" and command["operands"]["condition"] == "residentWorker"
    # the server's command: with `residentCompile`, `serve --compile` (every shard's network compiled, paid once per
    # node: the compiled network stays in the server's model cache)
    serve = b.resolve(command["operands"]["true_value"])["operator"]
    assert serve["type"] == "conditional" and serve["operands"]["condition"] == "residentCompile"
    for branch, compiles in (("true_value", True), ("false_value", False)):
        served = shlex.split(serve["operands"][branch])
        assert served[:3] == [WORKER_PYTHON, "-m", "gpu_batch.worker.resident"]
        args = build_parser().parse_args(served[3:])
        assert args.command == "serve" and args.idle_exit == float("inf") and args.socket is None  # the node default
        assert args.compile is (True if compiles else None)  # None: TRAPBATCH_RESIDENT_COMPILE, unset on the node
    assert shlex.split(command["operands"]["false_value"]) == [WORKER_PYTHON, "-c", "pass"]
    assert b.param_default("residentCompile") is False and main(templates).param_default("residentCompile") is False
    assert module_param(templates, "batch", "residentCompile") == "residentCompile"
    assert b.param_default("residentWorker") is False and main(templates).param_default("residentWorker") is False
    assert module_param(templates, "batch", "residentWorker") == "residentWorker"
    setting = trapbatch["TRAPBATCH_WORKER_RESIDENT"]["operator"]
    assert setting["type"] == "conditional" and setting["operands"] == {
        "condition": "residentWorker", "true_value": "1", "false_value": "0"}
    from core.settings import Settings

    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert Settings.from_env({**base, "TRAPBATCH_WORKER_RESIDENT": "1"}).worker_resident is True
    assert Settings.from_env({**base, "TRAPBATCH_WORKER_RESIDENT": "0"}).worker_resident is False
