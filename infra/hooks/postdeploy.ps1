# azd postdeploy hook for Windows (azure.yaml); the same step as postdeploy.sh, which explains it: subscribe the
# Functions host's blob webhook (task_dropped) to BlobCreated events of `incoming/`. The key is never printed.
# PowerShell 7.2+: before it, 'Stop' also stopped the script at a native command's redirected stderr (az ... 2>$null).
#Requires -Version 7.2
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'load-env.ps1')
Assert-Tool @('az')
Assert-EnvValue @('AZURE_FUNCTION_APP_NAME', 'AZURE_RESOURCE_GROUP', 'SERVICE_API_BASE_URL', 'EVENTGRID_SYSTEM_TOPIC_NAME', 'INCOMING_CONTAINER_NAME')

$functionName = 'task_dropped'  # the blob-trigger function of api/starters.py (tests/infra checks the name)
$attempts = if ($env:TRAPBATCH_KEY_ATTEMPTS) { [int]$env:TRAPBATCH_KEY_ATTEMPTS } else { 20 }  # the host may need minutes to start
$waitSeconds = if ($env:TRAPBATCH_KEY_WAIT_S) { [int]$env:TRAPBATCH_KEY_WAIT_S } else { 15 }
# Event Grid validates the endpoint while it creates a subscription; a just-started host may refuse it for a while.
$subscribeAttempts = if ($env:TRAPBATCH_SUBSCRIBE_ATTEMPTS) { [int]$env:TRAPBATCH_SUBSCRIBE_ATTEMPTS } else { 5 }
$subscribeWait = if ($env:TRAPBATCH_SUBSCRIBE_WAIT_S) { [int]$env:TRAPBATCH_SUBSCRIBE_WAIT_S } else { 30 }
# The app's own answers in incoming/ (gpu_batch/layout.py _DROP_ANSWERS) are filtered out of the drop subscription.
$dropAnswers = @('.error.json', '.task.json', '.done.json', '.estimate.json')

function Add-Subscription([string]$Name, [string[]]$Arguments) {
  for ($i = 1; $i -le $subscribeAttempts; $i++) {
    az eventgrid system-topic event-subscription create --name $Name @Arguments @AzSubscription
    if ($LASTEXITCODE -eq 0) { return }
    if ($i -lt $subscribeAttempts) {
      Write-Host "Event Grid could not validate the endpoint of $Name yet ($i/$subscribeAttempts); trying again ..."
      Start-Sleep -Seconds $subscribeWait
    }
  }
  Write-Error "Event Grid could not create subscription $Name ($subscribeAttempts tries): check the app's 'Log stream' for the validation request, then run infra/hooks/postdeploy.ps1 again"
  exit 1
}
$key = ''
for ($i = 1; $i -le $attempts; $i++) {
  $key = az functionapp keys list --name $env:AZURE_FUNCTION_APP_NAME --resource-group $env:AZURE_RESOURCE_GROUP `
           --query 'systemKeys.blobs_extension' --output tsv @AzSubscription 2>$null
  if ($LASTEXITCODE -eq 0 -and $key) { break }
  Write-Host "Waiting for the Functions host to create its blobs_extension key ($i/$attempts) ..."
  Start-Sleep -Seconds $waitSeconds
}
if (-not $key) {
  Write-Error "the app $env:AZURE_FUNCTION_APP_NAME has no blobs_extension key yet: check that the deployment succeeded and the host started, then run infra/hooks/postdeploy.ps1 again"
  exit 1
}

# The extra double quotes keep PowerShell from splitting the URL at '&' when it calls az (as the Event Grid
# quickstart's scripts/post-up.ps1 does).
$endpoint = '"' + "$env:SERVICE_API_BASE_URL/runtime/webhooks/blobs?functionName=Host.Functions.$functionName&code=$key" + '"'
Write-Host "Subscribing $functionName to BlobCreated events in '$env:INCOMING_CONTAINER_NAME' (system topic $env:EVENTGRID_SYSTEM_TOPIC_NAME) ..."
Add-Subscription 'trapbatch-incoming' (@(
  '--resource-group', $env:AZURE_RESOURCE_GROUP, '--system-topic-name', $env:EVENTGRID_SYSTEM_TOPIC_NAME,
  '--endpoint-type', 'webhook', '--endpoint', $endpoint,
  '--included-event-types', 'Microsoft.Storage.BlobCreated',
  '--subject-begins-with', "/blobServices/default/containers/$env:INCOMING_CONTAINER_NAME/",
  '--subject-ends-with', '.json',
  '--advanced-filter', 'subject', 'StringNotEndsWith') + $dropAnswers + @('--only-show-errors', '--output', 'none'))

# Start on arrival (api/arrivals.py): trapbatch-ready.json at the top of any container goes to the Event Grid trigger.
$readyFunction = 'container_ready'
$readySubject = '/blobs/trapbatch-ready.json'  # gpu_batch/layout.py READY_SUBJECT_ENDS_WITH (tests/unit checks it)
$readyKey = ''
for ($i = 1; $i -le $attempts; $i++) {
  $readyKey = az functionapp keys list --name $env:AZURE_FUNCTION_APP_NAME --resource-group $env:AZURE_RESOURCE_GROUP `
                --query 'systemKeys.eventgrid_extension' --output tsv @AzSubscription 2>$null
  if ($LASTEXITCODE -eq 0 -and $readyKey) { break }
  Write-Host "Waiting for the Functions host to create its eventgrid_extension key ($i/$attempts) ..."
  Start-Sleep -Seconds $waitSeconds
}
if (-not $readyKey) {
  Write-Error "the app $env:AZURE_FUNCTION_APP_NAME has no eventgrid_extension key yet: run infra/hooks/postdeploy.ps1 again once the host started"
  exit 1
}
$readyEndpoint = '"' + "$env:SERVICE_API_BASE_URL/runtime/webhooks/eventgrid?functionName=$readyFunction&code=$readyKey" + '"'
Write-Host "Subscribing $readyFunction to BlobCreated events of $readySubject at the top of any container ..."
Add-Subscription 'trapbatch-ready' @(
  '--resource-group', $env:AZURE_RESOURCE_GROUP, '--system-topic-name', $env:EVENTGRID_SYSTEM_TOPIC_NAME,
  '--endpoint-type', 'webhook', '--endpoint', $readyEndpoint,
  '--included-event-types', 'Microsoft.Storage.BlobCreated',
  '--subject-ends-with', $readySubject,
  '--only-show-errors', '--output', 'none')
Write-Host "Done: drop a request as $env:INCOMING_CONTAINER_NAME/<name>.json, or write trapbatch-ready.json at the top of an image container once its upload is complete (docs/deploy.md, First task)."
