#!/usr/bin/env bash
# The cluster's two published times, on the local cluster of scripts/cluster_start.sh
# (three nats-servers with JetStream, three routers): how long a policy put on node-1
# takes to decide on every node (ROUNDS puts), and how long the others take to drop
# node-3 once it is killed with SIGKILL (RUNS kills, the cluster started afresh for each).
# Prints the example's lines; the logs stay in _artifacts/cluster/ until the next run.
#
#   perf/cluster.sh
#   ROUNDS=500 RUNS=5 perf/cluster.sh
#
# Env: ROUNDS (200), RUNS (3). The cluster is stopped at the end, whatever happens;
# one already running is refused (stop it with scripts/cluster_stop.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-200}
RUNS=${RUNS:-3}
build=(cargo build --release -q --bin shardline --example cluster_propagation)
"${build[@]}" 2>/dev/null || "${build[@]}"
probe=target/release/examples/cluster_propagation
state=${CLUSTER_STATE_DIR:-_artifacts/cluster}

trap 'scripts/cluster_stop.sh >/dev/null 2>&1 || true' EXIT
for run in $(seq 1 "$RUNS"); do
  scripts/cluster_stop.sh --clean >/dev/null 2>&1 || true
  scripts/cluster_start.sh >/dev/null
  token=$(cat "$state/admin_token")
  rounds=$ROUNDS
  [ "$run" = 1 ] || rounds=1
  echo "run $run:"
  "$probe" --admin 127.0.0.1:9091 --nodes 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
    --token "$token" --rounds "$rounds" \
    --kill-pid "$(cat "$state/node-3/router.pid")" --kill-node node-3 \
    --watch 127.0.0.1:9091,127.0.0.1:9092
done
