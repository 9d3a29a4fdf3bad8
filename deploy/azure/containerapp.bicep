// azproxy on Azure Container Apps, authenticating to Azure OpenAI with Entra ID.
//
// Creates a Log Analytics workspace, a Container Apps environment and the azproxy
// container app with a system-assigned managed identity, and gives that identity the
// "Cognitive Services OpenAI User" role on an existing Azure OpenAI account in the same
// resource group. Clients present one of the access keys (AZPROXY_ACCESS_KEYS, kept as a
// Container Apps secret); no Azure key is stored anywhere.
//
//   az deployment group create -g RG -f deploy/azure/containerapp.bicep \
//     -p openAIAccountName=myopenai modelMap='gpt-4o=gpt-4o,gpt-4o-mini=gpt-4o-mini' \
//        accessKeys="$(openssl rand -hex 24)"
//
// containerImage defaults to the published image (deploy/IMAGE), tag latest. Each access
// key must have 16 characters or more, as azproxy requires: the deployment stops on a
// shorter one instead of starting a replica that cannot start.
//
// containerapp.json is the same template written by hand in ARM JSON (no bicep CLI in this
// repository's CI); keep both in step. Needs Bicep 0.33.93+ (fail()). Role assignments
// take a few minutes to propagate: the first requests after a fresh deployment may get
// 401 from Azure OpenAI.

@description('Name of the container app (also used to name the environment and workspace).')
@minLength(2)
@maxLength(28)
param name string = 'azproxy'

@description('Azure region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('The azproxy image: the published one (deploy/IMAGE in the repository), a version of it such as ghcr.io/replace_with_owner/azproxy:0.1.0, or your own build.')
param containerImage string = 'ghcr.io/replace_with_owner/azproxy:latest'

@description('Registry server for a private image, for example myregistry.azurecr.io; empty for a public image.')
param registryServer string = ''

@description('Registry user name (with registryServer).')
param registryUsername string = ''

@description('Registry password (with registryServer).')
@secure()
param registryPassword string = ''

@description('Name of the existing Azure OpenAI account in this resource group.')
param openAIAccountName string

@description('AZURE_OPENAI_ENDPOINT; empty uses the account\'s own endpoint.')
param azureOpenAIEndpoint string = ''

@description('OPENAI_API_VERSION used when a request names none (v1 selects Azure\'s v1 API).')
param openAIApiVersion string = '2024-10-21'

@description('AZPROXY_MODEL_MAP: model=deployment pairs, for example gpt-4o=gpt-4o,gpt-4o-mini=my-mini.')
param modelMap string

@description('AZPROXY_ACCESS_KEYS: comma list of keys clients must present, each of 16 characters or more (azproxy refuses shorter ones); for example from openssl rand -hex 24.')
@secure()
@minLength(16)
param accessKeys string

@description('AZPROXY_CORS_ORIGINS: *, a comma list of origins, or empty to disable CORS.')
param corsOrigins string = '*'

@description('AZPROXY_REDIS_URL: a Redis that the replicas share cooldowns and breakers through (docs/fleet.md), for example Azure Managed Redis: rediss://:ACCESS_KEY@NAME.REGION.redis.azure.net:10000; empty: each replica keeps its own.')
@secure()
param redisUrl string = ''

@description('AZPROXY_LOG_LEVEL.')
@allowed([
  'debug'
  'info'
  'warning'
  'error'
])
param logLevel string = 'info'

@description('AZPROXY_SHUTDOWN_GRACE_S: how long running streams may continue after SIGTERM; the replica gets 5 s more.')
@minValue(0)
@maxValue(600)
param shutdownGraceSeconds int = 25

@description('Fewest replicas (0 lets the app scale to zero when idle).')
@minValue(0)
@maxValue(300)
param minReplicas int = 1

@description('Most replicas.')
@minValue(1)
@maxValue(300)
param maxReplicas int = 10

@description('Concurrent requests per replica before the HTTP scale rule adds one (streams count while they run).')
param concurrentRequests string = '100'

@description('vCPU per replica.')
param cpu string = '0.5'

@description('Memory per replica; must fit the vCPU (0.5 vCPU: 1Gi).')
param memory string = '1Gi'

var openAIUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
var registries = empty(registryServer) ? [] : [
  { server: registryServer, username: registryUsername, passwordSecretRef: 'registry-password' }
]

resource openai 'Microsoft.CognitiveServices/accounts@2023-05-01' existing = {
  name: openAIAccountName
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${name}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 3000
        transport: 'auto' // HTTP/1.1 and WebSocket upgrades for /v1/realtime
        allowInsecure: false
      }
      // Secure values stay inline: copied into a variable they would lose their protection.
      // The access keys as azproxy reads them (split at commas, trimmed, empty ones
      // dropped): at least one, none shorter than 16 characters.
      secrets: concat(
        [
          {
            name: 'access-keys'
            value: !empty(filter(split(accessKeys, ','), k => !empty(trim(k)))) && empty(filter(split(accessKeys, ','), k => !empty(trim(k)) && length(trim(k)) < 16)) ? accessKeys : fail('accessKeys: give one or more comma-separated keys of 16 characters or more each, which azproxy needs (for example from openssl rand -hex 24)')
          }
        ],
        empty(registryServer) ? [] : [{ name: 'registry-password', value: registryPassword }],
        // A secret may not be empty: `none` is azproxy's word for no shared state.
        [{ name: 'redis-url', value: empty(redisUrl) ? 'none' : redisUrl }]
      )
      registries: registries
    }
    template: {
      terminationGracePeriodSeconds: shutdownGraceSeconds + 5
      containers: [
        {
          name: 'azproxy'
          image: containerImage
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: [
            { name: 'AZPROXY_ENTRA', value: 'true' }
            { name: 'AZURE_OPENAI_ENDPOINT', value: empty(azureOpenAIEndpoint) ? openai.properties.endpoint : azureOpenAIEndpoint }
            { name: 'OPENAI_API_VERSION', value: openAIApiVersion }
            { name: 'AZPROXY_MODEL_MAP', value: modelMap }
            { name: 'AZPROXY_ACCESS_KEYS', secretRef: 'access-keys' }
            { name: 'AZPROXY_REDIS_URL', secretRef: 'redis-url' }
            { name: 'AZPROXY_CORS_ORIGINS', value: corsOrigins }
            { name: 'AZPROXY_LOG_LEVEL', value: logLevel }
            { name: 'AZPROXY_SHUTDOWN_GRACE_S', value: string(shutdownGraceSeconds) }
          ]
          probes: [
            {
              type: 'Liveness'
              httpGet: { path: '/healthz', port: 3000 }
              initialDelaySeconds: 3
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: { path: '/readyz', port: 3000 }
              initialDelaySeconds: 1
              periodSeconds: 5
              timeoutSeconds: 3
              failureThreshold: 2
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: concurrentRequests
              }
            }
          }
        ]
      }
    }
  }
}

resource openAIUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openai.id, app.id, openAIUserRoleId)
  scope: openai
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAIUserRoleId)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Base URL for OpenAI clients.')
output baseUrl string = 'https://${app.properties.configuration.ingress.fqdn}/v1'

@description('Object id of the app\'s managed identity.')
output principalId string = app.identity.principalId
