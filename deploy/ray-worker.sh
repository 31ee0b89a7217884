#!/bin/sh
# A Ray worker node joining the head at RAY_HEAD (host:port). Its CPUs are the
# cluster's training slots: one rank per CPU (cpus_per_worker in the job spec).
# The raylet listens on RAY_NODE_MANAGER_PORT (the healthcheck connects to it).
# Used by docker-compose.yml (service ray-worker), by the multi-node namespace
# test, and on bare metal.
set -eu
: "${RAY_AUTH_MODE:=token}"
export RAY_AUTH_MODE RAY_USAGE_STATS_ENABLED=0
exec ray start --block --disable-usage-stats \
    --address="${RAY_HEAD:?set RAY_HEAD to the head node, host:port}" \
    --node-ip-address="${NODE_IP:-$(hostname -i | cut -d' ' -f1)}" \
    --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" \
    --node-manager-port="${RAY_NODE_MANAGER_PORT:-6380}" \
    ${RAY_NUM_CPUS:+--num-cpus="$RAY_NUM_CPUS"} \
    ${RAY_MEMORY:+--memory="$RAY_MEMORY"} \
    ${RAY_OBJECT_STORE_MEMORY:+--object-store-memory="$RAY_OBJECT_STORE_MEMORY"}
