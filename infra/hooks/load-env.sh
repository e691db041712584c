# Sourced by the POSIX hooks (infra/hooks/*.sh). azd passes its environment's values to hooks already; loading them
# again from `azd env get-values` lets a hook also be run by hand from the repository root.

need() {
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "error: '$cmd' is needed (docs/deploy.md, Prerequisites)" >&2; exit 1; }
  done
}

require() {
  for var in "$@"; do
    eval "value=\${$var:-}"
    [ -n "$value" ] || { echo "error: $var is not set in the azd environment: run 'azd provision' first" >&2; exit 1; }
  done
}

# az_sub ARGS...: az ARGS... in the subscription azd deploys to (AZURE_SUBSCRIPTION_ID, part of the environment azd
# gives every hook), not in az's own default (`az account set`), which may be another one: two azd environments in two
# subscriptions share one `az login`. Every az command takes --subscription (azure-cli core,
# register_global_subscription_argument). Every az call of the hooks goes through this (tests/infra checks it).
az_sub() {
  az "$@" ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"}
}

need azd
while IFS= read -r line; do
  case "$line" in
    *=*)
      key=${line%%=*}
      value=${line#*=}
      value=${value#\"}
      value=${value%\"}
      export "$key=$value"
      ;;
  esac
done <<AZD_ENV
$(azd env get-values)
AZD_ENV
