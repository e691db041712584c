// trapbatch: Functions app (Durable, Python) + storage + Azure Batch GPU pool + Key Vault, identity-based throughout.
// App-setting names match core/settings.py exactly. No keys or SAS tokens are placed in app settings:
// the Function App and the Batch nodes reach storage with managed identities.
// NOT YET VALIDATED against a live subscription (no Azure account is reachable from our build machines);
// `az bicep build --file infra/main.bicep` is the check we can run.
targetScope = 'resourceGroup'

@description('Short name used to derive resource names.')
param name string = 'trapbatch'
param location string = resourceGroup().location
@description('Container image of the GPU worker (gpu_batch/Dockerfile), e.g. myregistry.azurecr.io/trapbatch-worker:1.0')
param workerImage string
@description('GPU VM size of the Batch pool.')
param gpuVmSize string = 'Standard_NC4as_T4_v3'
@description('Upper bound of GPU nodes; the pool autoscales on pending tasks.')
param maxGpuNodes int = 16
@description('Default detector model for tasks that name none.')
param defaultModel string = 'MDV5A'

var suffix = uniqueString(resourceGroup().id, name)
var storageName = toLower('st${take(name, 8)}${suffix}')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in ['trapbatch', 'incoming', 'deployments']: {
  parent: blobService
  name: c
}]

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}-app-${suffix}'
  location: location
}

resource nodeIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}-nodes-${suffix}'
  location: location
}

// Storage Blob Data Owner for the app (blobs, plus the Durable task hub's queues and tables below),
// Storage Blob Data Contributor for the GPU nodes (read images, write shard results).
var blobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var queueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var tableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource appRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [blobDataOwner, queueDataContributor, tableDataContributor]: {
  name: guid(storage.id, appIdentity.id, role)
  scope: storage
  properties: {
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource nodeRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, nodeIdentity.id, blobDataContributor)
  scope: storage
  properties: {
    principalId: nodeIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${take(name, 8)}-${take(suffix, 10)}'
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
  }
}

// Source-account credentials (SAS tokens / connection strings that requests name by secret name) are read by the
// app (enumeration, previews) and by the GPU nodes (image download), each with its own identity.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
resource vaultReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in [appIdentity.properties.principalId, nodeIdentity.properties.principalId]: {
  name: guid(vault.id, principal, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principal
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}]

resource batch 'Microsoft.Batch/batchAccounts@2024-07-01' = {
  name: toLower('ba${take(name, 8)}${take(suffix, 10)}')
  location: location
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${appIdentity.id}': {} } }
  properties: {
    poolAllocationMode: 'BatchService'
    allowedAuthenticationModes: ['AAD']
  }
}

resource gpuPool 'Microsoft.Batch/batchAccounts/pools@2024-07-01' = {
  parent: batch
  name: 'gpu'
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${nodeIdentity.id}': {} } }
  properties: {
    vmSize: gpuVmSize
    taskSlotsPerNode: 1
    deploymentConfiguration: {
      virtualMachineConfiguration: {
        imageReference: {
          publisher: 'microsoft-dsvm'
          offer: 'ubuntu-hpc'
          sku: '2204'
          version: 'latest'
        }
        nodeAgentSkuId: 'batch.node.ubuntu 22.04'
        containerConfiguration: {
          type: 'DockerCompatible'
          containerImageNames: [workerImage]
        }
      }
    }
    scaleSettings: {
      autoScale: {
        evaluationInterval: 'PT5M'
        formula: '$pending = max($PendingTasks.GetSample(1)); $TargetLowPriorityNodes = 0; $TargetDedicatedNodes = min(${maxGpuNodes}, $pending); $NodeDeallocationOption = taskcompletion;'
      }
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: 'plan-${name}-${suffix}'
  location: location
  sku: { name: 'EP1', tier: 'ElasticPremium' }
  kind: 'elastic'
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2023-12-01' = {
  name: 'func-${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${appIdentity.id}': {} } }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: appIdentity.id
    siteConfig: {
      linuxFxVersion: 'Python|3.11'
      appSettings: [
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: appIdentity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: appIdentity.properties.clientId }
        { name: 'TRAPBATCH_TASK_HUB', value: 'trapbatch' }
        { name: 'TRAPBATCH_CONTAINER', value: 'trapbatch' }
        { name: 'TRAPBATCH_POOL', value: 'azure_batch' }
        { name: 'TRAPBATCH_MODEL', value: defaultModel }
        { name: 'TRAPBATCH_BATCH_ACCOUNT_URL', value: 'https://${batch.properties.accountEndpoint}' }
        { name: 'TRAPBATCH_BATCH_POOL_ID', value: gpuPool.name }
        { name: 'TRAPBATCH_WORKER_IMAGE', value: workerImage }
        { name: 'TRAPBATCH_WORKER_IDENTITY', value: nodeIdentity.properties.clientId }
        { name: 'TRAPBATCH_STORAGE_ACCOUNT_URL', value: storage.properties.primaryEndpoints.blob }
        { name: 'TRAPBATCH_KEY_VAULT_URL', value: vault.properties.vaultUri }
      ]
    }
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output storageAccountName string = storage.name
output batchAccountEndpoint string = batch.properties.accountEndpoint
output keyVaultName string = vault.name
