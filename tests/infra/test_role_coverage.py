"""Every Azure operation trapbatch's shipped code makes, by identity, checked against the roles infra/ grants.

Why: a role that is missing fails only on real Azure (403 at the first task), and a role broader than needed is
never noticed at all. This module is the audit written down: OPERATIONS lists what each identity does (with the
code that does it) and the permission Azure checks for it; BUILTIN_ROLES copies the permissions of the built-in
roles infra/app/rbac.bicep assigns, from Microsoft's own reference. The tests then check, against the parsed Bicep,
that every operation is allowed at the scope it needs, that every assignment is needed by some operation, that the
role ids are Microsoft's, and that nothing listed in MUST_NOT is granted (least privilege).

Sources (MicrosoftDocs/azure-docs): articles/role-based-access-control/built-in-roles/storage.md (the Storage Blob,
Queue and Table roles, as JSON), articles/batch/batch-role-based-access-control.md (the Batch roles),
built-in-roles/security.md (Key Vault), containers.md (AcrPull), monitor.md (Monitoring Metrics Publisher),
integration.md (EventGrid Data Sender); the action names are those of the "Permissions for calling data
operations" tables (rest/api/storageservices/authorize-with-azure-active-directory) and of
batch-role-based-access-control.md's list of Batch RBAC operations.

Scopes: "storage" is trapbatch's storage account (any container in it), "storage/state" the state container
(TRAPBATCH_CONTAINER, `trapbatch`); an assignment on the account covers both, one on the container only the
container. Images in *another* account are outside infra/: docs/deploy.md and the app's error say which role to
grant there (test_source_account_errors_name_the_role_and_both_identities). There are two vaults of one type: "vault"
is the sources' vault (TRAPBATCH_KEY_VAULT_URL; app and nodes read it), "app-vault" the app's own
(TRAPBATCH_APP_KEY_VAULT_URL; the notification signing key, which no node may read).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tests.infra.bicep_model import REPO, Template
from tests.infra.test_bicep_model import ROLES, app_settings, chain, main, module_file, module_param

STORAGE = "Microsoft.Storage/storageAccounts/blobServices"
QUEUES = "Microsoft.Storage/storageAccounts/queueServices/queues"
TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"


@dataclass(frozen=True)
class Role:
    name: str
    actions: tuple[str, ...]
    data_actions: tuple[str, ...] = ()


# Built-in roles, as Microsoft's reference defines them (see the module docstring for the files).
BUILTIN_ROLES: dict[str, Role] = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": Role(
        "Storage Blob Data Owner",
        (f"{STORAGE}/containers/*", f"{STORAGE}/generateUserDelegationKey/action"),
        (f"{STORAGE}/containers/blobs/*",)),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": Role(
        "Storage Blob Data Contributor",
        (f"{STORAGE}/containers/delete", f"{STORAGE}/containers/read", f"{STORAGE}/containers/write",
         f"{STORAGE}/generateUserDelegationKey/action"),
        (f"{STORAGE}/containers/blobs/delete", f"{STORAGE}/containers/blobs/read", f"{STORAGE}/containers/blobs/write",
         f"{STORAGE}/containers/blobs/move/action", f"{STORAGE}/containers/blobs/add/action")),
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": Role(
        "Storage Blob Data Reader",
        (f"{STORAGE}/containers/read", f"{STORAGE}/generateUserDelegationKey/action"),
        (f"{STORAGE}/containers/blobs/read",)),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": Role(
        "Storage Queue Data Contributor",
        (f"{QUEUES}/delete", f"{QUEUES}/read", f"{QUEUES}/write"),
        (f"{QUEUES}/messages/delete", f"{QUEUES}/messages/read", f"{QUEUES}/messages/write",
         f"{QUEUES}/messages/process/action")),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": Role(
        "Storage Table Data Contributor",
        (f"{TABLES}/read", f"{TABLES}/write", f"{TABLES}/delete"),
        (f"{TABLES}/entities/read", f"{TABLES}/entities/write", f"{TABLES}/entities/delete",
         f"{TABLES}/entities/add/action", f"{TABLES}/entities/update/action")),
    "48e5e92e-a480-4e71-aa9c-2778f4c13781": Role(
        "Azure Batch Job Submitter",
        ("Microsoft.Batch/batchAccounts/applications/read", "Microsoft.Batch/batchAccounts/applications/versions/read",
         "Microsoft.Batch/batchAccounts/pools/read", "Microsoft.Insights/alertRules/*",
         "Microsoft.Resources/subscriptions/resourceGroups/read"),
        ("Microsoft.Batch/batchAccounts/jobSchedules/*", "Microsoft.Batch/batchAccounts/jobs/*")),
    "4633458b-17de-408a-b874-0445c86b69e6": Role(
        "Key Vault Secrets User", (),
        ("Microsoft.KeyVault/vaults/secrets/getSecret/action",
         "Microsoft.KeyVault/vaults/secrets/readMetadata/action")),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": Role(
        "Key Vault Secrets Officer",
        ("Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*",
         "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*",
         "Microsoft.KeyVault/checkNameAvailability/read", "Microsoft.KeyVault/deletedVaults/read",
         "Microsoft.KeyVault/locations/*/read", "Microsoft.KeyVault/vaults/*/read",
         "Microsoft.KeyVault/operations/read"),
        ("Microsoft.KeyVault/vaults/secrets/*",)),
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": Role("AcrPull", ("Microsoft.ContainerRegistry/registries/pull/read",)),
    "3913510d-42f4-4e42-8a64-420c390055eb": Role(
        "Monitoring Metrics Publisher",
        ("Microsoft.Insights/Register/Action", "Microsoft.Support/*",
         "Microsoft.Resources/subscriptions/resourceGroups/read"),
        ("Microsoft.Insights/Metrics/Write", "Microsoft.Insights/Telemetry/Write")),
    "d5a91429-5739-47e2-a06b-3470a27159e7": Role(
        "EventGrid Data Sender",
        ("Microsoft.Authorization/*/read", "Microsoft.EventGrid/topics/read", "Microsoft.EventGrid/domains/read",
         "Microsoft.EventGrid/partnerNamespaces/read", "Microsoft.Resources/subscriptions/resourceGroups/read",
         "Microsoft.EventGrid/namespaces/read"),
        ("Microsoft.EventGrid/events/send/action",)),
}


@dataclass(frozen=True)
class Op:
    identity: str  # app (id-api-*), node (id-nodes-*), user (the deploying user, AZURE_PRINCIPAL_ID)
    where: str  # the code (or platform component acting with the identity) that makes the call
    permission: str  # the action or data action Azure checks
    scope: str  # storage | storage/state | vault | app-vault | batch | registry | insights | events


BLOB_READ, BLOB_WRITE, BLOB_DELETE = (f"{STORAGE}/containers/blobs/{v}" for v in ("read", "write", "delete"))
CONTAINER_WRITE = f"{STORAGE}/containers/write"
UDK = f"{STORAGE}/generateUserDelegationKey/action"
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
SET_SECRET = "Microsoft.KeyVault/vaults/secrets/setSecret/action"

OPERATIONS: tuple[Op, ...] = (
    # ---- the Functions app's identity (AzureWebJobsStorage__credential managedidentity, AZURE_CLIENT_ID)
    Op("app", "Functions host: azure-webjobs-hosts/-secrets, Durable leases and large messages", BLOB_WRITE, "storage"),
    Op("app", "Functions host / Durable: create their containers", CONTAINER_WRITE, "storage"),
    Op("app", "Flex Consumption: read the deployment package (app-package-*)", BLOB_READ, "storage"),
    Op("app", "Durable task hub: create control/work-item queues", f"{QUEUES}/write", "storage"),
    Op("app", "Durable task hub / blob-trigger poison queue: put and update messages", f"{QUEUES}/messages/write",
       "storage"),
    Op("app", "Durable task hub: get (dequeue) messages", f"{QUEUES}/messages/process/action", "storage"),
    Op("app", "Durable task hub: delete messages", f"{QUEUES}/messages/delete", "storage"),
    Op("app", "Durable task hub: create History/Instances tables", f"{TABLES}/write", "storage"),
    Op("app", "Durable task hub: read history and instances", f"{TABLES}/entities/read", "storage"),
    Op("app", "Durable task hub: write history and instances", f"{TABLES}/entities/write", "storage"),
    Op("app", "Durable task hub: purge instances", f"{TABLES}/entities/delete", "storage"),
    Op("app", "api/starters.py task_dropped (Event Grid blob trigger): read incoming/<name>.json", BLOB_READ,
       "storage"),
    Op("app", "api/starters.py: incoming/<name>.task.json / .error.json / .done.json", BLOB_WRITE, "storage"),
    Op("app", "api/starters.py: remove a stale incoming/<name>.json.error.json", BLOB_DELETE, "storage"),
    Op("app", "adapters/listing.py, activities/enumerate.py: list and read images in any container", BLOB_READ,
       "storage"),
    Op("app", "adapters/blobs.py: create the state container", CONTAINER_WRITE, "storage/state"),
    Op("app", "adapters/blobs.py, block_writer.py, compose.py: task state, results, exports", BLOB_WRITE,
       "storage/state"),
    Op("app", "adapters/blobs.py, compose.py, blob_files.py: delete work blobs", BLOB_DELETE, "storage/state"),
    Op("app", "adapters/compose.py: Put Block From URL, source read with the app's bearer token", BLOB_READ,
       "storage/state"),
    Op("app", "adapters/preview_folders.py: preview pages in $web", BLOB_WRITE, "storage"),
    Op("app", "adapters/preview_folders.py: delete previews in $web", BLOB_DELETE, "storage"),
    Op("app", "adapters/share_links.py: Get User Delegation Key (read-only result links)", UDK, "storage"),
    Op("app", "gpu_batch/storage_refs.py key_vault_reader: the source SAS a request names", GET_SECRET, "vault"),
    Op("app", "activities/notify.py: TRAPBATCH_NOTIFY_SECRET's value (signs notifications)", GET_SECRET, "app-vault"),
    Op("app", "gpu_batch/pool/azure_batch.py: create_job, create_task_collection, terminate job/task",
       "Microsoft.Batch/batchAccounts/jobs/write", "batch"),
    Op("app", "gpu_batch/pool/azure_batch.py: list_tasks", "Microsoft.Batch/batchAccounts/jobs/read", "batch"),
    Op("app", "gpu_batch/pool/azure_batch.py: the job's poolInfo names the existing pool",
       "Microsoft.Batch/batchAccounts/pools/read", "batch"),
    Op("app", "Application Insights with Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)",
       "Microsoft.Insights/Telemetry/Write", "insights"),
    Op("app", "adapters/event_grid.py: publish task-ended CloudEvents", "Microsoft.EventGrid/events/send/action",
       "events"),
    # ---- the GPU nodes' identity (AZURE_CLIENT_ID in each task; the pool's identityReference)
    Op("node", "gpu_batch/worker/__main__.py: read the shard manifest", BLOB_READ, "storage/state"),
    Op("node", "gpu_batch/worker/sources.py BlobImageSource: images in any container of the account", BLOB_READ,
       "storage"),
    Op("node", "gpu_batch/worker/loader.py: blob://<TRAPBATCH_MODELS_CONTAINER>/<checkpoint>", BLOB_READ, "storage"),
    Op("node", "gpu_batch/worker/sources.py BlobSink: results, progress, coverage, merge view", BLOB_WRITE,
       "storage/state"),
    Op("node", "Batch agent: task stdout/stderr OutputFile with identityReference", BLOB_WRITE, "storage/state"),
    Op("node", "gpu_batch/storage_refs.py key_vault_reader: the source SAS a request names", GET_SECRET, "vault"),
    Op("node", "Batch pool containerRegistries identityReference: pull the worker image",
       "Microsoft.ContainerRegistry/registries/pull/read", "registry"),
    # ---- the deploying user (docs/deploy.md "First task")
    Op("user", "az storage container create (image container)", CONTAINER_WRITE, "storage"),
    Op("user", "az storage blob upload(-batch): images, incoming/<name>.json, trapbatch-ready.json", BLOB_WRITE,
       "storage"),
    Op("user", "az storage blob download, trapbatch download: results", BLOB_READ, "storage"),
    Op("user", "az keyvault secret set: a source account's SAS", SET_SECRET, "vault"),
    Op("user", "az keyvault secret set --vault-name $AZURE_APP_KEY_VAULT_NAME: the notification signing key",
       SET_SECRET, "app-vault"),
    # the pool job a failed task's status names (orchestrations/task.py, shards.py; docs/deploy.md "Pool jobs by
    # hand"): the Batch account takes Entra ID only; Azure Batch Job Submitter allows these through its jobs/*
    # dataActions. (The user's Owner/Contributor, outside infra/, allows them too: batch-role-based-access-control.md
    # lists listKeys/action "for any operation", within their actions "*".)
    Op("user", "az batch job stop / enable --job-id <job>", "Microsoft.Batch/batchAccounts/jobs/write", "batch"),
    Op("user", "az batch job show --job-id <job>", "Microsoft.Batch/batchAccounts/jobs/read", "batch"),
)

# Least privilege: what no assignment may give (identity, scope, permission).
MUST_NOT: tuple[tuple[str, str, str], ...] = (
    # the nodes unpickle checkpoints (a restricted unpickler) and decode untrusted images: no write outside the state container,
    # where the app's deployment package, the preview site and incoming/ live
    ("node", "storage", BLOB_WRITE), ("node", "storage", BLOB_DELETE), ("node", "storage", CONTAINER_WRITE),
    ("node", "storage", f"{STORAGE}/containers/delete"),
    ("node", "vault", SET_SECRET),
    # the app's own secrets: a node that could read the notification signing key could forge task-ended notifications
    ("node", "app-vault", GET_SECRET), ("node", "app-vault", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"),
    ("node", "app-vault", SET_SECRET),
    ("node", "registry", "Microsoft.ContainerRegistry/registries/push/write"),
    # the app submits jobs; it never creates, resizes or deletes pools, nor reads account keys
    ("app", "batch", "Microsoft.Batch/batchAccounts/pools/write"),
    ("app", "batch", "Microsoft.Batch/batchAccounts/listKeys/action"),
    ("app", "vault", SET_SECRET), ("app", "app-vault", SET_SECRET),
    # the operator ends or enables pool jobs by hand; the pool itself is infra/'s (azd provision)
    ("user", "batch", "Microsoft.Batch/batchAccounts/pools/write"),
    ("user", "batch", "Microsoft.Batch/batchAccounts/listKeys/action"),
)

# Scopes an assignment at the key's scope covers.
COVERS = {"storage": {"storage", "storage/state"}, "storage/state": {"storage/state"}}
SCOPE_TYPES = {
    "Microsoft.Storage/storageAccounts": "storage",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "storage/state",
    "Microsoft.KeyVault/vaults": "vault",
    "Microsoft.Batch/batchAccounts": "batch",
    "Microsoft.ContainerRegistry/registries": "registry",
    "Microsoft.Insights/components": "insights",
    "Microsoft.EventGrid/topics": "events",
}
# Both vaults have one type: the rbac.bicep parameter naming the vault tells them apart.
VAULTS = {"keyVaultName": "vault", "appKeyVaultName": "app-vault"}


def _matches(pattern: str, permission: str) -> bool:
    """Azure's wildcard match of an action pattern (``*`` any characters; case-insensitive)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, permission, flags=re.IGNORECASE) is not None


