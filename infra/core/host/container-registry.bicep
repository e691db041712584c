// Azure Container Registry for the GPU worker image (gpu_batch/Dockerfile), built and pushed by
// infra/hooks/postprovision with `az acr build` (ACR Tasks: no local Docker needed). The Batch nodes pull with their
// user-assigned identity (AcrPull, app/rbac.bicep); the admin user stays off, so no registry password exists.

param name string
param location string = resourceGroup().location
param tags object = {}
@allowed(['Basic', 'Standard', 'Premium'])
param skuName string = 'Basic'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139:The Batch nodes pull over the registry's public endpoint (no VNet); pulls need an Entra ID token with AcrPull. Private access needs the Premium SKU and VNets.
  // checkov:skip=CKV_AZURE_163:Image vulnerability scanning is Microsoft Defender for Containers, a subscription-level plan, not a registry property.
  // checkov:skip=CKV_AZURE_166:Quarantine needs the Premium SKU and a scanner that releases images.
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

output name string = registry.name
output id string = registry.id
output loginServer string = registry.properties.loginServer
