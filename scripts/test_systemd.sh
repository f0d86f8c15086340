#!/usr/bin/env bash
# The systemd unit (config/systemd/shardline.service) and the drop-in `shardline tune plan`
# prints, checked by systemd's own parser: `systemd-analyze verify` must pass and print
# nothing (an unknown key or a bad value is only a warning there, so any output fails).
#
#   scripts/test_systemd.sh [BINARY]    BINARY: the shardline to check ExecStart against
#                                       (default target/debug/shardline, built if missing)
#
# Installs Debian's systemd package when systemd-analyze is missing (apt-get; through sudo
# when not root). verify checks that ExecStart's binary exists, so it runs on a copy of the
# unit whose ExecStart names BINARY; every other line is the shipped one.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=config/systemd/shardline.service
bin=${1:-target/debug/shardline}

. scripts/ensure_tool.sh
ensure_tool systemd-analyze systemd
if [ ! -x "$bin" ]; then
    cargo build -q -p shardline --bin shardline
    bin=target/debug/shardline
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

grep -qx 'ExecStart=/usr/bin/shardline serve --config /etc/shardline/shardline.toml' "$unit" \
    || fail "$unit: ExecStart is not the packaged binary and config"
sed "s#^ExecStart=/usr/bin/shardline #ExecStart=$bin #" "$unit" >"$tmp/shardline.service"

# verify: exit 0 and silent.
verify() {
    local out
    if ! out=$(SYSTEMD_UNIT_PATH="$tmp:" systemd-analyze verify "$tmp/shardline.service" 2>&1); then
        fail "systemd-analyze verify $1: $out"
    fi
    [ -z "$out" ] || fail "systemd-analyze verify $1 warns: $out"
    echo "ok: systemd-analyze verify $1"
}
verify "$unit"

# The stop timeout must cover the default drain (grace + timeout + the shards' 5 s margin).
grace=$(sed -n 's/^drain_grace_ms = \([0-9]*\)$/\1/p' config/shardline.toml)
drain=$(sed -n 's/^drain_timeout_ms = \([0-9]*\)$/\1/p' config/shardline.toml)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
[ -n "$grace" ] && [ -n "$drain" ] && [ -n "$stop" ] || fail "cannot read the drain or stop times"
[ $((stop * 1000)) -gt $((grace + drain + 5000)) ] \
    || fail "TimeoutStopSec=${stop}s does not cover ${grace} + ${drain} + 5000 ms of drain"
echo "ok: TimeoutStopSec=${stop}s covers the default drain ($((grace + drain + 5000)) ms)"

# The drop-in from the plan, exactly as printed, on top of the unit.
mkdir "$tmp/shardline.service.d"
"$bin" tune plan --profile low-latency --cores 0-3 \
    | sed -n '/cpu-affinity.conf <<.EOF.$/,/^EOF$/p' | sed '1d;$d' \
    >"$tmp/shardline.service.d/cpu-affinity.conf"
grep -qx 'CPUAffinity=1-3' "$tmp/shardline.service.d/cpu-affinity.conf" \
    || fail "tune plan printed no CPUAffinity drop-in"
verify "$unit with the drop-in of tune plan"
