#!/usr/bin/env bash
# CPU per request of the router beside two references, one run, one generator:
#   nginx      Debian's nginx (nginx-light), 2 workers, `return 200` with a fixed decision
#              body as long as the router's answer: what an epoll server spends returning
#              a constant;
#   bare       Shardline's HTTP stack with no router behind it (examples/bare_http, 2
#              shards): the floor of our own stack;
#   router     `shardline serve --config perf/bench/shardline.toml`.
# Each is started alone, driven by `shardline bench --target … --server-pid PID` (nginx
# with --server-pid-tree: master and workers), and stopped by its PID before the next, so
# that they never compete for the cores. Prints a table: CPU per request, throughput,
# p50/p99, and CPU per request as a ratio to nginx's. The reports (JSON, Markdown, SVG,
# the bench's summary) stay in $OUT_DIR.
#
#   perf/compare.sh                      # 10,000 req/s for 10 s each
#   RATE=5000 DURATION=3s perf/compare.sh
#   CONCURRENCY=16 perf/compare.sh       # closed loop: 16 in flight, as fast as it answers
#   ROUTER_BIN=/tmp/old/shardline BARE_BIN=/tmp/old/bare_http perf/compare.sh
#                                        # other server builds, same generator
#   ROUTER_ENV="SHARDLINE_SERVER_POLL=park" perf/compare.sh
#
# Env: RATE (10000), CONCURRENCY (unset: open loop at RATE), DURATION (10s), WARMUP (1s),
# CONNECTIONS (16), ROUTER_BIN and BARE_BIN (the release builds), ROUTER_ENV (extra
# environment of the router, e.g. its config overrides),
# OUT_DIR (_artifacts/compare-DATE),
# NGINX_PORT (18480), BARE_PORT (18490), ROUTER_PORT (18400). Needs a release build
# (built here if missing: `cargo build --release --bin shardline --example bare_http`),
# and installs nginx-light and jq when missing (root or sudo). The system's nginx service
# is never touched: nginx runs from its own prefix under a temp dir, in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure_tool.sh

RATE=${RATE:-10000}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-16}
NGINX_PORT=${NGINX_PORT:-18480}
BARE_PORT=${BARE_PORT:-18490}
ROUTER_PORT=${ROUTER_PORT:-18400}
# The bench config's tenants: perf/bench/policies (nginx and bare answer any).
TENANTS=tenant-0,tenant-1,tenant-2,tenant-3
# Bounded waits for a server to answer after its start and to exit after SIGTERM.
START_WAIT_S=20
STOP_WAIT_S=20

ensure_tool nginx nginx-light
ensure_tool jq jq
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ ! -x target/release/shardline ] || [ ! -x target/release/examples/bare_http ]; then
  echo "building the release binaries (a few minutes)" >&2
  cargo build --release --bin shardline --example bare_http
fi
SHARDLINE=target/release/shardline
ROUTER_BIN=${ROUTER_BIN:-$SHARDLINE}
BARE_BIN=${BARE_BIN:-target/release/examples/bare_http}
ROUTER_ENV=${ROUTER_ENV:-}
CONCURRENCY=${CONCURRENCY:-}
if [ -n "$CONCURRENCY" ]; then
  LOAD=(--concurrency "$CONCURRENCY")
  LOAD_TEXT="closed loop, $CONCURRENCY in flight"
else
  LOAD=(--rate "$RATE" --connections "$CONNECTIONS" --spin-us 0)
  LOAD_TEXT="rate $RATE req/s open loop, $CONNECTIONS connections"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardline-compare.XXXXXX")
