// The one storage account of a trapbatch deployment. It holds:
//   * the Functions host state and the Durable task hub (blobs, queues, tables: AzureWebJobsStorage__*),
//   * the Flex Consumption deployment package container (functionAppConfig.deployment.storage),
//   * `trapbatch` (task state, shard manifests, results) and `incoming` (dropped task requests),
//   * `$web`, the static website with the preview pages (created when infra/hooks/postprovision enables it;
//     the static website is a data-plane setting that ARM does not expose).
// Shared-key access is off: every reader and writer (Functions app, Batch nodes, the deploying user, Event Grid's
// system topic, which needs no key) uses Microsoft Entra ID.

param name string
param location string = resourceGroup().location
param tags object = {}
@description('Blob containers to create (their names are fixed before the deployment starts).')
param containers array = []
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS'])
param skuName string = 'Standard_LRS'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:The Functions app (Flex Consumption without VNet integration), the Batch nodes (Batch-managed networking, no VNet) and Event Grid reach this account over its public endpoint; access is Entra ID only (allowSharedKeyAccess false). A private deployment needs VNets for both, see docs/deploy.md.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed by the Flex app and the Batch nodes, which run without VNets here; no anonymous or key access is possible.
  // checkov:skip=CKV_AZURE_206:Replication is a parameter (main.bicep storageSkuName, azd env TRAPBATCH_STORAGE_SKU); LRS is the default to keep the cheapest option: the images normally stay in the user's own account and lost results can be recomputed from them. Choose Standard_ZRS or Standard_GRS for more durability.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containers: {
  parent: blobService
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

output name string = storage.name
output id string = storage.id
output primaryEndpoints object = storage.properties.primaryEndpoints
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
@description('The static website endpoint (https://<account>.z<n>.web.core.windows.net/); it answers once the hook enabled the website.')
output webEndpoint string = storage.properties.primaryEndpoints.web
