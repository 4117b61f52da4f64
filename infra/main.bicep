// streamfold on Azure Functions (Flex Consumption), with no account key or topic key anywhere.
//
// What this deploys, in one resource group:
//   - a user-assigned managed identity: the app's only credential;
//   - a storage account (shared key access off): the Functions host's storage, the event streams
//     (Table storage, and Append Blobs when an entity type is routed there), the read models, the
//     dead letters, and the blob container the Flex Consumption plan deploys the package from;
//   - an Event Grid custom topic (local auth off) that the handler publishes notifications to;
//   - Log Analytics and Application Insights (local auth off: the host sends with the identity);
//   - a Flex Consumption plan and the Function App (`custom` runtime), whose app settings name
//     the storage services and the topic by endpoint only (README, "Settings");
//   - least-privilege role assignments for the identity, each scoped to the one resource it needs;
//   - with `subscribeProjector=true` (the second run, once the package is deployed and the host
//     has created its Event Grid system key): the topic's subscription that delivers to the
//     Projector function through the Functions Event Grid extension's webhook.
//
//   az deployment group create -g <group> -f infra/main.bicep -p baseName=<name>
//   (zip deploy, README "Deploy to Azure"), then the same with -p subscribeProjector=true
//
// Checked offline in CI: infra/tests/test_bicep.py parses every file here with pycep-parser and
// asserts what the app needs; checkov scans it (skips below carry their reasons).

targetScope = 'resourceGroup'

@description('Region of every resource; one with Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short lowercase prefix of the resource names.')
@minLength(3)
@maxLength(12)
param baseName string = 'streamfold'

@description('Name of the Function App (also its default host name).')
param appName string = '${baseName}-${uniqueString(resourceGroup().id)}'

@description('Name of the storage account: 3-24 lowercase letters and digits, unique in Azure.')
@minLength(3)
@maxLength(24)
param storageAccountName string = take('${replace(baseName, '-', '')}${uniqueString(resourceGroup().id)}', 24)

@description('Name of the Event Grid custom topic.')
param topicName string = '${baseName}-events-${uniqueString(resourceGroup().id)}'

@description('Name of the user-assigned managed identity the app runs as.')
param identityName string = '${baseName}-identity'

@description('Name of the Flex Consumption plan.')
param planName string = '${baseName}-plan'

@description('Name of the Application Insights component.')
param insightsName string = '${baseName}-insights'

@description('Name of the Log Analytics workspace behind Application Insights.')
param workspaceName string = '${baseName}-logs'

@description('Blob container the Flex Consumption plan deploys the package from.')
param deploymentContainerName string = 'app-package'

@description('Blob container Event Grid dead-letters undeliverable notifications to.')
param deadLetterContainerName string = 'eventgrid-deadletters'

@description('Version of the custom handler stack (az functionapp list-flexconsumption-runtimes -l <region> --runtime custom).')
param customRuntimeVersion string = '1.0'

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one instance, MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Schema the handler publishes (app setting NotificationSchema) and the topic accepts.')
@allowed([
  'EventGridEvent'
  'CloudEvent'
])
param notificationSchema string = 'EventGridEvent'

@description('Create the subscription to the Projector: only once the package is deployed, since its webhook key exists only when the host has loaded the Event Grid extension.')
param subscribeProjector bool = false

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
])
param storageSku string = 'Standard_LRS'

