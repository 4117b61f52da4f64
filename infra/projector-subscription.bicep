// The Event Grid subscription that delivers the topic's notifications to the Projector function,
// through the Functions host's Event Grid extension webhook:
//   https://{app host}/runtime/webhooks/eventgrid?functionName=Projector&code={eventgrid_extension key}
// The host answers the subscription's validation handshake itself, and invokes the function once
// per event. The key is the host's system key `eventgrid_extension`, which exists only once the
// host has started with an Event Grid trigger, so main.bicep deploys this module only with
// subscribeProjector=true, after the package (README, "Deploy to Azure").

@description('Name of the Function App (in this resource group).')
param appName string

@description('Name of the Event Grid custom topic (in this resource group).')
param topicName string

@description('Storage account holding the dead-letter container (in this resource group).')
param storageAccountName string

@description('Blob container Event Grid dead-letters undeliverable notifications to, with the topic\'s identity.')
param deadLetterContainerName string

@description('Function that receives the notifications.')
param functionName string = 'Projector'

@description('Schema of the deliveries: the topic\'s input schema.')
@allowed([
  'EventGridSchema'
  'CloudEventSchemaV1_0'
])
param eventDeliverySchema string = 'EventGridSchema'

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: appName
}

resource appHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: app
  name: 'default'
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource subscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'to-${toLower(functionName)}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // Event Grid stores the URL as a secret and never returns its query (the key).
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=${functionName}&code=${appHost.listKeys().systemKeys.eventgrid_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: eventDeliverySchema
    // Every notification type the handler raises ({Domain}.{Entity}.NewEntity and
    // {Domain}.{Entity}.{EventType}); the Projector ignores the ones no read model needs.
    filter: {
      enableAdvancedFilteringOnArrays: true
    }
    // After the last retry, the notification is written to the dead-letter container by the
    // topic's own identity (no storage key).
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
    // Event Grid's own defaults, written down: 30 attempts over 24 hours. The Projector is
    // idempotent (README, "Projector"), so redeliveries are safe.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

@description('Name of the subscription.')
output subscriptionName string = subscription.name
