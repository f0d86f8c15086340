#!/usr/bin/env bash
# The project's one test command: the lint gate, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure_tool.sh
# The black-box NATS tests run a real nats-server; the Prometheus rules' checks and the
# metrics lint run the real promtool (Debian's `prometheus` package; only the tool).
ensure_tool nats-server nats-server
ensure_tool promtool prometheus --no-install-recommends

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
