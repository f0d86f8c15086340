#!/usr/bin/env bash
# Validates NATS with TLS and client certificates end to end:
#   1. nats-server requires and verifies client certificates (a local one: its /varz);
#   2. a client without a certificate is refused (and, with --server, one with the given
#      certificate connects);
#   3. the router connects with the CA, certificate and key (SHARDLINE_NATS_TLS_*) and
#      answers a decision over NATS, checked with the official client
#      (examples/nats_request.rs).
# By default it checks the development certificates of scripts/generate_certs.sh
# (_artifacts/certs/) against a local nats-server it starts on free loopback ports with
# config/nats_tls.conf. --ca/--cert/--key check your certificates; --server checks them
# against a running nats-server (production, say) instead of starting one: the router it
# starts then uses private subjects (shardline.validate.<pid>.*) and no admin token, so it
# takes no real traffic, and it is stopped on exit. NATS credentials for the router come
# from SHARDLINE_NATS_TOKEN or SHARDLINE_NATS_USER/SHARDLINE_NATS_PASSWORD when set.
#
# It runs a built router: target/release/shardline, target/debug/shardline or `shardline`
# on PATH (and examples/nats_request beside it); it runs cargo only for what is missing.
# State lives in _artifacts/nats/validate/. Exit 0 when every check passed, 1 when one
# failed, 2 on unusable arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: scripts/validate_nats_tls.sh [--ca FILE] [--cert FILE] [--key FILE]
                                    [--server URL] [--nats-only] [--help]
  --ca FILE      PEM CA that signed nats-server's certificate
                 (default: _artifacts/certs/ca.crt, generated when missing)
  --cert FILE    PEM client certificate for the router (default: _artifacts/certs/client.crt)
  --key FILE     PEM private key of --cert (default: _artifacts/certs/client.key)
  --server URL   a running nats-server, tls://host:port or nats://host:port
                 (default: start a local one with config/nats_tls.conf on free ports)
  --nats-only    checks 1 and 2 only: no router
  --help         this text
USAGE
}

nats_only=0
ca="" cert="" key="" server=""
value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    echo "$1 needs a value" >&2
    usage >&2
    exit 2
  fi
}
while [ "$#" -gt 0 ]; do
  case "$1" in
    --nats-only) nats_only=1; shift ;;
    --ca) value "$@"; ca="$2"; shift 2 ;;
    --cert) value "$@"; cert="$2"; shift 2 ;;
    --key) value "$@"; key="$2"; shift 2 ;;
    --server) value "$@"; server="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$server" in
  ""|tls://*|nats://*) ;;
  *) echo "--server: expected tls://host:port or nats://host:port, got $server" >&2; exit 2 ;;
esac
certs="$PWD/_artifacts/certs"
if [ -z "$ca" ] || [ -z "$cert" ] || [ -z "$key" ]; then
  scripts/generate_certs.sh >/dev/null
fi
ca="${ca:-$certs/ca.crt}"
cert="${cert:-$certs/client.crt}"
key="${key:-$certs/client.key}"
for f in "$ca" "$cert" "$key"; do
  if [ ! -r "$f" ]; then echo "cannot read $f" >&2; exit 2; fi
done
# Absolute: the router resolves relative paths against its config file's directory.
ca="$(realpath "$ca")" cert="$(realpath "$cert")" key="$(realpath "$key")"

export NATS_STATE_DIR=_artifacts/nats/validate
. scripts/nats_common.sh
router_log="$NATS_STATE_DIR/router.log"
router_pid=""
failures=0

