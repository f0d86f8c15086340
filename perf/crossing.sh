#!/usr/bin/env bash
# What a request pays for landing on a shard that does not own its tenant: the owner's
# port, the other shard's port and the shared port of one router (perf/bench/shard-ports.toml,
# two shards; TENANT is owned by shard 0), closed loop with wrk at c=1/16/64 and open loop
# at RATE with `shardline bench`, which reports the router's CPU per request from
# /proc/PID/task/*/stat.
#
#   perf/crossing.sh [BIN]        # BIN defaults to target/release/shardline
#   DURATION=3 RATE=10000 TENANT=tenant-2 WRK_CORE=1 perf/crossing.sh
#   NATS=1 NATS_RATE=5000 perf/crossing.sh   # also over NATS: the shared subject and each
#                                            # shard's own (starts nats-server on :14222)
#
# Prints one line per (port, load). On a 2-core machine the client shares a core with a
# shard: the client is pinned to the core of the shard it does NOT talk to (shard i runs on
# CPU i), so the owner's and the other shard's ports are measured alike; the shared port's
# client goes to WRK_CORE.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/shardline}
DURATION=${DURATION:-3}
RATE=${RATE:-10000}
TENANT=${TENANT:-tenant-2}
WRK_CORE=${WRK_CORE:-1}
# shellcheck source=../scripts/ensure_tool.sh
. scripts/ensure_tool.sh
ensure_tool wrk wrk

NATS_PID=
if [ "${NATS:-0}" = 1 ]; then
    ensure_tool nats-server nats-server
    NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
    "$NATS_BIN" -a 127.0.0.1 -p 14222 >/dev/null 2>&1 &
    NATS_PID=$!
    export SHARDLINE_NATS_URL=nats://127.0.0.1:14222
    sleep 0.5
fi
"$BIN" serve --config perf/bench/shard-ports.toml >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" $NATS_PID 2>/dev/null; wait "$PID" $NATS_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs -o /dev/null http://127.0.0.1:18100/readyz && break
    sleep 0.1
done

ticks() { awk '{s += $14 + $15} END {print s}' /proc/"$PID"/task/*/stat; }
handoffs() {
    curl -fs http://127.0.0.1:18100/metrics |
        awk '/^shardline_handoffs_total\{.*direction="out"/ {s += $2} END {print s + 0}'
}

for port in 18100 18101 8080; do
    case $port in
        18100) name=owner core=1 ;;
        18101) name=other core=0 ;;
        *) name=shared core=$WRK_CORE ;;
    esac
    for c in 1 16 64; do
        out=$(TENANT=$TENANT taskset -c "$core" wrk -t1 -c"$c" -d"${DURATION}s" --latency \
            -s perf/wrk/decide-one-tenant.lua "http://127.0.0.1:$port/")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        printf '%-7s c=%-3s %10s req/s  p50 %-8s p99 %s\n' "$name" "$c" "$rps" "$p50" "$p99"
    done
    before=$(ticks)
    report=$("$BIN" bench --target "http://127.0.0.1:$port" --tenants "$TENANT" --rate "$RATE" \
        --connections 16 --spin-us 0 --duration "${DURATION}s" --client-cores "$core" 2>/dev/null |
        grep -E 'sent|p50|p99' | tr -s ' \n' ' ')
    after=$(ticks)
    # The generator's one-second warm-up is inside the CPU window too.
    sent=$(( RATE * (DURATION + 1) ))
    cpu_us=$(awk -v t=$((after - before)) -v n="$sent" 'BEGIN {printf "%.1f", t * 10000 / n}')
    printf '%-7s open loop %s/s: router CPU %s µs/request ; %s\n' \
        "$name" "$RATE" "$cpu_us" "$report"
done
if [ -n "$NATS_PID" ]; then
    NATS_RATE=${NATS_RATE:-5000}
    for subject in beamline.router.v1.decide beamline.router.v1.decide.shard.0 \
        beamline.router.v1.decide.shard.1; do
        before=$(ticks)
        report=$("$BIN" bench --target nats://127.0.0.1:14222 --subject "$subject" \
            --tenants "$TENANT" --rate "$NATS_RATE" --spin-us 0 --duration "${DURATION}s" \
            --client-cores "$WRK_CORE" 2>/dev/null | grep -E 'sent|p50|p99' | tr -s ' \n' ' ')
        after=$(ticks)
        cpu_us=$(awk -v t=$((after - before)) -v n=$(( NATS_RATE * (DURATION + 1) )) \
            'BEGIN {printf "%.1f", t * 10000 / n}')
        printf 'nats %-36s %s/s: router CPU %s µs/request; %s\n' "$subject" "$NATS_RATE" \
            "$cpu_us" "$report"
    done
fi
echo "handoffs out over the whole run: $(handoffs)"
