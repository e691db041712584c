"""The azd hooks (infra/hooks/*.sh), run by /bin/sh against stand-ins for `azd` and `az` that record their calls.

What this proves: the scripts are valid POSIX sh, read the values infra/main.bicep outputs, call az with the
arguments the Event Grid quickstart and the az reference document, never print the function key, and upload a build
context holding only what gpu_batch/Dockerfile copies. What it cannot prove: that Azure accepts the calls (no
subscription is reachable here; docs/deploy.md, "Never run"). The PowerShell twins are not run: no pwsh here.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.bicep_model import REPO

HOOKS = REPO / "infra" / "hooks"
KEY = "SECRET-blobs-extension-key-0123456789"
SUBSCRIPTION = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"

AZD_ENV = {
    "AZURE_ENV_NAME": "dev", "AZURE_RESOURCE_GROUP": "rg-dev", "AZURE_FUNCTION_APP_NAME": "func-api-abc",
    "SERVICE_API_BASE_URL": "https://func-api-abc.azurewebsites.net", "AZURE_STORAGE_ACCOUNT_NAME": "stabc",
    "AZURE_CONTAINER_REGISTRY_NAME": "crabc", "AZURE_CONTAINER_REGISTRY_ENDPOINT": "crabc.azurecr.io",
    "TRAPBATCH_WORKER_IMAGE_NAME": "trapbatch-worker:v1", "EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-storage-abc",
    "INCOMING_CONTAINER_NAME": "incoming", "TRAPBATCH_PUBLIC_WEB_URL": "https://stabc.z6.web.core.windows.net/",
    "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
}

FAKE_AZ = r'''
import json, os, subprocess, sys
args = sys.argv[1:]
subscription = None
if "--subscription" in args:  # recorded apart, so that the checks below see the command's own arguments
    at = args.index("--subscription")
    subscription = args[at + 1]
    del args[at:at + 2]
entry = {"args": args, "subscription": subscription}
if args[:2] == ["acr", "build"]:
    context = args[-1]
    entry["context"] = sorted(os.path.relpath(os.path.join(d, f), context)
                              for d, _, files in os.walk(context) for f in files)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\n")
if args[:1] == ["acr"] and os.environ.get("FAKE_NO_REGISTRY"):  # every acr command: the registry is not there
    print("ERROR: (ResourceNotFound) The Resource 'Microsoft.ContainerRegistry/registries/crabc' was not found",
          file=sys.stderr)
    sys.exit(1)
if args[:2] == ["acr", "build"] and os.environ.get("FAKE_BUILD_FAILS"):
    sys.exit(3)
if args[:3] == ["acr", "repository", "show-tags"]:
    print(os.environ.get("FAKE_TAGS", ""))
    sys.exit(0 if os.environ.get("FAKE_TAGS") else 1)
if args[:3] == ["functionapp", "keys", "list"]:
    print(os.environ.get("FAKE_KEY", ""))
if args[:4] == ["eventgrid", "system-topic", "event-subscription", "create"]:
    with open(os.environ["FAKE_LOG"]) as log:
        creates = sum('"event-subscription", "create"' in line for line in log)
    if creates <= int(os.environ.get("FAKE_FAILED_CREATES", "0")):
        print("ERROR: Webhook validation handshake failed", file=sys.stderr)
        sys.exit(1)
'''


def run_hook(tmp_path: Path, name: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "az").write_text(f"#!{sys.executable}\n{FAKE_AZ}")
    values = "\n".join(f'{k}="{v}"' for k, v in AZD_ENV.items())
    (bin_dir / "azd").write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'env get-values' ] || exit 2\ncat <<'EOF'\n{values}\nEOF\n")
    for tool in ("az", "azd"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "az.log"
    log.write_text("")
    proc = subprocess.run(["/bin/sh", str(HOOKS / name)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_LOG": str(log),
                               "TMPDIR": str(tmp_path), **env})
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return proc, calls


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_postprovision_enables_the_static_website_and_builds_the_worker(tmp_path: Path) -> None:
    proc, calls = run_hook(tmp_path, "postprovision.sh")
    assert proc.returncode == 0, proc.stderr
    website = next(c["args"] for c in calls if c["args"][:3] == ["storage", "blob", "service-properties"])
    assert option(website, "--account-name") == "stabc" and option(website, "--auth-mode") == "login"
    assert "--static-website" in website and option(website, "--index-document") == "index.html"
    build = next(c for c in calls if c["args"][:2] == ["acr", "build"])
    args = build["args"]
    assert option(args, "--registry") == "crabc" and option(args, "--image") == "trapbatch-worker:v1"
    assert option(args, "--file") == "gpu_batch/Dockerfile"
    context = build["context"]
    # what gpu_batch/Dockerfile COPYs is there, and nothing else (gpu_batch's tests and caches left out)
    sources = [line.split()[1] for line in (REPO / "gpu_batch" / "Dockerfile").read_text().splitlines()
               if line.startswith("COPY ")]
    assert sources, "the Dockerfile copies something"
    for source in sources:
        assert [p for p in context if p == source or p.startswith(source.rstrip("/") + "/")], source
    assert "gpu_batch/Dockerfile" in context and "gpu_batch/worker/__main__.py" in context
    extra = [p for p in context if p != "gpu_batch/Dockerfile"
             and not any(p == s or p.startswith(s.rstrip("/") + "/") for s in sources)]
    assert not extra, extra
    assert not [p for p in context if p.startswith("gpu_batch/tests/") or "__pycache__" in p]
    assert not Path(args[-1]).exists(), "the temporary build context is removed"


def test_postprovision_does_not_rebuild_an_existing_tag(tmp_path: Path) -> None:
    proc, calls = run_hook(tmp_path, "postprovision.sh", FAKE_TAGS="v0\nv1")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if c["args"][:2] == ["acr", "build"]]
    assert "already in crabc" in proc.stdout


def test_a_forced_worker_rebuild_runs_once_per_provision(tmp_path: Path) -> None:
    """``azd provision`` runs preprovision, then postprovision, with the same TRAPBATCH_FORCE_WORKER_BUILD and tag:
    both honouring it built the image twice (10-25 minutes each). preprovision rebuilds it; postprovision builds only a
    tag that is missing, as on the first provision, which preprovision skips (no registry yet)."""
    builds = []
    for hook in ("preprovision.sh", "postprovision.sh"):
        proc, calls = run_hook(tmp_path, hook, FAKE_TAGS="v1", TRAPBATCH_FORCE_WORKER_BUILD="true")
        assert proc.returncode == 0, proc.stderr
        builds += [(hook, option(c["args"], "--image")) for c in calls if c["args"][:2] == ["acr", "build"]]
        if hook == "postprovision.sh":  # it skipped the tag although the flag is set: its line must not promise more
            assert "already in crabc." in proc.stdout and "rebuilds it" not in proc.stdout, proc.stdout
    assert builds == [("preprovision.sh", "trapbatch-worker:v1")]
    proc, calls = run_hook(tmp_path, "postprovision.sh", FAKE_TAGS="v0", TRAPBATCH_FORCE_WORKER_BUILD="true")
    assert [option(c["args"], "--image") for c in calls if c["args"][:2] == ["acr", "build"]] == ["trapbatch-worker:v1"]
    for script, call in (("postprovision.sh", 'build_worker "$TRAPBATCH_WORKER_IMAGE_NAME" if-missing'),
                         ("postprovision.ps1", "Build-Worker $env:TRAPBATCH_WORKER_IMAGE_NAME -IfMissing")):
        assert call in (HOOKS / script).read_text(), script
    assert "$IfMissing -or" in (HOOKS / "build-worker.ps1").read_text()


def test_postdeploy_subscribes_the_blob_webhook_to_incoming(tmp_path: Path) -> None:
    proc, calls = run_hook(tmp_path, "postdeploy.sh", FAKE_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    sub = next(c["args"] for c in calls if c["args"][:3] == ["eventgrid", "system-topic", "event-subscription"])
    assert sub[3] == "create" and option(sub, "--system-topic-name") == "evgt-storage-abc"
    assert option(sub, "--resource-group") == "rg-dev" and option(sub, "--endpoint-type") == "webhook"
    assert option(sub, "--endpoint") == ("https://func-api-abc.azurewebsites.net/runtime/webhooks/blobs"
                                         f"?functionName=Host.Functions.task_dropped&code={KEY}")
    assert option(sub, "--included-event-types") == "Microsoft.Storage.BlobCreated"
    assert option(sub, "--subject-begins-with") == "/blobServices/default/containers/incoming/"
    ready = [c["args"] for c in calls if c["args"][:4] == ["eventgrid", "system-topic", "event-subscription", "create"]
             and option(c["args"], "--name") == "trapbatch-ready"]
    assert len(ready) == 1 and option(ready[0], "--subject-ends-with") == "/blobs/trapbatch-ready.json"
    assert option(ready[0], "--endpoint") == ("https://func-api-abc.azurewebsites.net/runtime/webhooks/eventgrid"
                                              f"?functionName=container_ready&code={KEY}")
    assert "--subject-begins-with" not in ready[0]  # a marker at the top of ANY container
    assert KEY not in proc.stdout + proc.stderr, "the function key is never printed"


def test_postdeploy_fails_with_a_hint_when_the_host_has_no_key_yet(tmp_path: Path) -> None:
    proc, calls = run_hook(tmp_path, "postdeploy.sh", TRAPBATCH_KEY_ATTEMPTS="2", TRAPBATCH_KEY_WAIT_S="0")
    assert proc.returncode == 1
    assert "no blobs_extension key" in proc.stderr and "postdeploy.sh again" in proc.stderr
    assert len([c for c in calls if c["args"][:3] == ["functionapp", "keys", "list"]]) == 2
    assert not [c for c in calls if c["args"][0] == "eventgrid"]


@pytest.mark.parametrize("name", ["postprovision.sh", "postdeploy.sh"])
def test_hooks_stop_when_azd_has_not_provisioned(tmp_path: Path, name: str) -> None:
    saved = dict(AZD_ENV)
    try:
        AZD_ENV.clear()
        AZD_ENV["AZURE_ENV_NAME"] = "dev"
        proc, calls = run_hook(tmp_path, name)
    finally:
        AZD_ENV.clear()
        AZD_ENV.update(saved)
    assert proc.returncode == 1 and "run 'azd provision' first" in proc.stderr and not calls


@pytest.mark.parametrize("name", ["preprovision.sh", "postprovision.sh", "postdeploy.sh"])
def test_every_az_call_targets_the_subscription_azd_deploys_to(tmp_path: Path, name: str) -> None:
    """azd deploys to its own AZURE_SUBSCRIPTION_ID (chosen at `azd up`, kept per azd environment), while an az command
    without ``--subscription`` acts in az's default subscription (`az account set`; azure-cli core
    ``register_global_subscription_argument`` adds ``--subscription`` to every command, defaulting to that one). Where
    the two differ (two azd environments in two subscriptions, one `az login`), `az acr build` found no registry and
    stopped the provision, and postdeploy waited five minutes for a key of an app it could not find, then blamed the
    deployment. azd hands its environment, AZURE_SUBSCRIPTION_ID included, to every hook."""
    proc, calls = run_hook(tmp_path, name, FAKE_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    assert calls and [c["args"][:3] for c in calls if c["subscription"] != SUBSCRIPTION] == []


def test_windows_hooks_pass_the_azd_subscription_to_every_az_call() -> None:
    """The PowerShell twins are not run here (no pwsh): each az command in them (continuation lines joined) splats
    load-env.ps1's ``$AzSubscription`` (``--subscription $env:AZURE_SUBSCRIPTION_ID``), as the sh hooks pass it."""
    loader = (HOOKS / "load-env.ps1").read_text()
    assert "$AzSubscription = " in loader and "'--subscription', $env:AZURE_SUBSCRIPTION_ID" in loader
    commands = [(script.name, line) for script in sorted(HOOKS.glob("*.ps1"))
                for line in script.read_text().replace("`\n", " ").splitlines()
                if re.search(r"(^|=\s*)az\s+[a-z]", line.strip())]
    assert len(commands) >= 6, commands
    assert [c for c in commands if "@AzSubscription" not in c[1]] == []


