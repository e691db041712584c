# Dot-sourced by the PowerShell hooks (infra/hooks/*.ps1). azd passes its environment's values to hooks already;
# loading them again from `azd env get-values` lets a hook also be run by hand from the repository root.

function Assert-Tool([string[]]$Names) {
  foreach ($name in $Names) {
    if (-not (Get-Command $name -ErrorAction SilentlyContinue)) {
      Write-Error "'$name' is needed (docs/deploy.md, Prerequisites)"
      exit 1
    }
  }
}

function Assert-EnvValue([string[]]$Names) {
  foreach ($name in $Names) {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
      Write-Error "$name is not set in the azd environment: run 'azd provision' first"
      exit 1
    }
  }
}

Assert-Tool @('azd')
foreach ($line in (& azd env get-values)) {
  if ($line -match '^([^=]+)=(.*)$') {
    [Environment]::SetEnvironmentVariable($Matches[1], ($Matches[2] -replace '^"|"$'))
  }
}

# Every az call of the hooks splats this: the subscription azd deploys to (AZURE_SUBSCRIPTION_ID, part of the
# environment azd gives every hook), not az's own default (`az account set`), which may be another one (load-env.sh
# says why; tests/infra checks every call).
$AzSubscription = @()
if ($env:AZURE_SUBSCRIPTION_ID) { $AzSubscription = @('--subscription', $env:AZURE_SUBSCRIPTION_ID) }
