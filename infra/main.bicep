// trapbatch on Azure, deployed by `azd up` (azure.yaml at the repository root; docs/deploy.md):
//   Functions app on Flex Consumption (Python 3.11, Durable Functions, identity-based host storage)   app/api.bicep
//   storage account: task state, `incoming` drops, deployment package, static website for previews  core/storage
//   Event Grid system topic on that account (the blob trigger's event source)                        app/eventgrid.bicep
//   Event Grid custom topic for "a task ended" events (CloudEvents 1.0, Entra ID only)               app/task-events.bicep
//   Azure Batch account + autoscaling GPU pool of worker containers (Spot first)                     app/batch.bicep
//   Azure Container Registry for the worker image (built by infra/hooks/postprovision)               core/host
//   Key Vault (RBAC) for source-account SAS tokens (the app and the GPU nodes read it)                core/security
//   Key Vault (RBAC) for the app's own secrets (notification signing key); the nodes cannot read it   core/security
//   Log Analytics + Application Insights                                                             core/monitor
//   two user-assigned identities (app, GPU nodes) and every role assignment                           app/rbac.bicep
// Steps that ARM cannot do are azd hooks (azure.yaml): enabling the static website and building the worker image
// (postprovision), and the Event Grid subscription to the app's blobs_extension webhook (postdeploy).
// App-setting names are those of core/settings.py. No key, password or SAS appears in any setting or output.
// Never deployed from our build machines (no subscription is reachable there): see docs/deploy.md, "Never run".
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags of every resource derive from it.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer Flex Consumption and the GPU VM size (docs/deploy.md).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID); gets upload and Key Vault secret roles. Empty = none.')
param principalId string = ''
@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('GPU VM size of the Batch pool. Default: 1x T4, the cheapest NVIDIA GPU size Batch offers widely.')
param gpuVmSize string = 'Standard_NC4as_T4_v3'
@minValue(1)
@description('Most GPU nodes at once (Spot + dedicated); the Batch account needs cores quota for it.')
param maxGpuNodes int = 8
@minValue(0)
@maxValue(100)
@description('Share of maxGpuNodes allowed to be Spot (low-priority) nodes, in percent; Spot fills first.')
param spotPercent int = 75
@description('Detector used by requests that name none (TRAPBATCH_MODEL).')
param defaultModel string = 'MDV5A'
@description('Tag of the worker image. Change it (azd env set TRAPBATCH_WORKER_TAG ...) to ship a new worker.')
param workerImageTag string = 'v1'
@description('Shards run on a node-resident worker started by the pool\'s start task: start-up paid once per node (TRAPBATCH_WORKER_RESIDENT; app/batch.bicep).')
param residentWorker bool = false
@description('The resident worker runs every shard\'s network through torch.compile: the node\'s first shard pays the compile, later ones run faster (TRAPBATCH_RESIDENT_COMPILE; app/batch.bicep).')
param residentCompile bool = false
@description('GPU worker options added to every shard, e.g. --stage-threads 2 (TRAPBATCH_WORKER_TUNING; the app checks them at start: core/worker_tuning.py).')
param workerTuning string = ''
@description('Other storage accounts that requests may name as source_account_url (TRAPBATCH_SOURCE_ACCOUNTS).')
param sourceAccounts string = ''

@description('Client id of the Entra ID app registration callers sign in to (created by the deployer; see docs/deploy.md). Empty: no App Service Authentication, and every function-key holder is an operator.')
param authClientId string = ''
@minValue(40)
@maxValue(1000)
@description('Most Flex Consumption instances of the Functions app.')
param maximumFunctionInstances int = 100
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS'])
@description('Replication of the storage account (task state, results, previews).')
param storageSkuName string = 'Standard_LRS'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  project: 'trapbatch'
}
var functionAppName = 'func-api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var stateContainerName = 'trapbatch' // gpu_batch/layout.py DEFAULT_STATE_CONTAINER
var incomingContainerName = 'incoming' // gpu_batch/layout.py INCOMING_CONTAINER
var workerImageName = 'trapbatch-worker:${workerImageTag}'
var systemTopicName = 'evgt-storage-${resourceToken}'
var taskEventsTopicName = 'evgt-tasks-${resourceToken}'
var batchPoolId = 'gpu'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module appIdentity 'core/security/user-assigned-identity.bicep' = {
  name: 'appIdentity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module nodeIdentity 'core/security/user-assigned-identity.bicep' = {
  name: 'nodeIdentity'
  scope: rg
  params: {
    name: 'id-nodes-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    containers: [
      deploymentContainerName
      stateContainerName
      incomingContainerName
    ]
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'core/security/keyvault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
  }
}

