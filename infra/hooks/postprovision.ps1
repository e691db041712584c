# azd postprovision hook for Windows (azure.yaml); the same steps as postprovision.sh, which explains them:
#  1. enable the storage account's static website (preview pages, TRAPBATCH_PUBLIC_WEB_URL);
#  2. build and push the GPU worker image with ACR Tasks unless its tag is already in the registry
#     (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds, TRAPBATCH_SKIP_WORKER_BUILD=true skips).
# PowerShell 7.2+: before it, 'Stop' also stopped the script at a native command's redirected stderr.
#Requires -Version 7.2
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'load-env.ps1')
Assert-Tool @('az')
Assert-EnvValue @('AZURE_STORAGE_ACCOUNT_NAME', 'AZURE_CONTAINER_REGISTRY_NAME', 'TRAPBATCH_WORKER_IMAGE_NAME')

Write-Host "Enabling the static website of storage account $env:AZURE_STORAGE_ACCOUNT_NAME (preview pages) ..."
az storage blob service-properties update --account-name $env:AZURE_STORAGE_ACCOUNT_NAME --auth-mode login `
  --static-website --index-document index.html --only-show-errors --output none
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Host "Static website: $env:TRAPBATCH_PUBLIC_WEB_URL"

if ($env:TRAPBATCH_SKIP_WORKER_BUILD -eq 'true') {
  Write-Host 'TRAPBATCH_SKIP_WORKER_BUILD=true: not building the worker image.'
  exit 0
}
$repository, $tag = $env:TRAPBATCH_WORKER_IMAGE_NAME.Split(':', 2)
if ($env:TRAPBATCH_FORCE_WORKER_BUILD -ne 'true') {
  $tags = az acr repository show-tags --name $env:AZURE_CONTAINER_REGISTRY_NAME --repository $repository --output tsv 2>$null
  if ($LASTEXITCODE -eq 0 -and ($tags -split "`r?`n") -contains $tag) {
    Write-Host "Worker image ${repository}:$tag is already in $env:AZURE_CONTAINER_REGISTRY_NAME (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it)."
    exit 0
  }
}

# The build context holds only what gpu_batch/Dockerfile copies (requirements/worker.txt, gpu_batch/).
$context = Join-Path ([IO.Path]::GetTempPath()) ("trapbatch-worker-" + [Guid]::NewGuid().ToString('N'))
try {
  New-Item -ItemType Directory -Path (Join-Path $context 'requirements') | Out-Null
  Copy-Item 'requirements/worker.txt' (Join-Path $context 'requirements/worker.txt')
  Copy-Item 'gpu_batch' (Join-Path $context 'gpu_batch') -Recurse
  Remove-Item (Join-Path $context 'gpu_batch/tests') -Recurse -Force -ErrorAction SilentlyContinue
  Get-ChildItem $context -Recurse -Directory -Filter '__pycache__' | Remove-Item -Recurse -Force

  Write-Host "Building ${repository}:$tag in $env:AZURE_CONTAINER_REGISTRY_NAME with ACR Tasks (CUDA + torch: expect 10-25 minutes) ..."
  az acr build --registry $env:AZURE_CONTAINER_REGISTRY_NAME --image $env:TRAPBATCH_WORKER_IMAGE_NAME `
    --file gpu_batch/Dockerfile --platform linux/amd64 --timeout 7200 $context
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}
finally {
  Remove-Item $context -Recurse -Force -ErrorAction SilentlyContinue
}
Write-Host "Worker image pushed: $env:AZURE_CONTAINER_REGISTRY_ENDPOINT/$env:TRAPBATCH_WORKER_IMAGE_NAME"
