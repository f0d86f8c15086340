#!/usr/bin/env bash
# The project's one test command: the lint gate, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --skip every_beamline_fixture_loads_and_decides
# Run apart so that its report (how many Beamline fixtures loaded) reaches the output.
cargo test --test compat_beamline every_beamline_fixture_loads_and_decides -- --nocapture
# Instruction counts of the hot path against the committed baseline (installs valgrind if
# missing): the perf gate that a shared machine's noise cannot flake.
./scripts/icount_gate.sh
