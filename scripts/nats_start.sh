#!/usr/bin/env bash
# Starts a development nats-server in the background on 127.0.0.1.
# Usage: scripts/nats_start.sh [--tls] [--port P] [--monitor-port M]
#   --tls   TLS with client-certificate verification (config/nats_tls.conf); the test
#           certificates are generated first when missing (scripts/generate_certs.sh).
# Defaults: port 4222, monitor 8222. State (pid, log, ports) in _artifacts/nats/, or in
# $NATS_STATE_DIR. Running it again while the server runs is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nats_common.sh

port=4222
monitor_port=8222
tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tls) tls=1 ;;
    --port) port="${2:?--port needs a value}"; shift ;;
    --monitor-port) monitor_port="${2:?--monitor-port needs a value}"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for p in "$port" "$monitor_port"; do
  case "$p" in
    ''|*[!0-9]*) echo "not a port number: '$p'" >&2; exit 2 ;;
  esac
done
[ "$port" != "$monitor_port" ] || { echo "--port and --monitor-port must differ" >&2; exit 2; }

if pid="$(nats_running_pid)"; then
  echo "nats-server already running: pid $pid, $(tr '\n' ' ' <"$NATS_ENVFILE" 2>/dev/null)" \
    "(scripts/nats_stop.sh first to start it with other options)"
  exit 0
fi

for p in "$port" "$monitor_port"; do
  if port_busy "$p"; then
    echo "port $p on 127.0.0.1 is busy: stop what listens there (ss -ltnp 'sport = :$p')" \
      "or choose another with --port / --monitor-port" >&2
    exit 1
  fi
done

bin="$(nats_bin)"
args=(-a 127.0.0.1 -p "$port" -m "$monitor_port")
if [ "$tls" = 1 ]; then
  scripts/generate_certs.sh >/dev/null
  args+=(-c config/nats_tls.conf)
fi

mkdir -p "$NATS_STATE_DIR"
nohup "$bin" "${args[@]}" >>"$NATS_LOGFILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$NATS_PIDFILE"
printf 'port=%s\nmonitor_port=%s\ntls=%s\n' "$port" "$monitor_port" "$tls" >"$NATS_ENVFILE"

# Up to 10 s for /healthz.
for _ in $(seq 1 50); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$NATS_PIDFILE"
    echo "nats-server exited at start; the end of $NATS_LOGFILE:" >&2
    tail -n 5 "$NATS_LOGFILE" >&2
    exit 1
  fi
  if nats_healthy "$monitor_port"; then
    scheme=nats
    [ "$tls" = 1 ] && scheme=tls
    echo "nats-server running: pid $pid, $scheme://127.0.0.1:$port," \
      "monitor http://127.0.0.1:$monitor_port, log $NATS_LOGFILE"
    exit 0
  fi
  sleep 0.2
done
kill "$pid" 2>/dev/null || true
rm -f "$NATS_PIDFILE"
echo "nats-server did not answer http://127.0.0.1:$monitor_port/healthz within 10 s;" \
  "stopped it. The end of $NATS_LOGFILE:" >&2
tail -n 5 "$NATS_LOGFILE" >&2
exit 1
