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
stop_pid "$pid" nats-server 10
rm -f "$NATS_PIDFILE"
echo "nats-server stopped (pid $pid)"
