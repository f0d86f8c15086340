#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with libFuzzer, on stable Rust:
#   scripts/fuzz_coverage.sh TARGET [SECONDS] [SEED]
# TARGET is one of shardline-fuzz's targets (http, chunked, decide, result, policy, nats).
# The seed corpus comes from shardline-fuzz's structure-aware generator; libFuzzer's own
# corpus (inputs that reached new code) is kept in target/fuzz-coverage/corpus/TARGET and
# grows across runs; a crash is saved in target/fuzz-coverage/artifacts/. libfuzzer-sys
# builds libFuzzer from the C++ sources in its crate (a C++ compiler is needed); the
# instrumented build has its own target directory, so the first run builds everything once.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/fuzz_coverage.sh TARGET [SECONDS] [SEED]}
seconds=${2:-60}
seed=${3:-1}
work=target/fuzz-coverage
triple=$(rustc -vV | sed -n 's/^host: //p')

cargo run -q -p shardline-fuzz -- --target "$target" --seed "$seed" --inputs 500 \
  --write-corpus "$work/seeds"

# Sanitizer coverage on our code and its dependencies; `--target` keeps the flags off
# build scripts, which are not linked with libFuzzer.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
cargo build -p shardline-fuzz --features libfuzzer --target "$triple" \
  --target-dir "$work/build"

mkdir -p "$work/corpus/$target" "$work/artifacts"
echo "libFuzzer on $target for $seconds s, seed $seed"
FUZZ_TARGET=$target "$work/build/$triple/debug/shardline-fuzz" \
  -max_total_time="$seconds" -seed="$seed" -timeout=5 -rss_limit_mb=2048 -max_len=262144 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/$target-" \
  "$work/corpus/$target" "$work/seeds/$target"