def allows(role: Role, permission: str) -> bool:
    return any(_matches(p, permission) for p in role.actions + role.data_actions)


def assignments(templates: dict[str, Template]) -> set[tuple[str, str, str]]:
    """(identity, scope, role id) of every role assignment in app/rbac.bicep, principals and scopes resolved through
    main.bicep's module parameters."""
    rbac = module_file(templates, "rbac")
    identity = {"appPrincipalId": "app", "nodePrincipalId": "node", "userPrincipalId": "user"}
    assert chain(module_param(templates, "rbac", "appPrincipalId"))[0] == "appIdentity"
    assert chain(module_param(templates, "rbac", "nodePrincipalId"))[0] == "nodeIdentity"
    assert chain(module_param(templates, "rbac", "keyVaultName"))[0] == "keyVault"
    assert chain(module_param(templates, "rbac", "appKeyVaultName"))[0] == "appKeyVault"
    found = set()
    for body in rbac.of_type("Microsoft.Authorization/roleAssignments").values():
        props = body["properties"]
        role_id = rbac.resolve(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        target = rbac.resources[body["scope"]]
        scope = SCOPE_TYPES[target["type"]]
        if scope == "storage/state":  # a container: it must be the state container the app and nodes write to
            container = rbac.body(body["scope"])
            assert container["name"] == "stateContainerName", f"role on container {container['name']!r}"
        elif scope == "vault":
            scope = VAULTS[rbac.body(body["scope"])["name"]]
        found.add((identity[props["principalId"]], scope, role_id))
    return found


def granted(found: set[tuple[str, str, str]], who: str, scope: str, permission: str) -> list[str]:
    """Names of the assigned roles that give ``who`` ``permission`` at ``scope``."""
    return [BUILTIN_ROLES[role].name for identity, at, role in found
            if identity == who and scope in COVERS.get(at, {at}) and role in BUILTIN_ROLES
            and allows(BUILTIN_ROLES[role], permission)]


def test_every_role_is_a_known_builtin_with_its_microsoft_id(templates: dict[str, Template]) -> None:
    """A wrong GUID fails the deployment (no such role) or, worse, grants another role. Each id rbac.bicep names is
    the built-in role its variable says (storageBlobDataOwner -> Storage Blob Data Owner); no Owner, Contributor or
    User Access Administrator (not in BUILTIN_ROLES) is assigned anywhere."""
    rbac = module_file(templates, "rbac")
    for var, spec in rbac.variables.items():
        value = spec["value"]
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", value):
            assert value in BUILTIN_ROLES, f"{var} = {value}: not a role this audit knows"
            assert BUILTIN_ROLES[value].name.replace(" ", "").lower() == var.lower(), \
                f"{var} = {value} is {BUILTIN_ROLES[value].name}"
    for _, _, role in assignments(templates):
        assert role in BUILTIN_ROLES, f"role {role} assigned but not audited"
    assert {k: v.name for k, v in BUILTIN_ROLES.items()} == {k: v for k, v in ROLES.items()}


def test_every_operation_is_allowed_where_it_happens(templates: dict[str, Template]) -> None:
    found = assignments(templates)
    missing = [f"{op.identity} at {op.scope}: {op.permission} ({op.where})" for op in OPERATIONS
               if not granted(found, op.identity, op.scope, op.permission)]
    assert not missing, "no assigned role allows:\n" + "\n".join(missing)


def test_every_assignment_is_needed_by_an_operation(templates: dict[str, Template]) -> None:
    """An assignment no operation needs is privilege nobody uses: drop it, or add the operation that needs it."""
    unused = []
    for identity, at, role in assignments(templates):
        needed = [op for op in OPERATIONS if op.identity == identity and op.scope in COVERS.get(at, {at})
                  and allows(BUILTIN_ROLES[role], op.permission)]
        if not needed:
            unused.append(f"{identity}: {BUILTIN_ROLES[role].name} at {at}")
    assert not unused, unused


def test_least_privilege(templates: dict[str, Template]) -> None:
    found = assignments(templates)
    too_much = {f"{who} at {scope}: {permission} via {roles}" for who, scope, permission in MUST_NOT
                if (roles := granted(found, who, scope, permission))}
    assert not too_much, too_much


def test_the_nodes_write_to_the_container_the_app_names(templates: dict[str, Template]) -> None:
    """The container the nodes may write to is the one the app writes manifests' output_container from
    (TRAPBATCH_CONTAINER; activities/enumerate.py) and the pool's log container (adapters/clients.py)."""
    trapbatch, _ = app_settings(templates)
    assert module_param(templates, "rbac", "stateContainerName") == trapbatch["TRAPBATCH_CONTAINER"] \
        == "stateContainerName"
    assert main(templates).resolve("stateContainerName") == "trapbatch"
    assert "stateContainerName" in module_param(templates, "storage", "containers"), "created by core/storage"


def _deploy_roles_table() -> set[tuple[str, str]]:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = text.split("## Roles and why", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] and not set(cells[0]) <= {"-"} and cells[0] != "identity":
            who = {"app": "app", "nodes": "node"}.get(cells[0], "user" if cells[0].startswith("you") else cells[0])
            role = re.sub(r"\s*\(`[0-9a-f-]{36}`\)", "", cells[2]).replace("*", "").strip()
            rows.add((who, role))
    return rows


def test_deploy_docs_list_every_assignment(templates: dict[str, Template]) -> None:
    """docs/deploy.md "Roles and why" is what an operator reads before granting or auditing by hand."""
    assigned = {(identity, BUILTIN_ROLES[role].name) for identity, _, role in assignments(templates)}
    assert _deploy_roles_table() == assigned


# Batch's data plane authorizes an Entra ID caller by these control-plane actions too
# (batch-role-based-access-control.md "Assign a custom role": listKeys/action "for any operation", read "for any read
# operation"), besides dataActions.
BATCH_ANY_OPERATION = "Microsoft.Batch/batchAccounts/listKeys/action"
# Owner and Contributor as built-in-roles/privileged.md defines them: actions "*", no dataActions (Contributor's
# notActions are Microsoft.Authorization writes and deletes, blueprints, gallery sharing and the like: none of Batch's)
OWNER_OR_CONTRIBUTOR = Role("Owner/Contributor", ("*",))


def test_the_docs_say_what_the_pool_job_commands_need() -> None:
    """docs/deploy.md "Pool jobs by hand": ``az batch account login`` reads the account through ARM
    (``batchAccounts/read``; azure-cli batch ``login_account``), which the Azure Batch Job Submitter azd assigns does
    not give, so the page names it; and the job commands, which the Job Submitter allows through ``jobs/*``
    dataActions, are open to the Owner or Contributor azd up needs through ``listKeys/action``, which the page says
    rather than call the question open."""
    submitter = next(r for r in BUILTIN_ROLES.values() if r.name == "Azure Batch Job Submitter")
    login = "Microsoft.Batch/batchAccounts/read"
    assert not allows(submitter, login)
    jobs = [op for op in OPERATIONS if op.identity == "user" and op.scope == "batch"]
    assert jobs and all(allows(submitter, op.permission) for op in jobs)
    assert not OWNER_OR_CONTRIBUTOR.data_actions and allows(OWNER_OR_CONTRIBUTOR, BATCH_ANY_OPERATION)
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = " ".join(text.split("## Pool jobs by hand", 1)[1].split("\n## ", 1)[0].split())
    assert f"`{login}`" in section and "*Azure Batch Job Submitter* does not" in section
    assert f"`{BATCH_ANY_OPERATION}` \"for any operation\"" in section
    assert "Owner or Contributor that `azd up` needs" in section and "not settled" not in section


def test_source_account_errors_name_the_role_and_both_identities() -> None:
    """Images in another account are read by the app (enumeration, previews) *and* by every GPU node, each with its
    own identity, outside infra/'s reach. What the operator reads must say that both need Storage Blob Data Reader
    there: the app's refusal at the edge, an unreadable image list, the preview page's note on images the nodes
    could not read (failure_reason "auth"), README and docs/deploy.md. Before, the edge said "the app's identity",
    README "trapbatch's managed identity": a task whose app identity had the role started, and every shard failed."""
    from activities.previews import _failures_note
    from gpu_batch.storage_refs import NO_ACCESS_HINT

    assert "Storage Blob Data Reader" in NO_ACCESS_HINT and "id-api-" in NO_ACCESS_HINT \
        and "id-nodes-" in NO_ACCESS_HINT and "credential_secret" in NO_ACCESS_HINT
    starters = (REPO / "api" / "starters.py").read_text(encoding="utf-8")
    image_lists = (REPO / "adapters" / "image_lists.py").read_text(encoding="utf-8")
    check_source = starters.split("def _check_source", 1)[1].split("\ndef ", 1)[0]
    assert re.search(r"raise source_error\(exc, [^\n]*NO_ACCESS\b", check_source), check_source  # the refusal's hint
    assert "from adapters.image_lists import NO_ACCESS," in starters  # api may not import gpu_batch.storage_refs
    assert "NO_ACCESS = NO_ACCESS_HINT" in image_lists
    note = _failures_note({"auth": 3, "undecodable": 1})
    assert "Storage Blob Data Reader" in note and "id-nodes-" in note and "credential_secret" in note
    assert "id-nodes-" not in _failures_note({"undecodable": 1})
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("### Images in another storage account", 1)[1]
    deploy = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8").split("**Images in another storage account**",
                                                                             1)[1]
    for text in (readme[:1200], deploy[:600]):
        assert "Storage Blob Data Reader" in text and "id-api-" in text and "id-nodes-" in text, text


