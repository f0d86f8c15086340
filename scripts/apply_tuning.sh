#!/usr/bin/env bash
# Applies the sysctl part of a tuning profile, and puts it back.
#
#   scripts/apply_tuning.sh --dry-run [--profile NAME|PATH]   show what would change
#   scripts/apply_tuning.sh --apply   [--profile NAME|PATH]   change it (root), saving old values
#   scripts/apply_tuning.sh --restore                         put the saved values back (root)
#
# The profile defaults to low-latency. The values come from `shardline tune plan
# --sysctl-conf` (an at-least setting already exceeded is left alone). The first --apply
# saves every value it changes to _artifacts/tuning/sysctl.saved (TUNING_SAVED overrides);
# later applies add only keys not saved yet, so --restore returns to the state before the
# first one. Changes last until reboot. SHARDLINE_BIN names the binary (default: the
# release build, else `cargo run --release`).
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 --dry-run|--apply|--restore [--profile NAME|PATH]" >&2
    exit 2
}

mode="${1:-}"
[ $# -gt 0 ] && shift
profile="low-latency"
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        *) usage ;;
    esac
done
# A profile path is the caller's, not the repository root's.
case "$profile" in
    /*) ;;
    */* | *.toml) profile="$caller/$profile" ;;
esac
saved="${TUNING_SAVED:-_artifacts/tuning/sysctl.saved}"

shardline() {
    if [ -n "${SHARDLINE_BIN:-}" ]; then
        "$SHARDLINE_BIN" "$@"
    elif [ -x target/release/shardline ]; then
        target/release/shardline "$@"
    else
        cargo run --release -q -- "$@"
    fi
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0 $mode: run as root (sysctl -w needs it)" >&2
        exit 1
    fi
}

# Whitespace runs folded to one space, ends trimmed.
trim() { echo "$1" | xargs; }

apply() {
    local conf key value current
    conf="$(shardline tune plan --profile "$profile" --sysctl-conf)"
    [ "$mode" = --apply ] && mkdir -p "$(dirname "$saved")" && touch "$saved"
    while IFS='=' read -r key value; do
        key="$(trim "$key")"
        value="$(trim "$value")"
        if ! current="$(sysctl -n "$key" 2>/dev/null)"; then
            echo "skip  $key: not on this kernel"
            continue
        fi
        current="$(trim "$current")"
        if [ "$current" = "$value" ]; then
            echo "ok    $key = $value"
            continue
        fi
        echo "set   $key: $current -> $value"
        if [ "$mode" = --apply ]; then
            grep -q "^$key = " "$saved" || echo "$key = $current" >>"$saved"
            sysctl -q -w "$key=$value"
        fi
    done <<<"$conf"
    [ "$mode" = --apply ] && echo "saved the old values in $saved (--restore puts them back)"
    return 0
}

restore() {
    local key value
    if [ ! -f "$saved" ]; then
        echo "$0: nothing to restore ($saved does not exist)" >&2
        exit 1
    fi
    while IFS='=' read -r key value; do
        key="$(trim "$key")"
        value="$(trim "$value")"
        echo "restore $key = $value"
        sysctl -q -w "$key=$value"
    done <"$saved"
    rm -- "$saved"
}

case "$mode" in
    --dry-run) apply ;;
    --apply) need_root; apply ;;
    --restore) need_root; restore ;;
    *) usage ;;
esac
