#!/bin/sh
# mpiexec's remote-shell launcher for namespaces, in place of ssh: hydra calls it as
# `netns_launcher.sh [ssh options] HOST COMMAND...`; HOST is a node's address, and the
# command runs inside the namespace that owns that address (NETNS_HOSTS maps them:
# "10.1.2.3=ns-a 10.1.2.4=ns-b").
set -eu
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done  # ssh options such as -x
host=$1; shift
for pair in $NETNS_HOSTS; do
    if [ "${pair%%=*}" = "$host" ]; then
        exec ip netns exec "${pair#*=}" sh -c "$*"
    fi
done
echo "netns_launcher: no namespace for host $host" >&2
exit 1
