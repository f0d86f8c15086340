#!/usr/bin/env bash
# Runs `shardline bench` (release build) with the given arguments and keeps the JSON
# report in _artifacts/. Example: scripts/bench_router.sh --embedded --compare-bare --rate 5000
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p _artifacts
cargo run --release -q -- bench "$@" --out "_artifacts/bench-$(date +%Y%m%d-%H%M%S).json"