cleanup() {
  if [ -n "$router_pid" ] && kill -0 "$router_pid" 2>/dev/null; then
    kill -TERM "$router_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$router_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$router_pid" 2>/dev/null || true
  fi
  if [ -z "$server" ]; then scripts/nats_stop.sh >/dev/null || true; fi
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
# The router and the example client: built ones first (release, then debug, then PATH);
# cargo only for what is missing.
target_dir="${CARGO_TARGET_DIR:-target}"
router="" client=""
for profile in release debug; do
  if [ -z "$router" ] && [ -x "$target_dir/$profile/shardline" ]; then
    router="$target_dir/$profile/shardline"
  fi
  if [ -z "$client" ] && [ -x "$target_dir/$profile/examples/nats_request" ]; then
    client="$target_dir/$profile/examples/nats_request"
  fi
done
if [ -z "$router" ] && command -v shardline >/dev/null 2>&1; then
  router="$(command -v shardline)"
fi
build=()
if [ -z "$router" ] && [ "$nats_only" = 0 ]; then build+=(--bin shardline); fi
if [ -z "$client" ]; then build+=(--example nats_request); fi
if [ "${#build[@]}" -gt 0 ]; then
  # A debug build: a check of certificates and a handshake needs no optimised router.
  echo "none built yet: cargo build ${build[*]} ..."
  if ! cargo build "${build[@]}" >"$NATS_STATE_DIR/build.log" 2>&1; then
    tail -n 30 "$NATS_STATE_DIR/build.log" >&2
    exit 1
  fi
  router="${router:-$target_dir/debug/shardline}"
  client="${client:-$target_dir/debug/examples/nats_request}"
fi
echo "router ${router:-(not run)}, client $client"

if [ -z "$server" ]; then
  if [ "$ca" != "$certs/ca.crt" ]; then
    echo "note: the local nats-server trusts config/nats_tls.conf's CA" \
      "(_artifacts/certs/ca.crt); --server checks other certificates against their server" >&2
  fi
  nats_port="$(free_port)"
  monitor_port="$(free_port)"
  url="tls://127.0.0.1:$nats_port"
  scripts/nats_start.sh --tls --port "$nats_port" --monitor-port "$monitor_port"

  # 1. The server requires TLS and verifies client certificates.
  varz="$(curl -fsS "http://127.0.0.1:$monitor_port/varz")"
  if grep -q '"tls_required": true' <<<"$varz" && grep -q '"tls_verify": true' <<<"$varz"
  then
    pass "nats-server on $url requires TLS and verifies client certificates"
  else
    fail "nats-server /varz does not show tls_required and tls_verify"
  fi
else
  url="$server"
  echo "SKIP  $url is not started here: its /varz is not checked"
fi

# 2. A client without a certificate is refused (exit 1 = cannot connect).
set +e
refused="$("$client" --url "$url" --ca "$ca" --subject validate.ping 2>&1)"
status=$?
set -e
logged=1
if [ -z "$server" ]; then
  logged=0
  for _ in $(seq 1 10); do  # the server may log it a moment after the client gave up
    if grep -q "client didn't provide a certificate" "$NATS_LOGFILE"; then logged=1; break; fi
    sleep 0.2
  done
fi
if [ "$status" = 1 ] && [ "$logged" = 1 ]; then
  pass "a client without a certificate is refused ($refused)"
else
  fail "a client without a certificate was not refused (exit $status: $refused)"
fi
if [ -n "$server" ]; then
  # With the certificate it connects: exit 2 = connected, nobody answers the subject.
  set +e
  accepted="$("$client" --url "$url" --ca "$ca" --cert "$cert" --key "$key" \
    --subject "shardline.validate.$$.ping" --timeout-ms 500 2>&1)"
  status=$?
  set -e
  if [ "$status" = 0 ] || [ "$status" = 2 ]; then
    pass "a client with $cert connects to $url"
  else
    fail "a client with $cert cannot connect to $url (exit $status: $accepted)"
  fi
fi

if [ "$nats_only" = 1 ]; then
  [ "$failures" = 0 ] && echo "NATS TLS checks passed (router not run: --nats-only)"
  exit $((failures > 0))
fi

# 3. The router over TLS with its client certificate, then a decision over NATS. On a
# server that is not ours every subject is private to this run and no admin token is
# passed on, so the router takes no real decide requests, results or admin calls and
# publishes nowhere real consumers listen.
http_port="$(free_port)"
decide_subject="beamline.router.v1.decide"
private=()
if [ -n "$server" ]; then
  prefix="shardline.validate.$$"
  decide_subject="$prefix.decide"
  private=(
    "SHARDLINE_NATS_DECIDE_SUBJECT=$decide_subject"
    "SHARDLINE_NATS_DECIDE_QUEUE_GROUP=$prefix.group"
    "SHARDLINE_NATS_ASSIGNMENT_SUBJECT=$prefix.assign"
    "SHARDLINE_NATS_ASSIGNMENT_SUBJECTS_ALLOWED=$prefix.assign"
    "SHARDLINE_NATS_RESULT_SUBJECT=$prefix.result"
    "SHARDLINE_NATS_ACK_SUBJECT=$prefix.ack"
    "SHARDLINE_NATS_USAGE_SUBJECT=$prefix.usage"
    "SHARDLINE_NATS_ADMIN_SUBJECT=$prefix.admin"
    "SHARDLINE_NATS_NAME=shardline-validate"
  )
fi
env -u SHARDLINE_ADMIN_TOKEN ${private[@]+"${private[@]}"} \
  SHARDLINE_SERVER_LISTEN="127.0.0.1:$http_port" \
  SHARDLINE_SERVER_OPS_LISTEN="" \
  SHARDLINE_NATS_URL="$url" \
  SHARDLINE_NATS_TLS_CA="$ca" \
  SHARDLINE_NATS_TLS_CERT="$cert" \
  SHARDLINE_NATS_TLS_KEY="$key" \
  SHARDLINE_LOGGING_FORMAT=text \
  "$router" serve --config config/shardline.toml >"$router_log" 2>&1 &
router_pid=$!

# Ready = every shard's NATS connection is up (and answered our first PING).
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

if [ -z "$server" ]; then
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
fi

# A DecideRequest for the bundled tenant acme (config/policies/acme/default.json).
body='{"version":"1","tenant_id":"acme","request_id":"validate-1",'
body+='"task":{"type":"chat","payload":{}}}'
reply=""
for _ in $(seq 1 10); do
  set +e
  reply="$("$client" --url "$url" --ca "$ca" --cert "$cert" --key "$key" \
    --subject "$decide_subject" --tenant-id acme --timeout-ms 2000 --body "$body" 2>&1)"
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
  echo "$failures check(s) failed; logs: ${NATS_LOGFILE:-}, $router_log"
fi
exit $((failures > 0))
