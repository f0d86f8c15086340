#!/usr/bin/env bash
# Stops the local cluster started by scripts/cluster_start.sh: the routers first (SIGTERM,
# up to 15 s to drain and exit, then SIGKILL), then the nats-servers (up to 10 s), each by
# the pid it recorded. Not running is not an error.
# Usage: scripts/cluster_stop.sh [--clean]
#   --clean  also remove the state dir (_artifacts/cluster/, or $CLUSTER_STATE_DIR):
#            configs, logs, the admin token and the JetStream stores with the policy bucket
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster_common.sh

clean=0
while [ $# -gt 0 ]; do
  case "$1" in
    --clean) clean=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$(cluster_running)" ]; then
  cluster_stop_all
else
  echo "the cluster is not running"
fi
if [ "$clean" = 1 ] && [ -d "$CLUSTER_STATE_DIR" ]; then
  rm -rf "$CLUSTER_STATE_DIR"
  echo "removed $CLUSTER_STATE_DIR"
fi