// The app's own secrets (TRAPBATCH_NOTIFY_SECRET's value signs task-ended notifications). Not in keyVault: the GPU
// nodes read that vault's secrets by names that requests choose (so no per-secret role can scope them), and a node
// decodes untrusted images; a compromised node must not be able to read the key and forge notifications.
// 'kva-' + the 13-character token = 17 characters, within Key Vault's 3-24.
module appKeyVault 'core/security/keyvault.bicep' = {
  name: 'appKeyVault'
  scope: rg
  params: {
    name: 'kva-${resourceToken}'
    location: location
    tags: tags
  }
}

module registry 'core/host/container-registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: 'cr${resourceToken}'
    location: location
    tags: tags
  }
}

module batch 'app/batch.bicep' = {
  name: 'batch'
  scope: rg
  params: {
    accountName: 'ba${resourceToken}'
    poolId: batchPoolId
    location: location
    tags: tags
    vmSize: gpuVmSize
    maxNodes: maxGpuNodes
    spotPercent: spotPercent
    nodeIdentityId: nodeIdentity.outputs.id
    registryServer: registry.outputs.loginServer
    workerImage: '${registry.outputs.loginServer}/${workerImageName}'
    residentWorker: residentWorker
    residentCompile: residentCompile
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventGrid'
  scope: rg
  params: {
    name: systemTopicName
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
  }
}

module taskEvents 'app/task-events.bicep' = {
  name: 'taskEvents'
  scope: rg
  params: {
    name: taskEventsTopicName
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    stateContainerName: stateContainerName // the nodes write here only (TRAPBATCH_CONTAINER below)
    keyVaultName: keyVault.outputs.name
    appKeyVaultName: appKeyVault.outputs.name
    batchAccountName: batch.outputs.accountName
    registryName: registry.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    taskEventsTopicName: taskEvents.outputs.name
    appPrincipalId: appIdentity.outputs.principalId
    nodePrincipalId: nodeIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    authClientId: authClientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumFunctionInstances
    // trapbatch's own settings: the names of core/settings.py (tests/infra checks them against it).
    appSettings: {
      TRAPBATCH_TASK_HUB: 'trapbatch' // host.json durableTask.hubName
      TRAPBATCH_CONTAINER: stateContainerName
      TRAPBATCH_WEB_CONTAINER: '$web'
      TRAPBATCH_PUBLIC_WEB_URL: storage.outputs.webEndpoint
      TRAPBATCH_DROP_TRIGGER_SOURCE: 'EventGrid'
      TRAPBATCH_POOL: 'azure_batch'
      TRAPBATCH_MODEL: defaultModel
      TRAPBATCH_BATCH_ACCOUNT_URL: batch.outputs.accountEndpoint
      TRAPBATCH_BATCH_POOL_ID: batch.outputs.poolId
      TRAPBATCH_POOL_VM_SIZE: gpuVmSize // the pool's size: its list price prices each task (core/cost.py)
      TRAPBATCH_POOL_NODES: string(maxGpuNodes) // the pool's most nodes: a dry run's wall-time estimate (core/estimate.py)
      TRAPBATCH_WORKER_IMAGE: '${registry.outputs.loginServer}/${workerImageName}'
      TRAPBATCH_WORKER_RESIDENT: residentWorker ? '1' : '0' // tasks run the resident client (app/batch.bicep)
      TRAPBATCH_WORKER_TUNING: workerTuning // appended to every shard's worker command (core/worker_tuning.py)
      TRAPBATCH_WORKER_IDENTITY: nodeIdentity.outputs.clientId
      TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID: nodeIdentity.outputs.id
      TRAPBATCH_STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
      TRAPBATCH_KEY_VAULT_URL: keyVault.outputs.uri
      TRAPBATCH_APP_KEY_VAULT_URL: appKeyVault.outputs.uri // the notification signing key (not readable by the nodes)
      TRAPBATCH_SOURCE_ACCOUNTS: sourceAccounts
      TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT: taskEvents.outputs.endpoint
    }
  }
  dependsOn: [
    rbac // the app reads its deployment package and host storage with these roles from its first start
  ]
}

// Outputs become azd environment values (`azd env get-values`), read by infra/hooks/*.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_BASE_URL string = api.outputs.baseUrl
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output INCOMING_CONTAINER_NAME string = incomingContainerName
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.name
output EVENTGRID_TASK_EVENTS_TOPIC_NAME string = taskEvents.outputs.name
output EVENTGRID_TASK_EVENTS_TOPIC_ENDPOINT string = taskEvents.outputs.endpoint
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output TRAPBATCH_WORKER_IMAGE_NAME string = workerImageName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_APP_KEY_VAULT_NAME string = appKeyVault.outputs.name
output AZURE_BATCH_ACCOUNT_NAME string = batch.outputs.accountName
output AZURE_BATCH_POOL_ID string = batch.outputs.poolId
output TRAPBATCH_PUBLIC_WEB_URL string = storage.outputs.webEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
