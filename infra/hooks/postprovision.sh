#!/bin/sh
# azd postprovision hook (azure.yaml), run from the repository root after `azd provision` and during `azd up`.
#  1. Enables the static website of the storage account. The preview pages are written to its `$web` container and
#     the app links them under TRAPBATCH_PUBLIC_WEB_URL (infra/main.bicep sets it from the account's
#     primaryEndpoints.web). The static website is a data-plane setting that ARM templates cannot set.
#  2. Builds the GPU worker image (build-worker.sh) as <registry>/$TRAPBATCH_WORKER_IMAGE_NAME, unless that tag is
#     already in the registry: on the first provision the registry only exists now. On later ones preprovision.sh
#     has built a new tag before the deployment names it, so this finds it there; it has also done any rebuild that
#     TRAPBATCH_FORCE_WORKER_BUILD=true asks for, so this one builds only a missing tag (if-missing).
set -eu
. "$(dirname "$0")/load-env.sh"
. "$(dirname "$0")/build-worker.sh"
need az
require AZURE_STORAGE_ACCOUNT_NAME AZURE_CONTAINER_REGISTRY_NAME TRAPBATCH_WORKER_IMAGE_NAME

echo "Enabling the static website of storage account $AZURE_STORAGE_ACCOUNT_NAME (preview pages) ..."
az_sub storage blob service-properties update --account-name "$AZURE_STORAGE_ACCOUNT_NAME" --auth-mode login \
  --static-website --index-document index.html --only-show-errors --output none
echo "Static website: ${TRAPBATCH_PUBLIC_WEB_URL:-?}"

build_worker "$TRAPBATCH_WORKER_IMAGE_NAME" if-missing
