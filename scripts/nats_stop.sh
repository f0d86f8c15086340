#!/usr/bin/env bash
# Stops the development nats-server started by scripts/nats_start.sh: SIGTERM, up to 10 s
# to exit, then SIGKILL. Not running is not an error.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nats_common.sh

if ! pid="$(nats_running_pid)"; then
  echo "nats-server is not running"
  exit 0
fi
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  echo "nats-server (pid $pid) still running after 10 s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$NATS_PIDFILE"
echo "nats-server stopped (pid $pid)"
