# Dot-sourced by the PowerShell hooks (preprovision.ps1, postprovision.ps1); the same step as build-worker.sh, which
# explains it: Build-Worker IMAGE builds gpu_batch/Dockerfile with ACR Tasks into AZURE_CONTAINER_REGISTRY_NAME as
# IMAGE unless that tag is there (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds, TRAPBATCH_SKIP_WORKER_BUILD=true skips).
# -IfMissing builds only a missing tag whatever TRAPBATCH_FORCE_WORKER_BUILD says (postprovision: preprovision has
# already rebuilt a forced tag in the same `azd provision`).

function Build-Worker([string]$Image, [switch]$IfMissing) {
  if ($env:TRAPBATCH_SKIP_WORKER_BUILD -eq 'true') {
    Write-Host 'TRAPBATCH_SKIP_WORKER_BUILD=true: not building the worker image.'
    return
  }
  $repository, $tag = $Image.Split(':', 2)
  if ($IfMissing -or $env:TRAPBATCH_FORCE_WORKER_BUILD -ne 'true') {
    $tags = az acr repository show-tags --name $env:AZURE_CONTAINER_REGISTRY_NAME --repository $repository --output tsv @AzSubscription 2>$null
    if ($LASTEXITCODE -eq 0 -and ($tags -split "`r?`n") -contains $tag) {
      if ($IfMissing) {  # postprovision: a forced rebuild is preprovision's
        Write-Host "Worker image ${repository}:$tag is already in $env:AZURE_CONTAINER_REGISTRY_NAME."
      } else {
        Write-Host "Worker image ${repository}:$tag is already in $env:AZURE_CONTAINER_REGISTRY_NAME (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it)."
      }
      return
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
    az acr build --registry $env:AZURE_CONTAINER_REGISTRY_NAME --image $Image `
      --file gpu_batch/Dockerfile --platform linux/amd64 --timeout 7200 $context @AzSubscription
    if ($LASTEXITCODE -ne 0) {
      Write-Error "the worker image $Image did not build (az acr build exit $LASTEXITCODE)"
      exit $LASTEXITCODE
    }
  }
  finally {
    Remove-Item $context -Recurse -Force -ErrorAction SilentlyContinue
  }
  Write-Host "Worker image pushed: $env:AZURE_CONTAINER_REGISTRY_ENDPOINT/$Image"
}
