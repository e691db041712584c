#!/bin/sh
# azd postdeploy hook (azure.yaml), run from the repository root after `azd deploy` and during `azd up`.
# Subscribes the Functions host's blob-trigger webhook to BlobCreated events of the `incoming` container, so that a
# task request dropped as incoming/<name>.json starts a task (api/starters.py task_dropped, Event Grid source: the
# only blob trigger Flex Consumption supports). The webhook needs the host's blobs_extension system key, which only
# exists once the code is deployed and the host has started, hence a hook (as in
# Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, scripts/post-up.sh). Re-running it updates the
# subscription in place. The keys are never printed. A second subscription sends markers (trapbatch-ready.json at the
# top of any container) to the Event Grid trigger container_ready (api/arrivals.py).
set -eu
. "$(dirname "$0")/load-env.sh"
need az
require AZURE_FUNCTION_APP_NAME AZURE_RESOURCE_GROUP SERVICE_API_BASE_URL EVENTGRID_SYSTEM_TOPIC_NAME INCOMING_CONTAINER_NAME

function_name=task_dropped  # the blob-trigger function of api/starters.py (tests/infra checks the name)
ready_function=container_ready  # the Event Grid trigger of api/arrivals.py (start on arrival)
ready_subject=/blobs/trapbatch-ready.json  # gpu_batch/layout.py READY_SUBJECT_ENDS_WITH (tests/unit checks it)
attempts=${TRAPBATCH_KEY_ATTEMPTS:-20}   # the host may need a few minutes after the deployment to start
wait_s=${TRAPBATCH_KEY_WAIT_S:-15}
# Event Grid sends the endpoint a validation event while it creates a subscription, and a just-started Flex host may
# refuse it for a while after its keys exist (Azure/azure-functions-host#11834): each create is tried this many times.
subscribe_attempts=${TRAPBATCH_SUBSCRIBE_ATTEMPTS:-5}
subscribe_wait_s=${TRAPBATCH_SUBSCRIBE_WAIT_S:-30}
# The app's own answers to a dropped request (gpu_batch/layout.py _DROP_ANSWERS, tests/infra checks them) are .json
# files in incoming/ too: filtered out, they reach task_dropped as no events at all.
drop_answers=".error.json .task.json .done.json .estimate.json"

# system_key NAME: the host's system key NAME (blobs_extension, eventgrid_extension), waiting for the host to make it.
system_key() {
  i=1
  while [ "$i" -le "$attempts" ]; do
    found=$(az_sub functionapp keys list --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
            --query "systemKeys.$1" --output tsv 2>/dev/null || true)
    if [ -n "$found" ]; then
      printf '%s' "$found"
      return 0
    fi
    echo "Waiting for the Functions host to create its $1 key ($i/$attempts) ..." >&2
    i=$((i + 1))
    sleep "$wait_s"
  done
  echo "error: the app $AZURE_FUNCTION_APP_NAME has no $1 key yet. Check that the deployment succeeded" >&2
  echo "       and that the host started (Application Insights, 'Log stream'), then run infra/hooks/postdeploy.sh again." >&2
  return 1
}

# subscribe NAME ARGS...: az eventgrid system-topic event-subscription create --name NAME ARGS..., tried again while
# Event Grid's validation of the endpoint fails.
subscribe() {
  name=$1
  shift
  i=1
  while ! az_sub eventgrid system-topic event-subscription create --name "$name" "$@"; do
    if [ "$i" -ge "$subscribe_attempts" ]; then
      echo "error: Event Grid could not create subscription $name ($subscribe_attempts tries): check the app's" >&2
      echo "       'Log stream' for the validation request, then run infra/hooks/postdeploy.sh again." >&2
      return 1
    fi
    echo "Event Grid could not validate the endpoint of $name yet ($i/$subscribe_attempts); trying again ..." >&2
    i=$((i + 1))
    sleep "$subscribe_wait_s"
  done
}

key=$(system_key blobs_extension) || exit 1
endpoint="${SERVICE_API_BASE_URL}/runtime/webhooks/blobs?functionName=Host.Functions.${function_name}&code=${key}"
echo "Subscribing $function_name to BlobCreated events in '$INCOMING_CONTAINER_NAME' (system topic $EVENTGRID_SYSTEM_TOPIC_NAME) ..."
# shellcheck disable=SC2086  # $drop_answers: one filter value per word
subscribe trapbatch-incoming \
  --resource-group "$AZURE_RESOURCE_GROUP" --system-topic-name "$EVENTGRID_SYSTEM_TOPIC_NAME" \
  --endpoint-type webhook --endpoint "$endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/${INCOMING_CONTAINER_NAME}/" \
  --subject-ends-with .json \
  --advanced-filter subject StringNotEndsWith $drop_answers \
  --only-show-errors --output none || exit 1

# Start on arrival: a trapbatch-ready.json at the top of any container of the account starts a task over it. An Event
# Grid trigger's webhook is /runtime/webhooks/eventgrid?functionName=<name>&code=<eventgrid_extension key>
# (learn.microsoft.com azure-functions/event-grid-how-tos, "Webhook endpoint URL").
ready_key=$(system_key eventgrid_extension) || exit 1
ready_endpoint="${SERVICE_API_BASE_URL}/runtime/webhooks/eventgrid?functionName=${ready_function}&code=${ready_key}"
echo "Subscribing $ready_function to BlobCreated events of $ready_subject at the top of any container ..."
subscribe trapbatch-ready \
  --resource-group "$AZURE_RESOURCE_GROUP" --system-topic-name "$EVENTGRID_SYSTEM_TOPIC_NAME" \
  --endpoint-type webhook --endpoint "$ready_endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-ends-with "$ready_subject" \
  --only-show-errors --output none || exit 1
echo "Done: drop a request as ${INCOMING_CONTAINER_NAME}/<name>.json, or write trapbatch-ready.json at the top of an"
echo "      image container once its upload is complete (docs/deploy.md, First task)."