OUT_DIR=${OUT_DIR:-_artifacts/compare-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
SERVER_PID=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -TERM "$SERVER_PID" 2>/dev/null; then
    local waited=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ "$waited" -lt $((STOP_WAIT_S * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() {
  ! ss -Htln "sport = :$1" | grep -q .
}

# Waits until `curl ARGS…` succeeds or START_WAIT_S passes; fails if the server died.
wait_answering() {
  local name=$1
  shift
  local deadline=$((SECONDS + START_WAIT_S))
  until curl -fsS -o /dev/null --max-time 1 "$@" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$name exited at its start; its log: $WORK/$name.log" >&2
      cat "$WORK/$name.log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$name did not answer within ${START_WAIT_S}s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# bench NAME URL [EXTRA ARGS…]: drives the server started last; its exit code is kept
# (3: it ran but measured failures; the report is still written and shown).
declare -A EXIT_OF
bench() {
  local name=$1 url=$2
  shift 2
  echo "== $name: $url, pid $SERVER_PID" >&2
  local rc=0
  "$SHARDLINE" bench --target "$url" "${LOAD[@]}" \
    --duration "$DURATION" --warmup "$WARMUP" --tenants "$TENANTS" \
    --server-pid "$SERVER_PID" "$@" --out "$OUT_DIR/$name.json" >"$OUT_DIR/$name.txt" || rc=$?
  EXIT_OF[$name]=$rc
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "$name: shardline bench exited $rc" >&2
    cat "$OUT_DIR/$name.txt" >&2 || true
    exit 1
  fi
}

for port in "$ROUTER_PORT" "$NGINX_PORT" "$BARE_PORT"; do
  port_free "$port" || { echo "port $port is in use; set *_PORT" >&2; exit 1; }
done

# 1. The router. Its answer to a typical request becomes nginx's body, so that both
# write the same number of bytes.
# shellcheck disable=SC2086 # ROUTER_ENV is a list of NAME=VALUE words
env $ROUTER_ENV SHARDLINE_SERVER_LISTEN=127.0.0.1:$ROUTER_PORT \
  "$ROUTER_BIN" serve --config perf/bench/shardline.toml >"$WORK/router.log" 2>&1 &
SERVER_PID=$!
wait_answering router "http://127.0.0.1:$ROUTER_PORT/healthz"
DECISION=$(curl -fsS --max-time 2 "http://127.0.0.1:$ROUTER_PORT/v1/decide" \
  -H 'Content-Type: application/json' \
  --data-binary '{"request_id":"compare-0000000000","tenant_id":"tenant-0","policy_id":"default","task":{"type":"chat","payload_ref":"p"},"metadata":{"user_id":"u-1"}}')
case $DECISION in
  *\'* | *\\* | *\$*) echo "the decision body has a character nginx's return would change: $DECISION" >&2; exit 1 ;;
esac
bench router "http://127.0.0.1:$ROUTER_PORT"
stop_server

# 2. nginx: its own prefix, config, logs and temp paths; foreground (daemon off), so
# that $! is the master, whose tree (--server-pid-tree) holds the workers.
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        location / {
            default_type application/json;
            return 200 '$DECISION';
        }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" \
  >"$WORK/nginx.log" 2>&1 &
SERVER_PID=$!
wait_answering nginx "http://127.0.0.1:$NGINX_PORT/v1/decide" -d '{}'
bench nginx "http://127.0.0.1:$NGINX_PORT" --server-pid-tree
stop_server

# 3. The bare stack, 2 shards.
"$BARE_BIN" --listen "127.0.0.1:$BARE_PORT" --shards 2 \
  >"$WORK/bare.log" 2>&1 &
SERVER_PID=$!
wait_answering bare "http://127.0.0.1:$BARE_PORT/v1/decide" -d '{}'
bench bare "http://127.0.0.1:$BARE_PORT"
stop_server

# The table: CPU per request, throughput, p50, p99, and CPU per request ÷ nginx's.
NGINX_CPU=$(jq -r '.server_cpu_us_per_request // empty' "$OUT_DIR/nginx.json")
echo
echo "$LOAD_TEXT, $DURATION (+$WARMUP warmup), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
echo
echo "| server | CPU per request (µs) | cores busy | throughput (req/s) | p50 (µs) | p99 (µs) | CPU/request ÷ nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for name in nginx bare router; do
  jq -r --arg name "$name" --arg nginx "$NGINX_CPU" --arg rc "${EXIT_OF[$name]}" '
    def show: if . == null then "-" else tostring end;
    (.server_cpu_us_per_request) as $cpu
    | "| \($name)\(if $rc != "0" then " (bench exit \($rc))" else "" end) | \($cpu | show) | \(.server_cpu_cores | show) | \(.achieved_rps | show) | \(.latency_us.p50 | show) | \(.latency_us.p99 | show) | \(if $cpu != null and $nginx != "" and ($nginx | tonumber) > 0 then ($cpu / ($nginx | tonumber) * 100 | round / 100 | tostring) + "×" else "-" end) |"
  ' "$OUT_DIR/$name.json"
done
echo
echo "reports: $OUT_DIR" >&2
