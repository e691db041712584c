#!/bin/sh
# azd postprovision hook (azure.yaml), run from the repository root after `azd provision` and during `azd up`.
#  1. Enables the static website of the storage account. The preview pages are written to its `$web` container and
#     the app links them under TRAPBATCH_PUBLIC_WEB_URL (infra/main.bicep sets it from the account's
#     primaryEndpoints.web). The static website is a data-plane setting that ARM templates cannot set.
#  2. Builds the GPU worker image (gpu_batch/Dockerfile) with ACR Tasks, so no local Docker is needed, and pushes it as
#     <registry>/$TRAPBATCH_WORKER_IMAGE_NAME, unless that tag is already in the registry.
#     TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it anyway; TRAPBATCH_SKIP_WORKER_BUILD=true skips this step.
#     To ship a changed worker: azd env set TRAPBATCH_WORKER_TAG v2 && azd provision (new tag: built, and the app
#     setting TRAPBATCH_WORKER_IMAGE follows).
set -eu
. "$(dirname "$0")/load-env.sh"
need az
require AZURE_STORAGE_ACCOUNT_NAME AZURE_CONTAINER_REGISTRY_NAME TRAPBATCH_WORKER_IMAGE_NAME

echo "Enabling the static website of storage account $AZURE_STORAGE_ACCOUNT_NAME (preview pages) ..."
az storage blob service-properties update --account-name "$AZURE_STORAGE_ACCOUNT_NAME" --auth-mode login \
  --static-website --index-document index.html --only-show-errors --output none
echo "Static website: ${TRAPBATCH_PUBLIC_WEB_URL:-?}"

if [ "${TRAPBATCH_SKIP_WORKER_BUILD:-false}" = "true" ]; then
  echo "TRAPBATCH_SKIP_WORKER_BUILD=true: not building the worker image."
  exit 0
fi
repository=${TRAPBATCH_WORKER_IMAGE_NAME%%:*}
tag=${TRAPBATCH_WORKER_IMAGE_NAME#*:}
if [ "${TRAPBATCH_FORCE_WORKER_BUILD:-false}" != "true" ] && az acr repository show-tags \
     --name "$AZURE_CONTAINER_REGISTRY_NAME" --repository "$repository" --output tsv 2>/dev/null | grep -qx "$tag"; then
  echo "Worker image $repository:$tag is already in $AZURE_CONTAINER_REGISTRY_NAME (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it)."
  exit 0
fi

# The build context holds only what gpu_batch/Dockerfile copies (requirements/worker.txt, gpu_batch/), so neither
# .venv nor node_modules nor the samples are uploaded.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/requirements"
cp requirements/worker.txt "$context/requirements/worker.txt"
cp -R gpu_batch "$context/gpu_batch"
rm -rf "$context/gpu_batch/tests"
find "$context" -name __pycache__ -type d -prune -exec rm -rf {} +

echo "Building $repository:$tag in $AZURE_CONTAINER_REGISTRY_NAME with ACR Tasks (CUDA + torch: expect 10-25 minutes) ..."
az acr build --registry "$AZURE_CONTAINER_REGISTRY_NAME" --image "$TRAPBATCH_WORKER_IMAGE_NAME" \
  --file gpu_batch/Dockerfile --platform linux/amd64 --timeout 7200 "$context"
echo "Worker image pushed: ${AZURE_CONTAINER_REGISTRY_ENDPOINT:-$AZURE_CONTAINER_REGISTRY_NAME}/$TRAPBATCH_WORKER_IMAGE_NAME"
