#!/usr/bin/env bash
# Starts a local three-node cluster to try: three nats-servers routed into one JetStream
# cluster, the routers' policy bucket filled once from config/policies, then three routers
# (target/release/shardline serve), each on its own generated config. Returns once every
# router's /readyz answers 200 and prints how to use them; running it again while it runs
# is a no-op. On a failure it stops what it started and shows the log that says why.
# Usage: scripts/cluster_start.sh [--build] [--nats-port P] [--route-port P]
#          [--monitor-port P] [--http-port P] [--ops-port P] [--cores N]
#   --build           cargo build --release first (also done when the binary is missing)
#   --nats-port P     client port of nats-1, P+1 and P+2 for nats-2, nats-3 (default 4222)
#   --route-port P    route port of nats-1, then +1 (default 6222)
#   --monitor-port P  monitor port of nats-1, then +1 (default 8222)
#   --http-port P     HTTP port of router node-1, then +1 (default 8081)
#   --ops-port P      operations port (/readyz, admin) of node-1, then +1 (default 9091)
#   --cores N         shards per router (default 1: the three routers share one machine)
# The same from the environment: CLUSTER_NATS_PORT, CLUSTER_ROUTE_PORT,
# CLUSTER_MONITOR_PORT, CLUSTER_HTTP_PORT, CLUSTER_OPS_PORT, CLUSTER_CORES (flags win).
# State (configs, logs, pids, JetStream stores) in _artifacts/cluster/, or
# $CLUSTER_STATE_DIR. SHARDLINE_BIN runs another router binary (named shardline);
# SHARDLINE_ADMIN_TOKEN sets the admin token, else one is generated once and kept in the
# state dir. Stop with scripts/cluster_stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster_common.sh

nats_port="${CLUSTER_NATS_PORT:-4222}"
route_port="${CLUSTER_ROUTE_PORT:-6222}"
monitor_port="${CLUSTER_MONITOR_PORT:-8222}"
http_port="${CLUSTER_HTTP_PORT:-8081}"
ops_port="${CLUSTER_OPS_PORT:-9091}"
cores="${CLUSTER_CORES:-1}"
build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=1 ;;
    --nats-port) nats_port="${2:?--nats-port needs a value}"; shift ;;
    --route-port) route_port="${2:?--route-port needs a value}"; shift ;;
    --monitor-port) monitor_port="${2:?--monitor-port needs a value}"; shift ;;
    --http-port) http_port="${2:?--http-port needs a value}"; shift ;;
    --ops-port) ops_port="${2:?--ops-port needs a value}"; shift ;;
    --cores) cores="${2:?--cores needs a value}"; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for n in "$nats_port" "$route_port" "$monitor_port" "$http_port" "$ops_port" "$cores"; do
  case "$n" in
    ''|*[!0-9]*) echo "not a number: '$n'" >&2; exit 2 ;;
  esac
