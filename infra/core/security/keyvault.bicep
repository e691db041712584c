// A Key Vault, Azure RBAC only (no access policies). main.bicep makes two: `keyVault` for source-account credentials
// (SAS tokens or connection strings that task requests name by secret name, never by value; the app and the GPU nodes
// get Key Vault Secrets User) and `appKeyVault` for the app's own secrets (the notification signing key; the app
// alone gets Secrets User). The deploying user gets Key Vault Secrets Officer on both (app/rbac.bicep).

param name string
param location string = resourceGroup().location
param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:The Functions app (no VNet integration) and the Batch nodes (Batch-managed networking) read secrets over the public endpoint; every call needs an Entra ID token with a Key Vault RBAC role. A private deployment needs VNets for both (docs/deploy.md).
  // checkov:skip=CKV_AZURE_189:Public network access stays on for the same reason as CKV_AZURE_109: the Flex app and the Batch nodes have no VNet here; RBAC-only access with Entra ID tokens.
  // checkov:skip=CKV_AZURE_110:Purge protection cannot be turned off once on, and it would keep a deleted vault's name taken for the retention period, so `azd down` followed by `azd up` in the same environment would fail. Soft delete (7 days) still protects against accidental deletion; the secrets are SAS tokens their owners can reissue.
  // checkov:skip=CKV_AZURE_42:Recoverability = soft delete + purge protection; soft delete is on, purge protection is off for the reason given at CKV_AZURE_110.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
