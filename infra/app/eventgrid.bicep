// Event Grid system topic on the storage account: the source of the `task_dropped` blob trigger (api/starters.py,
// path `incoming/{name}`, source Event Grid). The event subscription that delivers BlobCreated events under
// /blobServices/default/containers/incoming/ to the Functions host's webhook
//   https://<app host>/runtime/webhooks/blobs?functionName=Host.Functions.task_dropped&code=<blobs_extension key>
// is created by infra/hooks/postdeploy.(sh|ps1): the blobs_extension system key exists only after the code is
// deployed and the host has loaded the blob extension (as in functions-quickstart-python-azd-eventgrid-blob).

param name string
param location string = resourceGroup().location
param tags object = {}
param storageAccountId string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
output id string = topic.id
