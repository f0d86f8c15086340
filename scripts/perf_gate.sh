#!/usr/bin/env bash
# The perf gate over the repo's baseline and policy: one PASS/FAIL/SKIP line per rule.
#
#   scripts/perf_gate.sh CANDIDATE.json [--candidate RUN2.json ...] [--candidate-exit-code N]
#                        [--allow-different-conditions]
#
# Paths are relative to the repo root. BASELINE and POLICY override perf/baseline.json and
# perf/policy.json. Exit 0 pass, 1 fail, 2 unusable input (including a candidate measured
# under other conditions than the baseline: take it with the baseline's env.command_line).
# The verdict is also written to _artifacts/perf_gate.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CANDIDATE.json [--candidate RUN2.json ...] [--candidate-exit-code N]" >&2
    exit 2
fi

mkdir -p _artifacts
cargo run --release -q -- gate \
    --baseline "${BASELINE:-perf/baseline.json}" \
    --policy "${POLICY:-perf/policy.json}" \
    --candidate "$@" 2>&1 | tee _artifacts/perf_gate.txt
