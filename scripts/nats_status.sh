#!/usr/bin/env bash
# Shows the development nats-server: pid, ports, health and a /varz summary.
# Exit 0 when it runs and is healthy, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nats_common.sh

if ! pid="$(nats_running_pid)"; then
  echo "nats-server is not running (state in $NATS_STATE_DIR)"
  exit 1
fi
port=4222 monitor_port=8222 tls=0
# shellcheck disable=SC1090
[ -s "$NATS_ENVFILE" ] && . "$NATS_ENVFILE"
scheme=nats
[ "$tls" = 1 ] && scheme=tls
echo "pid:      $pid"
echo "clients:  $scheme://127.0.0.1:$port"
echo "monitor:  http://127.0.0.1:$monitor_port"
echo "log:      $NATS_LOGFILE"
if ! nats_healthy "$monitor_port"; then
  echo "health:   NOT OK (no 200 from /healthz)"
  exit 1
fi
echo "health:   ok"

# /varz is indented JSON, one top-level key per line at two spaces: plain sed reads it.
varz="$(curl -fsS --max-time 2 "http://127.0.0.1:$monitor_port/varz")"
field() {
  printf '%s\n' "$varz" | sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}
echo "version:  $(field version)"
echo "uptime:   $(field uptime)"
echo "conns:    $(field connections) now, $(field total_connections) in all"
echo "messages: $(field in_msgs) in, $(field out_msgs) out"
echo "bytes:    $(field in_bytes) in, $(field out_bytes) out"
tls_required="$(field tls_required)"
tls_verify="$(field tls_verify)"
echo "tls:      required ${tls_required:-false}, verify clients ${tls_verify:-false}"
