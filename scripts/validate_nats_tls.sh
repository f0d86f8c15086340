#!/usr/bin/env bash
# Validates NATS with TLS and client certificates end to end:
#   1. nats-server requires and verifies client certificates (config/nats_tls.conf);
#   2. a client without a certificate is refused;
#   3. the router connects with its CA, certificate and key (SHARDLINE_NATS_TLS_*) and
#      answers a decision over NATS (beamline.router.v1.decide), checked with the official
#      client (examples/nats_request.rs).
# Usage: scripts/validate_nats_tls.sh [--nats-only]   (--nats-only: checks 1 and 2)
# Everything runs on free loopback ports with its own state in _artifacts/nats/validate/
# and is stopped on exit. Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

nats_only=0
case "${1:-}" in
  --nats-only) nats_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--nats-only]" >&2; exit 2 ;;
esac

export NATS_STATE_DIR=_artifacts/nats/validate
. scripts/nats_common.sh
certs="$PWD/_artifacts/certs"
router_log="$NATS_STATE_DIR/router.log"
router_pid=""
failures=0

cleanup() {
  if [ -n "$router_pid" ] && kill -0 "$router_pid" 2>/dev/null; then
    kill -TERM "$router_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$router_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$router_pid" 2>/dev/null || true
  fi
  scripts/nats_stop.sh >/dev/null || true
}
trap cleanup EXIT INT TERM

pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }

# Prints a port in 20000-59999 on which nothing listens now.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! port_busy "$port"; then echo "$port"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}

mkdir -p "$NATS_STATE_DIR"
scripts/generate_certs.sh >/dev/null
echo "building the router and examples/nats_request (release)..."
if ! cargo build --release --bin shardline --example nats_request \
  >"$NATS_STATE_DIR/build.log" 2>&1; then
  tail -n 30 "$NATS_STATE_DIR/build.log" >&2
  exit 1
fi
target_dir="$(cargo metadata --format-version 1 --no-deps \
  | grep -o '"target_directory":"[^"]*"' | sed 's/.*:"\(.*\)"/\1/')"
router="$target_dir/release/shardline"
client="$target_dir/release/examples/nats_request"

nats_port="$(free_port)"
monitor_port="$(free_port)"
url="tls://127.0.0.1:$nats_port"
scripts/nats_start.sh --tls --port "$nats_port" --monitor-port "$monitor_port"

# 1. The server requires TLS and verifies client certificates.
varz="$(curl -fsS "http://127.0.0.1:$monitor_port/varz")"
if grep -q '"tls_required": true' <<<"$varz" && grep -q '"tls_verify": true' <<<"$varz"; then
  pass "nats-server on $url requires TLS and verifies client certificates"
else
  fail "nats-server /varz does not show tls_required and tls_verify"
fi

# 2. A client without a certificate is refused (exit 1 = cannot connect).
set +e
refused="$("$client" --url "$url" --ca "$certs/ca.crt" --subject validate.ping 2>&1)"
status=$?
set -e
logged=0
for _ in $(seq 1 10); do  # the server may log it a moment after the client gave up
  if grep -q "client didn't provide a certificate" "$NATS_LOGFILE"; then logged=1; break; fi
  sleep 0.2
done
if [ "$status" = 1 ] && [ "$logged" = 1 ]; then
  pass "a client without a certificate is refused ($refused)"
else
  fail "a client without a certificate was not refused (exit $status: $refused)"
fi

if [ "$nats_only" = 1 ]; then
  [ "$failures" = 0 ] && echo "NATS TLS checks passed (router not run: --nats-only)"
  exit $((failures > 0))
fi

# 3. The router over TLS with its client certificate, then a decision over NATS.
http_port="$(free_port)"
SHARDLINE_SERVER_LISTEN="127.0.0.1:$http_port" \
  SHARDLINE_SERVER_OPS_LISTEN="" \
  SHARDLINE_NATS_URL="$url" \
  SHARDLINE_NATS_TLS_CA="$certs/ca.crt" \
  SHARDLINE_NATS_TLS_CERT="$certs/client.crt" \
  SHARDLINE_NATS_TLS_KEY="$certs/client.key" \
  SHARDLINE_LOGGING_FORMAT=text \
  "$router" serve --config config/shardline.toml >"$router_log" 2>&1 &
router_pid=$!

ready=0
for _ in $(seq 1 150); do
  kill -0 "$router_pid" 2>/dev/null || break
  if curl -fsS --max-time 1 "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" = 1 ]; then
  pass "router ready on http://127.0.0.1:$http_port with NATS at $url"
else
  fail "router not ready within 30 s; the end of $router_log:"
  tail -n 10 "$router_log"
  exit 1
fi

# The router's connection, by its client name (nats.name), as nats-server sees it.
connected=0
for _ in $(seq 1 50); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$monitor_port/connz" 2>/dev/null \
    | grep -q '"name": "shardline"'; then
    connected=1
    break
  fi
  sleep 0.2
done
if [ "$connected" = 1 ]; then
  pass "the router is connected to nats-server with its client certificate"
else
  fail "no connection named shardline in" \
    "http://127.0.0.1:$monitor_port/connz within 10 s"
fi

# A DecideRequest for the bundled tenant acme (config/policies/acme/default.json).
body='{"version":"1","tenant_id":"acme","request_id":"validate-1",'
body+='"task":{"type":"chat","payload":{}}}'
reply=""
for _ in $(seq 1 10); do
  set +e
  reply="$("$client" --url "$url" --ca "$certs/ca.crt" --cert "$certs/client.crt" \
    --key "$certs/client.key" --tenant-id acme --timeout-ms 2000 --body "$body" 2>&1)"
  status=$?
  set -e
  # 2 = no responder or no reply yet: the router may still be subscribing.
  [ "$status" = 2 ] || break
  sleep 0.5
done
if [ "$status" = 0 ] && grep -q '"ok":true' <<<"$reply" && grep -q '"provider_id"' <<<"$reply"
then
  pass "decision over NATS with a client certificate: $reply"
else
  fail "no decision over NATS (exit $status): $reply"
fi

if [ "$failures" = 0 ]; then
  echo "all NATS TLS checks passed"
else
  echo "$failures check(s) failed; logs: $NATS_LOGFILE, $router_log"
fi
exit $((failures > 0))
