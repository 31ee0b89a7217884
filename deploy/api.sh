#!/bin/sh
# The control plane, joined to the cluster at SYNCSGD_RAY_ADDRESS (the head,
# host:port). Every other setting is a SYNCSGD_* variable (see service/config.py):
# SYNCSGD_DATA_DIR for the SQLite database, checkpoints and models,
# SYNCSGD_WORKER_ENV for the ranks' transport (UCX_TLS, GLOO_SOCKET_IFNAME).
# Used by docker-compose.yml (service api), by the multi-node namespace test,
# and on bare metal.
set -eu
: "${SYNCSGD_RAY_ADDRESS:?set SYNCSGD_RAY_ADDRESS to the head node, host:port}"
: "${RAY_AUTH_MODE:=token}"
export RAY_AUTH_MODE RAY_USAGE_STATS_ENABLED=0 SYNCSGD_RAY_AUTH_MODE="$RAY_AUTH_MODE"
exec syncsgd serve
