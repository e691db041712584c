// The trapbatch Functions app (function_app.py: HTTP API, blob drop, Durable orchestrations and activities) on the
// Flex Consumption plan, shaped like the azd quickstarts for Python Durable Functions and for the Event Grid blob
// trigger (Azure-Samples/durable-functions-quickstart-python-azd, functions-quickstart-python-azd-eventgrid-blob):
//   * functionAppConfig: Python 3.11 runtime, deployment package in a blob container read with the app's
//     user-assigned identity (no storage key anywhere), scale-out limit and instance memory;
//   * host storage (AzureWebJobsStorage) and the Durable task hub identity-based: blob + queue + table service URIs,
//     credential managedidentity, clientId of the user-assigned identity;
//   * Application Insights with Entra ID authentication (local auth is off on the component).
// Flex Consumption takes the runtime from functionAppConfig only: FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION and the other settings that Flex deprecates are deliberately absent.
// The blob trigger on `incoming/` uses the Event Grid source (the only blob trigger Flex Consumption supports,
// flex-consumption-plan.md); its event subscription needs the host's blobs_extension key, which exists only once
// the code is deployed, so infra/hooks/postdeploy creates it, as the Event Grid quickstart does.

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}
@description('azd service name (azure.yaml `services:` key); azd finds the app to deploy to by this tag.')
param serviceName string = 'api'
param identityId string
param identityClientId string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string
@description('App settings of trapbatch itself (core/settings.py names), merged over the host settings below.')
param appSettings object = {}
// 4,096 MB (two cores): a ten-million-image task's Camtrap DP events step alone holds up to ~0.9 GB (bench/RESULTS.md
// twenty-seventh session) beside the Python worker and up to 7 more activities (host.json); 2,048 MB left it no room
@description('Memory of each Flex Consumption instance (MB); 4,096 lets a ten-million-image task\'s largest activity run beside the others.')
@allowed([2048, 4096])
param instanceMemoryMB int = 4096
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100
param runtimeVersion string = '3.11'
// Callers (api/callers.py): App Service Authentication ("Easy Auth") with Microsoft Entra ID in front of the app. The
// app registration is created by the deployer (docs/deploy.md): azd and this template cannot create it without
// Microsoft Graph permissions. Empty: no Easy Auth, TRAPBATCH_CALLER_AUTH stays 'none' and every function-key holder
// is an operator.
@description('Client (application) id of the Entra ID app registration that callers get tokens for; empty: no App Service Authentication.')
param authClientId string = ''
@description('Tenant of that app registration.')
param authTenantId string = tenant().tenantId
@description('Token audiences accepted besides the client id and api://<client id>.')
param authAllowedAudiences array = []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy for Flex Consumption exists only in some regions and is not enabled here: all state of this batch workload (Durable task hub, task state) is in storage, so losing an instance only delays a poll.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var hostSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  // The app's own Azure SDK clients (Batch, storage, Key Vault) use DefaultAzureCredential: this selects the
  // user-assigned identity for them.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// With Easy Auth, the app trusts its X-MS-CLIENT-PRINCIPAL headers (api/callers.py). main.bicep's appSettings win.
var callerSettings = empty(authClientId) ? {} : {
  TRAPBATCH_CALLER_AUTH: 'easyauth'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Client certificates would lock out the HTTP API's callers (curl, the preview page's instructions); HTTP endpoints use function keys and, with authClientId, Entra ID (authsettingsV2 below).
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero between tasks; a minimum instance count would bill idle instances.
  // checkov:skip=CKV_AZURE_213:Health checks are an App Service feature for instances behind a load balancer; Flex Consumption manages instance health itself.
  // checkov:skip=CKV_AZURE_78:Flex Consumption refuses an FTPS setting in siteConfig (ARM: 'The following site configuration property (Site.SiteConfig.FtpsState) for Flex Consumption sites is invalid'); a Flex app is deployed from its blob container and has no FTP publishing.
  // checkov:skip=CKV_AZURE_222:The HTTP API and the Event Grid webhook (/runtime/webhooks/blobs) must be reachable from the internet; both need keys.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(union(callerSettings, appSettings, hostSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: runtimeVersion
      }
    }
  }
}

// Every /api/ request needs an Entra ID token for the app registration (and still its function key); the platform
// verifies it, answers 401 without one, and sets X-MS-CLIENT-PRINCIPAL* (removing client-supplied copies). The
// host's own webhooks are excluded: Event Grid delivers blob events to /runtime/webhooks/blobs with the
// blobs_extension key and has no Entra ID token for this app; the Durable management webhooks keep their system key.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  // checkov:skip=CKV_AZURE_13:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_63:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_65:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_66:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_80:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_88:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  // checkov:skip=CKV_AZURE_222:checkov runs its Microsoft.Web/sites checks on this sites/config child (authsettingsV2), which has none of those properties; the site itself is checked above
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/blobs'
        '/runtime/webhooks/eventgrid'
        // a subtree needs the wildcard: the file-based auth reference writes "/path3/subpath/*"
        // (learn.microsoft.com app-service configure-authentication-file-based); every management URL has a sub-path
        '/runtime/webhooks/durabletask/*'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: concat([authClientId, 'api://${authClientId}'], authAllowedAudiences)
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
output baseUrl string = 'https://${app.properties.defaultHostName}'