// Built-in role definitions (their ids are the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// The storage connection every part of the app uses, named AzureWebJobsStorage: the host reads
// it, and so does the handler (src/config.rs, identity-based connections).
var storageConnection = 'AzureWebJobsStorage'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: insightsName
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  //checkov:skip=CKV_AZURE_43:The name is a parameter (3-24 characters by its decorators; lowercase letters and digits by its default); Azure refuses any other at deployment.
  //checkov:skip=CKV_AZURE_206:Replication is a cost choice, left to the storageSku parameter.
  sku: {
    name: storageSku
  }
  properties: {
    // Entra ID only: no request signed with an account key or a SAS made from one is accepted.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    //checkov:skip=CKV_AZURE_59:Flex Consumption without a virtual network reaches storage over its public endpoint; access needs an Entra token of the app's identity (shared keys are off). Add VNet integration and private endpoints to close it.
    publicNetworkAccess: 'Enabled'
    //checkov:skip=CKV_AZURE_35:Default action Allow for the same reason: the app's outbound addresses are not fixed without a virtual network.
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Notifications Event Grid gave up delivering to the Projector (after its retries) land here.
resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: topicName
  location: location
  // The topic's own identity writes undeliverable notifications to the dead-letter container.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: (notificationSchema == 'CloudEvent') ? 'CloudEventSchemaV1_0' : 'EventGridSchema'
    // Publishing needs an Entra token with EventGrid Data Sender: the topic's keys are refused.
    disableLocalAuth: true
    //checkov:skip=CKV_AZURE_193:The app publishes from Flex Consumption without a virtual network, over the public endpoint; only the app's identity may publish (local auth is off).
    publicNetworkAccess: 'Enabled'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  //checkov:skip=CKV_AZURE_225:Zone redundancy of Flex Consumption is offered in some regions only; turn on zoneRedundant there.
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    //checkov:skip=CKV_AZURE_17:Client certificates would lock out Event Grid's webhook deliveries and the functions' own key checks; callers authenticate with function keys.
    //checkov:skip=CKV_AZURE_212:Flex Consumption scales instances itself (maximumInstanceCount); there is no instance count to fix at two or more.
    //checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; the host restarts a handler that stops answering.
    //checkov:skip=CKV_AZURE_222:Public by design: the HTTP functions and the Event Grid webhook are called from the internet, each with a function or system key.
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      runtime: {
        name: 'custom'
        version: customRuntimeVersion
      }
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Flex Consumption takes the runtime from functionAppConfig: FUNCTIONS_WORKER_RUNTIME,
      // FUNCTIONS_EXTENSION_VERSION and WEBSITE_RUN_FROM_PACKAGE are not app settings there.
      appSettings: [
        // Identity-based connection (the Functions convention): the host and the handler both
        // read it; no AccountKey anywhere.
        {
          name: '${storageConnection}__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: '${storageConnection}__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: '${storageConnection}__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: '${storageConnection}__credential'
          value: 'managedidentity'
        }
        {
          name: '${storageConnection}__clientId'
          value: identity.properties.clientId
        }
        // The topic by endpoint alone: the handler publishes with a token of this identity.
        {
          name: 'EventGridTopicEndpoint'
          value: topic.properties.endpoint
        }
        {
          name: 'EventGridClientId'
          value: identity.properties.clientId
        }
        {
          name: 'NotificationSchema'
          value: notificationSchema
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
      ]
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// Blobs: the host's keys and timer leases, the deployment package, and the Append Blob backend's
// streams. Owner (not Contributor) because the host manages blob leases and containers.
resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Tables: the Table backend's streams, the read models and the dead letters.
resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Publishing notifications to this topic, and nothing else of Event Grid.
resource eventGridDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, identity.id, roles.eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry into Application Insights, whose local (instrumentation key) auth is off.
resource monitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The topic writes dead letters into their container, and nowhere else.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

module projectorSubscription 'projector-subscription.bicep' = if (subscribeProjector) {
  name: 'projector-subscription'
  params: {
    appName: app.name
    topicName: topic.name
    storageAccountName: storage.name
    deadLetterContainerName: deadLetterContainer.name
    eventDeliverySchema: (notificationSchema == 'CloudEvent') ? 'CloudEventSchemaV1_0' : 'EventGridSchema'
  }
  dependsOn: [
    topicDeadLetterWriter
  ]
}

@description('Base URL of the HTTP functions.')
output appUrl string = 'https://${app.properties.defaultHostName}/api'

@description('Endpoint the handler publishes notifications to (app setting EventGridTopicEndpoint).')
output topicEndpoint string = topic.properties.endpoint

@description('Name of the Function App, for az functionapp commands.')
output appName string = app.name

@description('Name of the storage account.')
output storageAccountName string = storage.name

@description('Client id of the managed identity the app runs as.')
output identityClientId string = identity.properties.clientId
