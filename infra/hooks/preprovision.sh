#!/bin/sh
# azd preprovision hook (azure.yaml), run from the repository root before `azd provision` deploys infra/main.bicep.
# Why: the deployment points the app setting TRAPBATCH_WORKER_IMAGE and the pool's start task at
# trapbatch-worker:$TRAPBATCH_WORKER_TAG. A new tag (azd env set TRAPBATCH_WORKER_TAG v2 && azd provision) built only
# afterwards, by postprovision, left every shard submitted in the 10-25 minutes of the build failing to pull its
# image (and a failed build left the app broken). So when the registry exists already, the new tag is built here,
# first, and the deployment names only an image that is there. On the first provision there is no registry yet:
# postprovision.sh builds the image before any task can run (the app is deployed after it).
set -eu
. "$(dirname "$0")/load-env.sh"
. "$(dirname "$0")/build-worker.sh"

if [ -z "${AZURE_CONTAINER_REGISTRY_NAME:-}" ]; then
  echo "First provision: the registry does not exist yet; postprovision builds the worker image."
  exit 0
fi
need az
# The name can outlive its registry: azd keeps the deployment's outputs when the resource group went without a
# successful `azd down` (portal, a purge error), and after a move to another subscription it names a registry that
# subscription lacks. A build into a registry that is not there would stop this and every later provision; the
# deployment (re)creates the registry and postprovision builds into it, as on the first provision.
if ! az_sub acr show --name "$AZURE_CONTAINER_REGISTRY_NAME" --query id --output tsv >/dev/null 2>&1; then
  echo "The registry $AZURE_CONTAINER_REGISTRY_NAME is not there (yet): postprovision builds the worker image."
  exit 0
fi
# infra/main.bicep: workerImageName = 'trapbatch-worker:${workerImageTag}'; infra/main.parameters.json:
# ${TRAPBATCH_WORKER_TAG=v1} (tests/infra/test_hooks.py checks both)
build_worker "trapbatch-worker:${TRAPBATCH_WORKER_TAG:-v1}"
