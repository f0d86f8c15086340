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

# Succeeds while process $1 runs: it exists and is no zombie (exited, not reaped yet,
# which `kill -0` cannot tell from running).
pid_alive() {
  kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Prints the pid from pidfile $1 when that process is alive and its command name is $2;
# removes a stale pidfile. Fails when none runs.
running_pid() {
  [ -s "$1" ] || return 1
  local pid
  pid="$(cat "$1")"
  if [ -n "$pid" ] && pid_alive "$pid" && grep -qx "$2" "/proc/$pid/comm" 2>/dev/null; then
    echo "$pid"
    return 0
  fi
  rm -f "$1"
  return 1
}

# Prints the pid of the development nats-server when it runs (see running_pid).
nats_running_pid() {
  running_pid "$NATS_PIDFILE" nats-server
}

# Stops process $1, called $2 in messages: SIGTERM, up to $3 seconds to exit, then SIGKILL.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait_exit "$@"
}

# Waits up to $3 seconds for process $1 (called $2), signalled already, to exit; then
# SIGKILL. Apart from stop_pid for processes that must get one SIGTERM only (a router
# ends at once, without draining, on its second).
wait_exit() {
  local pid=$1 name=$2 seconds=$3
  for _ in $(seq 1 $((seconds * 5))); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  echo "$name (pid $pid) still running after $seconds s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeeds when the monitor on port $1 answers /healthz with 200.
nats_healthy() {
  curl -fsS --max-time 1 "http://127.0.0.1:$1/healthz" >/dev/null 2>&1
}
