// Every role assignment of a trapbatch deployment, in one place. No loops: each assignment is written out, so that
// nothing here iterates over a value known only during the deployment (BCP178, the error of the previous template)
// and each can be read (and tested: tests/infra/test_bicep_model.py) on its own.
// Assignment names are guid(scope, principal, role): deterministic, so re-deploying is idempotent. Principal ids
// arrive as module parameters, which Bicep treats as known when this module starts.
//
// Functions app identity (function_app.py, activities, the HTTP API):
//   storage   Storage Blob Data Owner        host storage, deployment package, blob trigger, task state, previews
//             Storage Queue Data Contributor Durable Functions control/work-item queues, blob trigger poison queue
//             Storage Table Data Contributor Durable Functions history and instance tables
//             (these three: the azd Durable quickstart's rbac.bicep, and functions-reference.md "Connecting to
//             host storage with an identity")
//   batch     Azure Batch Job Submitter      create jobs and tasks, list and terminate them; it cannot change pools
//             (batch-role-based-access-control.md; everything trapbatch's AzureBatchPool calls is under jobs/*)
//   vault     Key Vault Secrets User         read source-account SAS tokens by name
//   app vault Key Vault Secrets User         read the app's own secrets (TRAPBATCH_NOTIFY_SECRET: the key that signs
//                                            task-ended notifications; activities/notify.py)
//   insights  Monitoring Metrics Publisher   send telemetry with Entra ID (local auth is off)
//   events    EventGrid Data Sender          publish "task ended" events to the custom topic (local auth is off;
//             event-grid/authenticate-with-microsoft-entra-id.md)
// GPU node identity (gpu_batch/worker, and the Batch agent uploading task logs):
//   storage   Storage Blob Data Reader       read images (any container of the account), the models container
//   trapbatch Storage Blob Data Contributor  the state container only: read manifests, write results, progress and
//                                            the task logs Batch uploads (batch-task-output-files.md: the identity
//                                            needs write access to the destination container)
//             Why not Contributor on the whole account: the nodes unpickle model checkpoints (restricted to known
//             classes: gpu_batch/worker/loader.py) and decode untrusted images; write access elsewhere would let a
//             compromised node replace the Functions app's deployment package (app-package-*), the preview site
//             ($web) or drop task requests (incoming/).
//   vault     Key Vault Secrets User         read source-account SAS tokens by name
//             Nothing on the app vault: requests choose the source secrets' names, so the nodes need every secret
//             of `vault` and no per-secret role can scope them; the app's signing key therefore lives in a vault of
//             its own, out of reach of a node that decodes untrusted images (it could forge notifications).
//   registry  AcrPull                        pull the worker image (containerRegistries.identityReference)
// Deploying user (azd's AZURE_PRINCIPAL_ID; skipped when empty):
//   storage   Storage Blob Data Contributor  upload images, drop task requests, read results
//   vault     Key Vault Secrets Officer      add the SAS tokens that requests name
//   app vault Key Vault Secrets Officer      set the notification signing key (docs/deploy.md)
//   batch     Azure Batch Job Submitter      end or enable the pool job a failed task names (az batch job stop /
//                                            enable; docs/deploy.md "Pool jobs by hand") with Entra ID, the only
//                                            auth the account takes: jobs/* are its dataActions. The Owner or
//                                            Contributor azd up needs allows it as well, through listKeys/action,
//                                            which batch-role-based-access-control.md ("Assign a custom role") lists
//                                            "for any operation"; kept, as it grants jobs and job schedules only (no
//                                            pool or key rights). Not tried on a live account.

param storageAccountName string
@description('The state container (TRAPBATCH_CONTAINER): the only one the GPU nodes may write to.')
param stateContainerName string
@description('The vault of source-account credentials: the app and the GPU nodes read it.')
param keyVaultName string
@description('The vault of the app\'s own secrets (notification signing key): the app reads it, the nodes cannot.')
param appKeyVaultName string
param batchAccountName string
param registryName string
param applicationInsightsName string
param taskEventsTopicName string
param appPrincipalId string
param nodePrincipalId string
@description('Object id of the deploying user or CI principal; empty = no user roles.')
param userPrincipalId string = ''
@allowed(['User', 'ServicePrincipal', 'Group'])
param userPrincipalType string = 'User'

// Built-in role definition ids (role-based-access-control/built-in-roles.md; Batch: batch-role-based-access-control.md)
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var azureBatchJobSubmitter = '48e5e92e-a480-4e71-aa9c-2778f4c13781'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

// Created by core/storage (main.bicep passes the same name to both), which this module waits for through its
// storageAccountName output.
resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: stateContainerName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: appKeyVaultName
}

resource batch 'Microsoft.Batch/batchAccounts@2024-07-01' existing = {
  name: batchAccountName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource taskEvents 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: taskEventsTopicName
}

// ---------------------------------------------------------------- Functions app identity
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

resource appBatchJobSubmitter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(batch.id, appPrincipalId, azureBatchJobSubmitter)
  scope: batch
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureBatchJobSubmitter)
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource appAppSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appVault.id, appPrincipalId, keyVaultSecretsUser)
  scope: appVault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource appEventsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(taskEvents.id, appPrincipalId, eventGridDataSender)
  scope: taskEvents
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
  }
}

// ---------------------------------------------------------------- GPU node identity
resource nodeBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, nodePrincipalId, storageBlobDataReader)
  scope: storage
  properties: {
    principalId: nodePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}

resource nodeStateContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, nodePrincipalId, storageBlobDataContributor)
  scope: stateContainer
  properties: {
    principalId: nodePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource nodeSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, nodePrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: nodePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource nodeAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, nodePrincipalId, acrPull)
  scope: registry
  properties: {
    principalId: nodePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
  }
}

// ---------------------------------------------------------------- deploying user
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
  }
}

resource userAppSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(appVault.id, userPrincipalId, keyVaultSecretsOfficer)
  scope: appVault
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
  }
}

resource userBatchJobSubmitter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(batch.id, userPrincipalId, azureBatchJobSubmitter)
  scope: batch
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureBatchJobSubmitter)
  }
}
