# azd preprovision hook for Windows (azure.yaml); the same step as preprovision.sh, which explains it: when the
# registry exists already, build trapbatch-worker:$TRAPBATCH_WORKER_TAG before the deployment names it.
# PowerShell 7.2+: before it, 'Stop' also stopped the script at a native command's redirected stderr.
#Requires -Version 7.2
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'load-env.ps1')
. (Join-Path $PSScriptRoot 'build-worker.ps1')

if (-not $env:AZURE_CONTAINER_REGISTRY_NAME) {
  Write-Host 'First provision: the registry does not exist yet; postprovision builds the worker image.'
  exit 0
}
Assert-Tool @('az')
# The name can outlive its registry (preprovision.sh says when): postprovision builds into the one the deployment makes.
az acr show --name $env:AZURE_CONTAINER_REGISTRY_NAME --query id --output tsv @AzSubscription 2>$null | Out-Null
if ($LASTEXITCODE -ne 0) {
  Write-Host "The registry $env:AZURE_CONTAINER_REGISTRY_NAME is not there (yet): postprovision builds the worker image."
  exit 0
}
$tag = if ($env:TRAPBATCH_WORKER_TAG) { $env:TRAPBATCH_WORKER_TAG } else { 'v1' }
Build-Worker "trapbatch-worker:$tag"
