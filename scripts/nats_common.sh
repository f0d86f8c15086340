# Sourced by the nats_*.sh scripts (not run by itself): where a development nats-server's
# state lives and how to tell whether it runs. The caller has cd'ed to the repository root.
#
# NATS_STATE_DIR (default _artifacts/nats) holds nats.pid, nats.log and nats.env (the
# ports and mode it was started with); a second instance needs its own directory.

NATS_STATE_DIR="${NATS_STATE_DIR:-_artifacts/nats}"
NATS_PIDFILE="$NATS_STATE_DIR/nats.pid"
NATS_LOGFILE="$NATS_STATE_DIR/nats.log"
NATS_ENVFILE="$NATS_STATE_DIR/nats.env"

# Prints the nats-server binary: the one on PATH, else Debian's /usr/sbin/nats-server.
nats_bin() {
  if command -v nats-server >/dev/null 2>&1; then
    command -v nats-server
  elif [ -x /usr/sbin/nats-server ]; then
    echo /usr/sbin/nats-server
  else
    echo "nats-server not found: apt-get install -y nats-server" >&2
    return 1
  fi
}

# Prints the pid from the pidfile when that process is alive and is a nats-server;
# removes a stale pidfile. Fails when none runs.
nats_running_pid() {
  [ -s "$NATS_PIDFILE" ] || return 1
  local pid
  pid="$(cat "$NATS_PIDFILE")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && grep -q nats-server "/proc/$pid/comm" 2>/dev/null; then
    echo "$pid"
    return 0
  fi
  rm -f "$NATS_PIDFILE"
  return 1
}

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeeds when the monitor on port $1 answers /healthz with 200.
nats_healthy() {
  curl -fsS --max-time 1 "http://127.0.0.1:$1/healthz" >/dev/null 2>&1
}