def test_windows_hooks_exist_beside_the_posix_ones() -> None:
    for script in HOOKS.glob("*.sh"):
        assert script.with_suffix(".ps1").exists(), script


def test_every_posix_hook_azure_yaml_runs_is_executable_with_a_shebang() -> None:
    """azd runs a posix hook's file itself, not through ``sh FILE`` (Azure/azure-dev cli/azd/pkg/tools/bash/bash.go):
    one without the executable bit or a ``#!`` line fails ``azd up`` with "permission denied" / "exec format error".
    Every ``posix.run`` in azure.yaml, not a list here that a new hook could miss."""
    doc = yaml.safe_load((REPO / "azure.yaml").read_text())
    runs = [hook["posix"]["run"] for hook in (doc.get("hooks") or {}).values() if "posix" in hook]
    assert len(runs) >= 3, runs
    for run in runs:
        script = REPO / run
        assert script.is_file() and os.access(script, os.X_OK), f"{run}: chmod +x, and git add --chmod=+x"
        assert script.read_text().startswith("#!"), f"{run}: start it with #!/bin/sh"


def _doc_commands(prefix: str) -> list[str]:
    """Every shell command in the docs' code blocks that starts with ``prefix``, its continuation lines joined."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                command, j = line, i
                while command.endswith("\\") or command.count('"') % 2:
                    j += 1
                    command = command.rstrip("\\") + " " + lines[j].strip()
                found.append(command)
    return found


def test_the_docs_az_commands_reach_what_they_name() -> None:
    """azure-cli ``resource/custom.py`` keeps two parts of ``--resource-type`` (``parts[1]``), so a nested type such as
    ``Microsoft.Batch/batchAccounts/pools`` never reaches the pool: a child resource takes ``--namespace`` and
    ``--parent``. And az prints azure-mgmt-batch 17's account as knack's camelCase of the attribute names
    (``dedicated_core_quota_per_vm_family`` -> ``dedicatedCoreQuotaPerVmFamily``); JMESPath is case-sensitive."""
    shows = _doc_commands("az resource show")
    assert shows, "docs/deploy.md shows the pool's resize status with az resource show"
    for command in shows:
        args = command.split()
        if "--resource-type" in args:
            assert option(args, "--resource-type").count("/") <= 1 or "--parent" in args, command
    accounts = [c for c in _doc_commands("az batch account show") if "CoreQuotaPer" in c]
    assert accounts and all("dedicatedCoreQuotaPerVmFamily" in c for c in accounts)


# The data-plane ``az batch job`` subcommands azure-cli defines (batch/commands.py: ``create``, ``delete``, ``show``,
# ``set``, ``reset``, ``disable``, ``list``, ``enable``, ``stop`` -> ``terminate_job``, ``prep-release-status list``,
# ``task-counts show``; ``all-statistics show`` in older releases). Batch's REST verb "terminate" is ``stop`` there.
AZ_BATCH_JOB_VERBS = {"create", "delete", "show", "set", "reset", "disable", "list", "enable", "stop",
                      "prep-release-status", "task-counts", "all-statistics"}


def test_every_az_batch_job_command_the_docs_and_messages_name_exists() -> None:
    """An operator copies the command a failed task's status names ("end it with 'az batch job ...'") or the docs
    show; ``az batch job terminate`` is not an azure-cli command (it answers "'terminate' is misspelled or not
    recognized by the system"): the CLI ends a job with ``az batch job stop``."""
    shipped = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for package in ("api", "activities", "adapters", "cli", "core", "orchestrations", "gpu_batch/pool"):
        shipped += sorted((REPO / package).rglob("*.py"))
    wrong = [f"{path.relative_to(REPO)}: az batch job {verb}" for path in shipped
             for verb in re.findall(r"az\s+batch\s+job\s+([a-z-]+)", path.read_text())
             if verb not in AZ_BATCH_JOB_VERBS]
    assert not wrong, wrong


def test_the_docs_sign_the_batch_cli_in_with_entra_id_before_a_pool_job_command() -> None:
    """A failed task's status names the pool job to end (``az batch job stop --job-id <job>``; README,
    docs/cli.md). azure-cli's batch ``validate_client_parameters`` refuses a data-plane command without an account
    and endpoint ("Specify batch account in command line or environment variable"), and given them without a key it
    fetches the shared key from ARM unless ``batch.auth_mode`` is ``aad``, which only ``az batch account login``
    (without ``--shared-key-auth``) sets (``custom.py`` ``login_account``). The account takes Entra ID only
    (``allowedAuthenticationModes``), so the docs must show that login, and every doc that names an ``az batch job``
    command must lead to it."""
    logins = _doc_commands("az batch account login")
    assert logins, "docs/deploy.md shows az batch account login before az batch job commands"
    for command in logins:
        args = command.split()
        assert "--shared-key-auth" not in args, command
        assert {"-g", "--resource-group"} & set(args) and {"-n", "--name"} & set(args), command
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        if "az batch job" in text:
            assert "az batch account login" in text or "Pool jobs by hand" in text, doc.name


def test_every_az_functionapp_keys_list_the_docs_and_messages_name_prints_only_the_key() -> None:
    """Someone copies the command into ``KEY=$(...)``, ``--key`` or a config file. ``az functionapp keys list`` prints
    the host's keys as one JSON object, ``{"functionKeys": {"default": ...}, "masterKey": ..., "systemKeys": {...}}``
    (azure-cli ``--key-type {functionKeys, masterKey, systemKeys}``; the host/default/listKeys answer Microsoft's
    functions-create-function-linux-custom-image.md reads with ``--query functionKeys.default --output tsv``), master
    key included; it needs ``-g``/``-n``. Each one shown must name the app and pick one key with ``--query`` and
    ``-o tsv``, as docs/deploy.md and infra/hooks/postdeploy.sh do."""
    shipped = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for package in ("api", "activities", "adapters", "cli", "core", "orchestrations", "devhost"):
        shipped += sorted((REPO / package).rglob("*.py"))
    wrong, seen = [], 0
    for path in shipped:
        text = path.read_text()
        for match in re.finditer(r"az\s+functionapp\s+keys\s+list", text):
            seen += 1
            command = re.split(r"[;`)\n]", text[match.end():])[0]
            args = command.split()
            if not ({"-g", "--resource-group"} & set(args) and {"-n", "--name"} & set(args)
                    and re.search(r"--query\s+\S+", command) and re.search(r"(-o|--output)\s+tsv", command)):
                wrong.append(f"{path.relative_to(REPO)}: az functionapp keys list{command}")
    assert seen, "the docs name az functionapp keys list"
    assert not wrong, wrong


def test_the_docs_drop_uploads_may_write_a_request_again() -> None:
    """A refused drop or marker is tried again by writing it again (README, "Start a task when an upload is
    complete"; scripts/upload_local.py sends them again for that reason). azure-cli's ``storage blob upload`` and
    ``upload-batch`` take ``--overwrite`` "Defaults to False" (``storage/_params.py``) and refuse an existing blob
    with BlobAlreadyExists ("If you want to overwrite the existing one, please add --overwrite": Azure/azure-cli#21477,
    #25019), so the docs' request and marker uploads, which the operator repeats after a refusal, carry it."""
    uploads = [c for c in _doc_commands("az storage blob upload ")
               if "incoming" in c.split() or "trapbatch-ready.json" in c.split()]
    assert uploads, "docs/deploy.md shows dropping a request and a marker with az storage blob upload"
    for command in uploads:
        assert "--overwrite" in command.split(), command
    batches = _doc_commands("az storage blob upload-batch")
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert not batches or "BlobAlreadyExists" in deploy, "say what upload-batch does to photos already there"


def test_the_docs_app_registration_gets_its_service_principal() -> None:
    """``az ad app create`` makes the application object through Microsoft Graph, and "If you register/create an
    application using the Microsoft Graph APIs, creating the service principal object is a separate step"
    (learn.microsoft.com, application objects and service principals). Without it the operator role cannot be
    assigned (app role assignments are made on the service principal) and a token for ``api://<client id>`` is
    refused with AADSTS500011 "The resource principal named api://... was not found in the tenant"
    (Azure-Samples/azure-search-openai-demo#1529), so the Callers steps must create it."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    created = doc.index("az ad app create")
    assert "az ad sp create --id" in doc[created:], "docs/deploy.md creates the service principal after the app"


def test_the_docs_task_events_webhook_is_told_the_cloudevents_handshake() -> None:
    """The task-events subscription docs/deploy.md shows delivers in the CloudEvents schema (the topic's input schema
    is CloudEventSchemaV1_0), and then Event Grid validates a webhook with CloudEvents 1.0's abuse protection, an HTTP
    OPTIONS request answered with ``WebHook-Allowed-Origin``, not with its own ``SubscriptionValidationEvent``
    (learn.microsoft.com event-grid/end-point-validation-cloud-events-schema): a receiver built for the latter never
    lets the subscription be created."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    creates = _doc_commands("az eventgrid event-subscription create")
    assert creates and all(option(c.split(), "--event-delivery-schema") == "cloudeventschemav1_0" for c in creates)
    assert "WebHook-Allowed-Origin" in doc and "OPTIONS" in doc
    assert "Event Grid's validation handshake" not in doc


def test_postdeploy_filters_the_apps_own_answers_out_of_the_drop_subscription(tmp_path: Path) -> None:
    """The app writes its answers to a dropped request beside it in incoming/ (gpu_batch/layout.py _DROP_ANSWERS); each
    matched ``--subject-ends-with .json`` and invoked task_dropped for nothing. An advanced filter on the subject
    (az eventgrid ``--advanced-filter subject StringNotEndsWith ...``) keeps them from being delivered."""
    from gpu_batch import layout

    proc, calls = run_hook(tmp_path, "postdeploy.sh", FAKE_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    (sub,) = [c["args"] for c in calls if c["args"][:4] == ["eventgrid", "system-topic", "event-subscription", "create"]
              and option(c["args"], "--name") == "trapbatch-incoming"]
    start = sub.index("--advanced-filter")
    end = next(i for i in range(start + 1, len(sub)) if sub[i].startswith("--"))
    assert sub[start + 1:start + 3] == ["subject", "StringNotEndsWith"]
    assert sorted(sub[start + 3:end]) == sorted(layout._DROP_ANSWERS)
    ps1 = (HOOKS / "postdeploy.ps1").read_text()
    assert all(f"'{suffix}'" in ps1 for suffix in layout._DROP_ANSWERS) and "'StringNotEndsWith'" in ps1


def test_postdeploy_tries_a_subscription_again_while_event_grid_cannot_validate_the_endpoint(tmp_path: Path) -> None:
    """Event Grid validates the endpoint while it creates a subscription; a just-started Flex host may refuse it for
    a while after its keys exist (Azure/azure-functions-host#11834). One refusal failed the whole `azd up`."""
    proc, calls = run_hook(tmp_path, "postdeploy.sh", FAKE_KEY=KEY, FAKE_FAILED_CREATES="2",
                           TRAPBATCH_SUBSCRIBE_WAIT_S="0")
    assert proc.returncode == 0, proc.stderr
    names = [option(c["args"], "--name") for c in calls if c["args"][:4] == ["eventgrid", "system-topic",
                                                                            "event-subscription", "create"]]
    assert names == ["trapbatch-incoming"] * 3 + ["trapbatch-ready"]
    assert "trying again" in proc.stderr and KEY not in proc.stdout + proc.stderr
    proc, calls = run_hook(tmp_path, "postdeploy.sh", FAKE_KEY=KEY, FAKE_FAILED_CREATES="99",
                           TRAPBATCH_SUBSCRIBE_WAIT_S="0", TRAPBATCH_SUBSCRIBE_ATTEMPTS="3")
    assert proc.returncode == 1 and "could not create subscription trapbatch-incoming (3 tries)" in proc.stderr
    assert "postdeploy.sh again" in proc.stderr


def test_windows_hooks_require_powershell_7_2() -> None:
    """Before PowerShell 7.2 (PowerShell/PowerShell#13361), ``$ErrorActionPreference = 'Stop'`` also stopped a script
    at a native command's redirected stderr (``az ... 2>$null``), which the hooks use for expected failures."""
    for script in HOOKS.glob("*.ps1"):
        text = script.read_text()
        if "'Stop'" in text and "2>$null" in text:
            assert "#Requires -Version 7.2" in text, script.name


def test_preprovision_builds_a_new_worker_tag_before_the_deployment_names_it(tmp_path: Path) -> None:
    """The deployment points TRAPBATCH_WORKER_IMAGE and the pool's start task at trapbatch-worker:<tag>; a new tag
    built only by postprovision (10-25 minutes later) failed every shard submitted meanwhile (the image could not be
    pulled). preprovision builds it first, once the registry exists."""
    proc, calls = run_hook(tmp_path, "preprovision.sh", FAKE_TAGS="v1", TRAPBATCH_WORKER_TAG="v2")
    assert proc.returncode == 0, proc.stderr
    (build,) = [c["args"] for c in calls if c["args"][:2] == ["acr", "build"]]
    assert option(build, "--registry") == "crabc" and option(build, "--image") == "trapbatch-worker:v2"
    proc, calls = run_hook(tmp_path, "preprovision.sh", FAKE_TAGS="v1\nv2", TRAPBATCH_WORKER_TAG="v2")
    assert proc.returncode == 0 and not [c for c in calls if c["args"][:2] == ["acr", "build"]]
    proc, calls = run_hook(tmp_path, "preprovision.sh", FAKE_TAGS="v0")  # no tag set: the parameters' default
    assert [option(c["args"], "--image") for c in calls if c["args"][:2] == ["acr", "build"]] == ["trapbatch-worker:v1"]
    # the image name and default tag preprovision assumes are the deployment's
    assert "var workerImageName = 'trapbatch-worker:${workerImageTag}'" in (REPO / "infra" / "main.bicep").read_text()
    assert "${TRAPBATCH_WORKER_TAG=v1}" in (REPO / "infra" / "main.parameters.json").read_text()
    for text in ((HOOKS / "preprovision.sh").read_text(), (HOOKS / "preprovision.ps1").read_text()):
        assert "trapbatch-worker:" in text and "v1" in text
    azure = (REPO / "azure.yaml").read_text()
    assert "run: ./infra/hooks/preprovision.sh" in azure and "run: ./infra/hooks/preprovision.ps1" in azure


def test_the_first_preprovision_leaves_the_build_to_postprovision(tmp_path: Path) -> None:
    saved = dict(AZD_ENV)
    try:
        del AZD_ENV["AZURE_CONTAINER_REGISTRY_NAME"]
        proc, calls = run_hook(tmp_path, "preprovision.sh", TRAPBATCH_WORKER_TAG="v2")
    finally:
        AZD_ENV.clear()
        AZD_ENV.update(saved)
    assert proc.returncode == 0 and not calls and "postprovision builds" in proc.stdout


def test_a_worker_build_that_fails_stops_the_provision(tmp_path: Path) -> None:
    proc, calls = run_hook(tmp_path, "preprovision.sh", FAKE_TAGS="v1", TRAPBATCH_WORKER_TAG="v2", FAKE_BUILD_FAILS="1")
    assert proc.returncode != 0 and "did not build" in proc.stderr
    assert not list(tmp_path.glob("tmp.*")), "the temporary build context is removed"


def test_preprovision_leaves_the_build_to_postprovision_when_the_named_registry_is_gone(tmp_path: Path) -> None:
    """AZURE_CONTAINER_REGISTRY_NAME stays in the azd environment when its resource group goes without `azd down`
    (deleted in the portal, or `azd down` stopped by a purge error: azd drops the deployment's outputs from the
    environment only once the whole `azd down` succeeded, Azure/azure-dev bicep_provider.go Destroy,
    InvalidatedEnvKeys) and when the environment moves to another subscription (a new resource token; the old name is
    not found in the new subscription). preprovision then tried `az acr build` into a registry that is not there,
    failed, and so stopped every later `azd up` before it could recreate anything. As on the first provision, postprovision builds into the
    registry the deployment has made."""
    proc, calls = run_hook(tmp_path, "preprovision.sh", FAKE_NO_REGISTRY="1", TRAPBATCH_WORKER_TAG="v2")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if c["args"][:2] == ["acr", "build"]]
    assert "crabc" in proc.stdout and "postprovision builds" in proc.stdout
    proc, calls = run_hook(tmp_path, "preprovision.sh", TRAPBATCH_WORKER_TAG="v2")  # it exists: built first, as before
    assert proc.returncode == 0 and [c for c in calls if c["args"][:2] == ["acr", "build"]]
    ps1 = (HOOKS / "preprovision.ps1").read_text()
    assert "az acr show --name $env:AZURE_CONTAINER_REGISTRY_NAME" in ps1 and "postprovision builds" in ps1
