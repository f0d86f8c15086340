#!/usr/bin/env bash
# What a policy decided on its tenant's owner costs (budgets, a provider `rpm`): one
# router, two policies of acme with the same providers — `plain`, and `budgeted` with a
# tenant and a per-user budget far above the load — driven alternately by the same
# generator on the shared port, ROUNDS times, so that a machine's changing load falls on
# both alike. Prints CPU per request, p50 and p99 per run; the reports stay in $OUT_DIR.
#
#   perf/budgets.sh
#   RATE=10000 ROUNDS=5 perf/budgets.sh
#
# Env: RATE (5000), DURATION (5s), WARMUP (1s), ROUNDS (3), PORT (18600), ROUTER_BIN (the
# release build; built here if missing), OUT_DIR (_artifacts/budgets-DATE). The router
# is stopped by its PID at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure_tool.sh
ensure_tool jq jq

RATE=${RATE:-5000}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18600}
ROUTER_BIN=${ROUTER_BIN:-target/release/shardline}
OUT_DIR=${OUT_DIR:-_artifacts/budgets-$(date +%Y%m%d-%H%M%S)}
[ -x "$ROUTER_BIN" ] || cargo build --release -q --bin shardline
mkdir -p "$OUT_DIR"

work=$(mktemp -d)
router_pid=
cleanup() {
  if [ -n "$router_pid" ]; then kill "$router_pid" 2>/dev/null || true; wait "$router_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

providers='[{"name":"openai","weight":50,"cost":0.0025},{"name":"anthropic","weight":30,"cost":0.003},{"name":"mistral","weight":20,"cost":0.0008}]'
mkdir -p "$work/policies/acme"
echo "{\"version\":\"1.0\",\"providers\":$providers}" >"$work/policies/acme/plain.json"
echo "{\"version\":\"1.0\",\"providers\":$providers,\"budgets\":[
  {\"scope\":\"tenant\",\"window\":\"calendar_month\",\"max_cost\":1000000000.0},
  {\"scope\":\"metadata.user_id\",\"window\":\"1d\",\"max_requests\":1000000000}]}" \
  >"$work/policies/acme/budgeted.json"
cat >"$work/shardline.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
ops_listen = ""
policies_dir = "$work/policies"
EOF

"$ROUTER_BIN" serve --config "$work/shardline.toml" 2>"$OUT_DIR/router.log" &
router_pid=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.1
done

printf '%-9s %5s %14s %8s %8s %7s\n' policy round "cpu/req (µs)" "p50 µs" "p99 µs" errors
for round in $(seq "$ROUNDS"); do
  for policy in plain budgeted; do
    report="$OUT_DIR/$policy-$round.json"
    "$ROUTER_BIN" bench --target "http://127.0.0.1:$PORT" --tenants acme --policy "$policy" \
      --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --server-pid "$router_pid" \
      --out "$report" >"$OUT_DIR/$policy-$round.txt" 2>&1 || true
    jq -r --arg p "$policy" --arg r "$round" \
      '"\($p) \($r) \(.server_cpu_us_per_request) \(.latency_us.p50) \(.latency_us.p99) \(.errors_total)"' \
      "$report" | xargs printf '%-9s %5s %14s %8s %8s %7s\n'
  done
done
