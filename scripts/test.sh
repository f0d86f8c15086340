#!/usr/bin/env bash
# The project's one test command: the lint gate, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The black-box NATS tests run a real nats-server; install Debian's package when missing.
ensure_nats_server() {
  if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
    return 0
  fi
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "nats-server is missing; installing it needs root: apt-get install -y nats-server" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "nats-server is missing and there is no apt-get: put nats-server 2.9+ on PATH" >&2
    exit 1
  fi
  echo "nats-server is missing: installing Debian's nats-server package"
  local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
  # Try without refreshing the package lists first; refresh them when that fails.
  if ! "${apt[@]}" install -y nats-server; then
    "${apt[@]}" update && "${apt[@]}" install -y nats-server || {
      echo "could not install nats-server: apt-get install -y nats-server" >&2
      exit 1
    }
  fi
}
ensure_nats_server

# The Prometheus rules' checks and the metrics lint run the real promtool (Debian's
# `prometheus` package; its service is not needed, only the tool).
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "promtool is missing; installing it needs root: apt-get install -y prometheus" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool is missing and there is no apt-get: put promtool 2.x on PATH" >&2
    exit 1
  fi
  echo "promtool is missing: installing Debian's prometheus package"
  local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
  if ! "${apt[@]}" install -y --no-install-recommends prometheus; then
    "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends prometheus || {
      echo "could not install promtool: apt-get install -y prometheus" >&2
      exit 1
    }
  fi
}
ensure_promtool

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The alerting and recording rules, and their unit tests (config/prometheus). The live
# checks, `promtool check metrics` on a running router's /metrics and every metric the
# rules and the dashboard use being exported, are tests/observability.rs, below (run
# alone, they skip without promtool unless CI=true).
promtool check rules config/prometheus/alerts.yml
promtool test rules config/prometheus/alerts_test.yml
cargo test --workspace -- --skip every_beamline_fixture_loads_and_decides
# The systemd unit and the drop-in `tune plan` prints, through systemd-analyze verify
# (installs Debian's systemd package when missing).
./scripts/test_systemd.sh
# The failure tests need the test-only fault hooks (a hanging DNS lookup, a stalled or
# panicking shard, a failing directory fsync in the policy store), compiled in only with
# this feature.
cargo test --features fault-injection --test serve_faults --test store_faults
# Run apart so that its report (how many Beamline fixtures loaded) reaches the output.
cargo test --test compat_beamline every_beamline_fixture_loads_and_decides -- --nocapture
# A short fuzz run of every parser that reads untrusted bytes (8 s each, 48 s in all; see
# docs/FUZZING.md for the long run). A failing input is saved and its replay printed.
cargo run -q -p shardline-fuzz -- --target all --seconds 8 --seed "${FUZZ_SEED:-1}"
# Instruction counts of the hot path against the committed baseline (installs valgrind if
# missing): the perf gate that a shared machine's noise cannot flake.
./scripts/icount_gate.sh
# The Debian package, built from the release binary (after the gate's release build) and
# checked with dpkg-deb: control fields, conffiles, contents, where the unit finds things.
./scripts/test_package.sh
