#!/bin/sh
# azd postdeploy hook (azure.yaml), run from the repository root after `azd deploy` and during `azd up`.
# Subscribes the Functions host's blob-trigger webhook to BlobCreated events of the `incoming` container, so that a
# task request dropped as incoming/<name>.json starts a task (api/starters.py task_dropped, Event Grid source: the
# only blob trigger Flex Consumption supports). The webhook needs the host's blobs_extension system key, which only
# exists once the code is deployed and the host has started, hence a hook (as in
# Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, scripts/post-up.sh). Re-running it updates the
# subscription in place. The key is never printed.
set -eu
. "$(dirname "$0")/load-env.sh"
need az
require AZURE_FUNCTION_APP_NAME AZURE_RESOURCE_GROUP SERVICE_API_BASE_URL EVENTGRID_SYSTEM_TOPIC_NAME INCOMING_CONTAINER_NAME

function_name=task_dropped  # the blob-trigger function of api/starters.py (tests/infra checks the name)
attempts=${TRAPBATCH_KEY_ATTEMPTS:-20}   # the host may need a few minutes after the deployment to start
wait_s=${TRAPBATCH_KEY_WAIT_S:-15}
key=""
i=1
while [ "$i" -le "$attempts" ]; do
  key=$(az functionapp keys list --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
          --query "systemKeys.blobs_extension" --output tsv 2>/dev/null || true)
  [ -n "$key" ] && break
  echo "Waiting for the Functions host to create its blobs_extension key ($i/$attempts) ..."
  i=$((i + 1))
  sleep "$wait_s"
done
if [ -z "$key" ]; then
  echo "error: the app $AZURE_FUNCTION_APP_NAME has no blobs_extension key yet. Check that the deployment succeeded" >&2
  echo "       and that the host started (Application Insights, 'Log stream'), then run infra/hooks/postdeploy.sh again." >&2
  exit 1
fi

endpoint="${SERVICE_API_BASE_URL}/runtime/webhooks/blobs?functionName=Host.Functions.${function_name}&code=${key}"
echo "Subscribing $function_name to BlobCreated events in '$INCOMING_CONTAINER_NAME' (system topic $EVENTGRID_SYSTEM_TOPIC_NAME) ..."
az eventgrid system-topic event-subscription create --name trapbatch-incoming \
  --resource-group "$AZURE_RESOURCE_GROUP" --system-topic-name "$EVENTGRID_SYSTEM_TOPIC_NAME" \
  --endpoint-type webhook --endpoint "$endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/${INCOMING_CONTAINER_NAME}/" \
  --subject-ends-with .json \
  --only-show-errors --output none
echo "Done: drop a request as ${INCOMING_CONTAINER_NAME}/<name>.json (docs/deploy.md, First task)."
