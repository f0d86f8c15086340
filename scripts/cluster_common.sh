# shellcheck shell=bash
# Sourced by the cluster_*.sh scripts (not run by itself): where a local cluster's state
# lives, which of its processes run, and how to stop them. The caller has cd'ed to the
# repository root.
#
# CLUSTER_STATE_DIR (default _artifacts/cluster) holds, for each node N of 1..3,
# nats-N/ (nats.conf, nats.log, nats.pid, jetstream/) and node-N/ (shardline.toml,
# router.log, router.pid, policies/), and beside them cluster.env (the ports it was started
# with), admin_token (when generated) and seeded (the policy bucket was filled once).

. scripts/nats_common.sh

CLUSTER_STATE_DIR="${CLUSTER_STATE_DIR:-_artifacts/cluster}"
CLUSTER_NODES=3
# Seconds a router has after SIGTERM before SIGKILL: the default drain grace and drain
# timeout (2 s + 5 s) with room for a loaded machine.
ROUTER_STOP_S=15
NATS_STOP_S=10

nats_dir() { echo "$CLUSTER_STATE_DIR/nats-$1"; }
node_dir() { echo "$CLUSTER_STATE_DIR/node-$1"; }

# Prints the pid of node $1's nats-server when it runs.
cluster_nats_pid() {
  running_pid "$(nats_dir "$1")/nats.pid" nats-server
}

# Prints the pid of node $1's router when it runs.
cluster_router_pid() {
  running_pid "$(node_dir "$1")/router.pid" shardline
}

# Prints one line per running process of the cluster: "router node-N pid" or
# "nats-server nats-N pid".
cluster_running() {
  local i pid
  for i in $(seq 1 "$CLUSTER_NODES"); do
    if pid="$(cluster_router_pid "$i")"; then echo "router node-$i $pid"; fi
    if pid="$(cluster_nats_pid "$i")"; then echo "nats-server nats-$i $pid"; fi
  done
}

# Stops the routers first (they drain while NATS is still there), then the nats-servers;
# prints one line per process stopped. Each kind is signalled at once and then waited for,
# so that the routers drain side by side.
cluster_stop_all() {
  cluster_stop_kind router cluster_router_pid node_dir router.pid "$ROUTER_STOP_S"
  cluster_stop_kind nats-server cluster_nats_pid nats_dir nats.pid "$NATS_STOP_S"
}

# cluster_stop_kind KIND PID_FN DIR_FN PIDFILE SECONDS: SIGTERM to every running process
# of a kind, then waits for each.
cluster_stop_kind() {
  local kind=$1 pid_fn=$2 dir_fn=$3 pidfile=$4 seconds=$5 i pid name
  local pids=() names=() dirs=()
  for i in $(seq 1 "$CLUSTER_NODES"); do
    if pid="$("$pid_fn" "$i")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      dirs+=("$("$dir_fn" "$i")")
      name="$(basename "${dirs[-1]}")"
      names+=("$kind $name")
    fi
  done
  for i in "${!pids[@]}"; do
    wait_exit "${pids[$i]}" "${names[$i]}" "$seconds"
    rm -f "${dirs[$i]}/$pidfile"
    echo "stopped ${names[$i]} (pid ${pids[$i]})"
  done
}
