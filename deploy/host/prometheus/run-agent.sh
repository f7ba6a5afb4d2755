#!/bin/sh
# Start Prometheus in agent mode with agent.yml, after writing REMOTE_WRITE_URL into a copy of it (Prometheus
# expands environment variables in external_labels only; HOST_LABEL is left to it). Arguments are passed on
# to Prometheus. The paths default to the prom/prometheus image's; tests set them.
set -eu
: "${HOST_LABEL:?set HOST_LABEL: this host's name, the same as logpipe's host label}"
: "${REMOTE_WRITE_URL:?set REMOTE_WRITE_URL: the central Prometheus, e.g. http://observability.internal:9090/api/v1/write}"
template=${AGENT_CONFIG_TEMPLATE:-/etc/prometheus/agent.yml}
config=${AGENT_CONFIG:-/prometheus/agent.yml}
# sed's replacement treats \, & and the delimiter specially: escape them in the URL.
url=$(printf '%s\n' "$REMOTE_WRITE_URL" | sed -e 's/[\\&|]/\\&/g')
sed -e "s|\${REMOTE_WRITE_URL}|$url|" "$template" > "$config"
exec "${PROMETHEUS:-/bin/prometheus}" --agent --config.file="$config" "$@"
