#!/usr/bin/env bash
# The instruction-count gate: counts the hot path under callgrind and judges the counts
# against perf/icount/baseline.json under perf/icount/policy.json, one PASS/FAIL line per
# benchmark (base, candidate, limit). See perf/README.md.
#
#   scripts/icount_gate.sh            measure and gate: exit 0 pass, 1 fail, 2 unusable input
#   scripts/icount_gate.sh --update   measure and rewrite the baseline (then commit it)
#
# Installs valgrind when it is missing (apt-get; through sudo when not root). The candidate
# report and callgrind's profiles (for callgrind_annotate) go to _artifacts/icount/.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure_tool.sh
ensure_tool valgrind valgrind

cargo run --release -q -p shardline-icount -- "$@"
