#!/usr/bin/env bash
# Applies the sysctl part of a tuning profile, and puts it back.
#
#   scripts/apply_tuning.sh --dry-run [--profile NAME|PATH] [--root DIR]
#                                                             show what would change
#   scripts/apply_tuning.sh --apply   [--profile NAME|PATH]   change it (root), saving old values
#   scripts/apply_tuning.sh --restore                         put the saved values back (root)
#
# The profile defaults to low-latency. The values come from `shardline tune plan
# --sysctl-conf` (an at-least setting already exceeded is left alone). The first --apply
# saves every value it changes to _artifacts/tuning/sysctl.saved (TUNING_SAVED overrides);
# later applies add only keys not saved yet, so --restore returns to the state before the
# first one. Changes last until reboot. SHARDLINE_BIN names the binary (default: the
# release build, else `cargo run --release`). --root DIR (with --dry-run only) reads the
# current values from DIR/proc/sys instead of the live kernel, as `shardline tune plan
# --root DIR` does: the two list the same changes for the same machine.
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 --dry-run|--apply|--restore [--profile NAME|PATH] [--root DIR]" >&2
    exit 2
}

mode="${1:-}"
[ $# -gt 0 ] && shift
profile="low-latency"
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        --root) root="${2:?--root needs a value}"; shift 2 ;;
        --root=*) root="${1#--root=}"; shift ;;
        *) usage ;;
    esac
done
# A profile path is the caller's, not the repository root's.
case "$profile" in
    /*) ;;
    */* | *.toml) profile="$caller/$profile" ;;
esac
case "$root" in
    "" | /*) ;;
    *) root="$caller/$root" ;;
esac
if [ -n "$root" ] && [ "$mode" != --dry-run ]; then
    echo "$0: --root reads another machine's copy; it goes with --dry-run only" >&2
    exit 2
fi
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

# The current value of a sysctl, from the kernel or from the --root copy.
current_value() {
    if [ -n "$root" ]; then
        cat "$root/proc/sys/${1//.//}" 2>/dev/null
    else
        sysctl -n "$1" 2>/dev/null
    fi
}

apply() {
    local conf key value current
    conf="$(shardline tune plan --profile "$profile" --sysctl-conf --root "${root:-/}")"
    [ "$mode" = --apply ] && mkdir -p "$(dirname "$saved")" && touch "$saved"
    while IFS='=' read -r key value; do
        key="$(trim "$key")"
        value="$(trim "$value")"
        if ! current="$(current_value "$key")"; then
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