def test_the_app_reads_its_signing_key_from_a_vault_the_nodes_cannot_read(templates: dict[str, Template]) -> None:
    """The nodes read the sources' vault by names requests choose (no per-secret scoping is possible) and decode
    untrusted images; the notification signing key sat in that vault, so a compromised node could forge task-ended
    notifications. The app's own secrets now live in a second vault (TRAPBATCH_APP_KEY_VAULT_URL) that the app reads,
    the deploying user writes (azd output AZURE_APP_KEY_VAULT_NAME, docs/deploy.md), and the nodes cannot."""
    trapbatch, _ = app_settings(templates)
    assert chain(trapbatch["TRAPBATCH_KEY_VAULT_URL"]) == ["keyVault", "outputs", "uri"]
    assert chain(trapbatch["TRAPBATCH_APP_KEY_VAULT_URL"]) == ["appKeyVault", "outputs", "uri"]
    m = main(templates)
    assert module_file(templates, "appKeyVault").name == module_file(templates, "keyVault").name \
        == "core/security/keyvault.bicep"
    names = {module_param(templates, v, "name") for v in ("keyVault", "appKeyVault")}
    assert len(names) == 2, names
    for name in names:  # Key Vault names: 3-24 characters; uniqueString() gives 13
        assert name.endswith("${resourceToken}") and 3 <= len(name.replace("${resourceToken}", "x" * 13)) <= 24, name
    assert chain(m.outputs["AZURE_APP_KEY_VAULT_NAME"]["value"]) == ["appKeyVault", "outputs", "name"]
    found = assignments(templates)
    assert granted(found, "app", "app-vault", GET_SECRET) and not granted(found, "node", "app-vault", GET_SECRET)
    deploy = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert 'az keyvault secret set --vault-name "$AZURE_APP_KEY_VAULT_NAME"' in deploy
