# Sourced by the POSIX hooks (preprovision.sh, postprovision.sh): build_worker IMAGE builds the GPU worker image
# (gpu_batch/Dockerfile) with ACR Tasks, so no local Docker is needed, and pushes it to the registry
# AZURE_CONTAINER_REGISTRY_NAME as IMAGE (repository:tag), unless that tag is already there.
# TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it anyway; TRAPBATCH_SKIP_WORKER_BUILD=true skips this step.
# build_worker IMAGE if-missing builds only a missing tag, whatever TRAPBATCH_FORCE_WORKER_BUILD says: postprovision
# passes it, because in the same `azd provision` preprovision has already rebuilt a forced tag (both honouring it
# built the image twice, 10-25 minutes each); on the first provision, the one preprovision skips, the tag is missing.

build_worker() {
  image=$1
  force=${TRAPBATCH_FORCE_WORKER_BUILD:-false}
  [ "${2:-}" != "if-missing" ] || force=false
  if [ "${TRAPBATCH_SKIP_WORKER_BUILD:-false}" = "true" ]; then
    echo "TRAPBATCH_SKIP_WORKER_BUILD=true: not building the worker image."
    return 0
  fi
  repository=${image%%:*}
  tag=${image#*:}
  if [ "$force" != "true" ] && az_sub acr repository show-tags \
       --name "$AZURE_CONTAINER_REGISTRY_NAME" --repository "$repository" --output tsv 2>/dev/null | grep -qx "$tag"; then
    if [ "${2:-}" = "if-missing" ]; then  # postprovision: a forced rebuild is preprovision's
      echo "Worker image $repository:$tag is already in $AZURE_CONTAINER_REGISTRY_NAME."
    else
      echo "Worker image $repository:$tag is already in $AZURE_CONTAINER_REGISTRY_NAME (TRAPBATCH_FORCE_WORKER_BUILD=true rebuilds it)."
    fi
    return 0
  fi
  # The build context holds only what gpu_batch/Dockerfile copies (requirements/worker.txt, gpu_batch/), so neither
  # .venv nor node_modules nor the samples are uploaded.
  context=$(mktemp -d)
  # removed however the build ends (set -e leaves at a failed cp or find; the EXIT trap runs then too)
  trap 'rm -rf "$context"' EXIT
  mkdir -p "$context/requirements"
  cp requirements/worker.txt "$context/requirements/worker.txt"
  cp -R gpu_batch "$context/gpu_batch"
  rm -rf "$context/gpu_batch/tests"
  find "$context" -name __pycache__ -type d -prune -exec rm -rf {} +
  echo "Building $repository:$tag in $AZURE_CONTAINER_REGISTRY_NAME with ACR Tasks (CUDA + torch: expect 10-25 minutes) ..."
  status=0
  az_sub acr build --registry "$AZURE_CONTAINER_REGISTRY_NAME" --image "$image" \
    --file gpu_batch/Dockerfile --platform linux/amd64 --timeout 7200 "$context" || status=$?
  rm -rf "$context"
  [ "$status" -eq 0 ] || { echo "error: the worker image $image did not build (az acr build exit $status)" >&2; return "$status"; }
  echo "Worker image pushed: ${AZURE_CONTAINER_REGISTRY_ENDPOINT:-$AZURE_CONTAINER_REGISTRY_NAME}/$image"
}
