#!/bin/sh
# The Ray head node: the GCS and a raylet. By default it offers no CPUs, so every
# training rank lands on a worker node and the head stays free for the API.
# Used by docker-compose.yml (service ray-head), by the multi-node namespace test,
# and on bare metal. RAY_AUTH_MODE (token on a cluster) and RAY_AUTH_TOKEN come
# from the environment; every node and the API must share them.
set -eu
: "${RAY_AUTH_MODE:=token}"
export RAY_AUTH_MODE RAY_USAGE_STATS_ENABLED=0
exec ray start --head --block --disable-usage-stats \
    --node-ip-address="${NODE_IP:-$(hostname -i | cut -d' ' -f1)}" \
    --port="${RAY_PORT:-6379}" \
    --num-cpus="${RAY_NUM_CPUS:-0}" \
    --include-dashboard="${RAY_DASHBOARD:-false}" \
    --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" \
    ${RAY_MEMORY:+--memory="$RAY_MEMORY"} \
    ${RAY_OBJECT_STORE_MEMORY:+--object-store-memory="$RAY_OBJECT_STORE_MEMORY"}
