# azd postprovision hook for Windows (azure.yaml); the same steps as postprovision.sh, which explains them:
#  1. enable the storage account's static website (preview pages, TRAPBATCH_PUBLIC_WEB_URL);
#  2. build and push the GPU worker image (build-worker.ps1) unless its tag is already in the registry (on later
#     provisions preprovision.ps1 built a new tag first, and did any forced rebuild: -IfMissing).
# PowerShell 7.2+: before it, 'Stop' also stopped the script at a native command's redirected stderr.
#Requires -Version 7.2
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'load-env.ps1')
. (Join-Path $PSScriptRoot 'build-worker.ps1')
Assert-Tool @('az')
Assert-EnvValue @('AZURE_STORAGE_ACCOUNT_NAME', 'AZURE_CONTAINER_REGISTRY_NAME', 'TRAPBATCH_WORKER_IMAGE_NAME')

Write-Host "Enabling the static website of storage account $env:AZURE_STORAGE_ACCOUNT_NAME (preview pages) ..."
az storage blob service-properties update --account-name $env:AZURE_STORAGE_ACCOUNT_NAME --auth-mode login `
  --static-website --index-document index.html --only-show-errors --output none @AzSubscription
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Host "Static website: $env:TRAPBATCH_PUBLIC_WEB_URL"

Build-Worker $env:TRAPBATCH_WORKER_IMAGE_NAME -IfMissing
