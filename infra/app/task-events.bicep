// Event Grid custom topic for "a task ended" events (core/task_events.py; activities/task_events.py publishes them,
// once per final stage, where TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT names this topic's endpoint).
// CloudEvents 1.0 input schema: the app posts `application/cloudevents-batch+json`, and a topic in the Event Grid
// schema would refuse it. Local (access key and SAS) authentication is off: the app publishes with an Entra ID token
// of its managed identity, which holds "EventGrid Data Sender" on this topic (app/rbac.bicep).
// Subscribers are not created here: whoever wants word of a task's end adds an event subscription, filtered by
// `type` (trapbatch.task.<stage>) or `subject` (/tasks/<task id>) if they wish (docs/deploy.md).

param name string
param location string = resourceGroup().location
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193:The Functions app (Flex Consumption, no virtual network) publishes over the public endpoint; only Entra ID tokens with EventGrid Data Sender on this topic are accepted (local auth is off).
  name: name
  location: location
  tags: tags
  // Lets subscribers have events delivered keylessly (deliveryWithResourceIdentity) to Service Bus, Event Hubs or
  // storage queues, by granting this identity a sender role there.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output id string = topic.id
output endpoint string = topic.properties.endpoint