done
ports=()
for base in "$nats_port" "$route_port" "$monitor_port" "$http_port" "$ops_port"; do
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do ports+=($((base + i))); done
done
for p in "${ports[@]}"; do
  if [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then echo "not a port: $p" >&2; exit 2; fi
done
if [ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" != "${#ports[@]}" ]; then
  echo "the port ranges overlap: ${ports[*]}" >&2
  exit 2
fi

mapfile -t running < <(cluster_running)
if [ "${#running[@]}" = $((2 * CLUSTER_NODES)) ]; then
  echo "cluster already running ($(tr '\n' ' ' <"$CLUSTER_STATE_DIR/cluster.env" 2>/dev/null)):"
  printf '  %s\n' "${running[@]}"
  echo "(scripts/cluster_stop.sh first to start it with other options)"
  exit 0
fi
if [ "${#running[@]}" -gt 0 ]; then
  echo "the cluster runs in part; scripts/cluster_stop.sh stops what is left:" >&2
  printf '  %s\n' "${running[@]}" >&2
  exit 1
fi

for p in "${ports[@]}"; do
  if port_busy "$p"; then
    echo "port $p on 127.0.0.1 is busy: stop what listens there (ss -ltnp 'sport = :$p')" \
      "or choose other ports (see --help)" >&2
    exit 1
  fi
done

# The router: built before anything starts, so that a failed build leaves nothing behind.
bin="${SHARDLINE_BIN:-target/release/shardline}"
if [ -z "${SHARDLINE_BIN:-}" ] && { [ "$build" = 1 ] || [ ! -x "$bin" ]; }; then
  echo "building the router: cargo build --release"
  cargo build --release --quiet
fi
[ -x "$bin" ] || { echo "no router binary at $bin" >&2; exit 1; }
nats="$(nats_bin)"

# Absolute: nats-server and the routers resolve relative paths against other directories.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
state="$(absolute "$CLUSTER_STATE_DIR")"
mkdir -p "$state"
printf 'nats_port=%s\nroute_port=%s\nmonitor_port=%s\nhttp_port=%s\nops_port=%s\ncores=%s\n' \
  "$nats_port" "$route_port" "$monitor_port" "$http_port" "$ops_port" "$cores" \
  >"$state/cluster.env"

token_note="\$SHARDLINE_ADMIN_TOKEN"
if [ -z "${SHARDLINE_ADMIN_TOKEN:-}" ]; then
  if [ ! -s "$state/admin_token" ]; then
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$state/admin_token")
  fi
  SHARDLINE_ADMIN_TOKEN="$(cat "$state/admin_token")"
  token_note="\$(cat $CLUSTER_STATE_DIR/admin_token)"
fi
export SHARDLINE_ADMIN_TOKEN

# Whatever fails from here on stops what this run started: a cluster runs whole or not
# at all, so that a second start never meets half of one.
# fail MESSAGE [LOG]: prints the message and the end of LOG, stops everything, exits 1.
fail() {
  trap - INT TERM
  echo "$1" >&2
  if [ -n "${2:-}" ]; then
    echo "the end of $2:" >&2
    tail -n 15 "$2" >&2 || true
  fi
  cluster_stop_all >&2
  echo "logs and configs stay in $CLUSTER_STATE_DIR" >&2
  exit 1
}
trap 'fail "interrupted"' INT TERM

nats_config() {
  local i=$1 routes="" j
  for j in $(seq 1 "$CLUSTER_NODES"); do
    routes+="${routes:+, }\"nats-route://127.0.0.1:$((route_port + j - 1))\""
  done
  cat <<EOF
# Generated by scripts/cluster_start.sh.
server_name: "nats-$i"
listen: "127.0.0.1:$((nats_port + i - 1))"
http: "127.0.0.1:$((monitor_port + i - 1))"
cluster {
  name: "shardline-dev"
  listen: "127.0.0.1:$((route_port + i - 1))"
  routes: [$routes]
}
jetstream {
  store_dir: "$state/nats-$i/jetstream"
  max_memory_store: 64MB
  max_file_store: 256MB
}
EOF
}

# The JetStream meta leader nats-server $1 names (empty when none).
meta_leader() {
  curl -fsS --max-time 1 "http://127.0.0.1:$((monitor_port + $1 - 1))/jsz" 2>/dev/null \
    | sed -n 's/^ *"leader": "\([^"]*\)".*/\1/p' | head -n 1
}

# Ready when every server answers /healthz and all name the same JetStream meta leader:
# until then JetStream, and so the policy bucket, refuses requests.
wait_nats() {
  local i leader names=()
  for _ in $(seq 1 150); do
    names=()
    for i in $(seq 1 "$CLUSTER_NODES"); do
      cluster_nats_pid "$i" >/dev/null \
        || fail "nats-server nats-$i exited at start" "$(nats_dir "$i")/nats.log"
      leader=""
      if nats_healthy "$((monitor_port + i - 1))"; then leader="$(meta_leader "$i")"; fi
      names+=("${leader:--}")
    done
    if [ "${names[0]}" != - ] && [ "$(printf '%s\n' "${names[@]}" | sort -u | wc -l)" = 1 ]
    then
      echo "nats-servers running, JetStream meta leader ${names[0]}"
      return 0
    fi
    sleep 0.2
  done
  local named="${names[*]}"
  fail "the nats-servers agreed on no JetStream meta leader within 30 s (they name: $named)" \
    "$(nats_dir 1)/nats.log"
}

for i in $(seq 1 "$CLUSTER_NODES"); do
  dir="$(nats_dir "$i")"
  mkdir -p "$dir"
  nats_config "$i" >"$dir/nats.conf"
  nohup "$nats" -c "$dir/nats.conf" >>"$dir/nats.log" 2>&1 </dev/null &
  echo $! >"$dir/nats.pid"
done
wait_nats

# Node $1's config: everything not set here keeps the default config/shardline.toml shows.
router_config() {
  local i=$1 urls j
  # Its own nats-server first: the router connects to the first URL that answers.
  urls="nats://127.0.0.1:$((nats_port + i - 1))"
  for j in $(seq 1 "$CLUSTER_NODES"); do
    [ "$j" = "$i" ] || urls+=",nats://127.0.0.1:$((nats_port + j - 1))"
  done
  cat <<EOF
# Generated by scripts/cluster_start.sh for node-$i. Every key not set here has the
# default that config/shardline.toml shows. The admin token comes from
# SHARDLINE_ADMIN_TOKEN (admin.token_env).

[server]
listen = "127.0.0.1:$((http_port + i - 1))"
ops_listen = "127.0.0.1:$((ops_port + i - 1))"
cores = $cores
policies_dir = "policies"
extensions_dir = "$PWD/config/extensions"

[logging]
format = "text"

[nats]
url = "$urls"
name = "shardline-node-$i"

[cluster]
enabled = true
node_id = "node-$i"
policy_bucket = "shardline_policies"
policy_replicas = 3
EOF
}

for i in $(seq 1 "$CLUSTER_NODES"); do
  dir="$(node_dir "$i")"
  mkdir -p "$dir"
  router_config "$i" >"$dir/shardline.toml"
  [ -d "$dir/policies" ] || cp -r config/policies "$dir/policies"
done

# The bucket is filled once: it lives in the JetStream stores, which outlive a stop, and
# a second push would overwrite policies changed through the admin API since.
if [ ! -e "$state/seeded" ]; then
  push=("$bin" policy push config/policies --config "$(node_dir 1)/shardline.toml")
  # Bounded: a push that cannot reach JetStream must not hang the start.
  if ! timeout 60 "${push[@]}" >"$state/seed.log" 2>&1; then
    fail "filling the policy bucket failed: ${push[*]}" "$state/seed.log"
  fi
  touch "$state/seeded"
  echo "policy bucket shardline_policies filled from config/policies"
fi

for i in $(seq 1 "$CLUSTER_NODES"); do
  dir="$(node_dir "$i")"
  nohup "$bin" serve --config "$dir/shardline.toml" >>"$dir/router.log" 2>&1 </dev/null &
  echo $! >"$dir/router.pid"
done

# Up to 30 s for every router's /readyz.
ready=()
for _ in $(seq 1 150); do
  ready=()
  for i in $(seq 1 "$CLUSTER_NODES"); do
    cluster_router_pid "$i" >/dev/null \
      || fail "router node-$i exited at start" "$(node_dir "$i")/router.log"
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$((ops_port + i - 1))/readyz" \
      2>/dev/null; then
      ready+=("$i")
    fi
  done
  [ "${#ready[@]}" = "$CLUSTER_NODES" ] && break
  sleep 0.2
done
if [ "${#ready[@]}" != "$CLUSTER_NODES" ]; then
  for i in $(seq 1 "$CLUSTER_NODES"); do
    case " ${ready[*]} " in *" $i "*) continue ;; esac
    fail "router node-$i did not answer /readyz with 200 within 30 s" \
      "$(node_dir "$i")/router.log"
  done
fi

cat <<EOF
cluster running, state in $CLUSTER_STATE_DIR:
EOF
for i in $(seq 1 "$CLUSTER_NODES"); do
  printf '  node-%s  http://127.0.0.1:%s  ops http://127.0.0.1:%s  nats nats://127.0.0.1:%s' \
    "$i" "$((http_port + i - 1))" "$((ops_port + i - 1))" "$((nats_port + i - 1))"
  printf ' (monitor http://127.0.0.1:%s)\n' "$((monitor_port + i - 1))"
done
cat <<EOF

Put a policy through node-1, then decide with it on node-2:
  TOKEN=$token_note
  curl -s -X PUT -H "Authorization: Bearer \$TOKEN" \\
    http://127.0.0.1:$ops_port/admin/v1/policies/acme/gold \\
    --data-binary @config/policies/acme/premium.json
  sed 's/"policy_id": "default"/"policy_id": "gold"/' config/requests/chat.json \\
    | curl -s http://127.0.0.1:$((http_port + 1))/v1/decide --data-binary @-

Logs: $CLUSTER_STATE_DIR/node-N/router.log, $CLUSTER_STATE_DIR/nats-N/nats.log
Stop: scripts/cluster_stop.sh (--clean also removes $CLUSTER_STATE_DIR)
EOF
