#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh) and checks it as dpkg sees it: its control
# fields and conffiles (`dpkg-deb -I`), its file list (`dpkg-deb -c`), and, unpacked into a
# temporary root (`dpkg-deb -x`), that the unit's ExecStart, the config and what the
# config points at are where the unit expects them; the packaged binary checks the
# packaged config with the packaged policies and registry (`config check`); dpkg installs,
# reinstalls, removes and purges it in a sandbox, running the maintainer scripts; and the
# packaged unit passes `systemd-analyze verify` (scripts/test_systemd.sh).
#
#   scripts/test_package.sh [--binary PATH]   PATH: package this binary instead of the
#                                             release build package.sh makes (reuses)
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

deb=$(scripts/package.sh --out "$tmp/out" "$@" | tail -1)
version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
[ "$(basename "$deb")" = "shardline_${version}_${arch}.deb" ] || fail "package named $deb"
ok "built $(basename "$deb")"

# Control fields.
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = shardline ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
depends=$(field Depends)
grep -q 'libc6 (>= 2\.[0-9]*)' <<<"$depends" || fail "Depends: $depends"
grep -q adduser <<<"$depends" || fail "Depends lacks adduser (postinst uses it)"
info=$(dpkg-deb -I "$deb")
for script in postinst prerm postrm; do
    grep -q " $script " <<<"$info" || fail "no $script in the control archive"
done
ok "control: $(field Package) $(field Version) $(field Architecture); Depends: $(field Depends)"

# Conffiles: everything under /etc, nothing else.
dpkg-deb -e "$deb" "$tmp/control"
expected_conffiles=$(printf '%s\n' /etc/shardline/extensions/mask_pii.json \
    /etc/shardline/extensions/normalize_text.json /etc/shardline/extensions/pii_guard.json \
    /etc/shardline/extensions/test_provider.json /etc/shardline/shardline.toml)
[ "$(sort "$tmp/control/conffiles")" = "$expected_conffiles" ] \
    || fail "conffiles: $(cat "$tmp/control/conffiles")"
ok "conffiles: $(wc -l <"$tmp/control/conffiles") files under /etc/shardline"

# File list.
list=$(dpkg-deb -c "$deb" | awk '{print $NF}')
for path in ./usr/bin/shardline ./lib/systemd/system/shardline.service \
    ./etc/shardline/shardline.toml ./usr/share/shardline/policies/acme/default.json \
    ./usr/share/doc/shardline/README.md ./usr/share/doc/shardline/OPERATIONS.md \
    ./usr/share/doc/shardline/copyright; do
    grep -qxF "$path" <<<"$list" || fail "$path is not in the package"
done
dpkg-deb -c "$deb" | awk '$2 != "root/root" {print; bad=1} END {exit bad}' \
    || fail "files not owned by root"
ok "contents: binary, unit, config, registry, example policies, docs; all root-owned"

# Maintainer scripts: valid sh; systemctl only where systemd runs; seeding never overwrites.
for script in postinst prerm postrm; do
    sh -n "$tmp/control/$script" || fail "$script is not valid sh"
done
grep -q 'getent passwd shardline' "$tmp/control/postinst" || fail "postinst does not check the user"
grep -q '\[ ! -e /var/lib/shardline/policies \]' "$tmp/control/postinst" \
    || fail "postinst seeds policies unconditionally"
for script in postinst prerm postrm; do
    if grep -q systemctl "$tmp/control/$script"; then
        grep -q '/run/systemd/system' "$tmp/control/$script" \
            || fail "$script calls systemctl without checking that systemd runs"
    fi
done
ok "maintainer scripts: sh -n, user and seeding checked first, systemctl only under systemd"

# Unpacked: the unit's paths exist in the package.
root=$tmp/root
dpkg-deb -x "$deb" "$root"
unit=$root/lib/systemd/system/shardline.service
cmp -s "$unit" config/systemd/shardline.service || fail "the packaged unit differs from the repository's"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
read -r bin _ config_flag config <<<"$exec_start"
[ "$config_flag" = --config ] || fail "ExecStart: $exec_start"
[ -x "$root$bin" ] || fail "ExecStart's $bin is not in the package"
[ -f "$root$config" ] || fail "ExecStart's $config is not in the package"
state=$(sed -n 's/^StateDirectory=//p' "$unit")
policies=$(sed -n 's/^policies_dir = "\(.*\)"$/\1/p' "$root$config")
[ "$policies" = "/var/lib/$state/policies" ] \
    || fail "policies_dir $policies is not under the unit's StateDirectory /var/lib/$state"
grep -q "^extensions_dir = \"extensions\"$" "$root$config" || fail "extensions_dir moved"
ls "$root/etc/shardline/extensions/"*.json >/dev/null || fail "no registry beside the config"
ok "unpacked: $bin and $config where ExecStart names them; policies in /var/lib/$state"

# The packaged binary accepts the packaged config, registry and example policies (the
# policies from where postinst seeds them; the state directory does not exist here).
if ! check=$(SHARDLINE_SERVER_POLICIES_DIR="$root/usr/share/shardline/policies" \
    "$root$bin" config check "$root$config" 2>&1); then
    fail "config check of the packaged config: $check"
fi
grep -q ': policies load$' <<<"$check" || fail "config check loaded no policies: $check"
grep -q '/etc/shardline/extensions: [1-9][0-9]* extension(s)$' <<<"$check" \
    || fail "config check found no registry: $check"
ok "the packaged binary checks the packaged config, registry and example policies"

# dpkg itself accepts it: unpacked into an empty dpkg database under a temporary root
# (`--unpack` runs no maintainer script, so nothing on this machine changes), with every
# file under /etc registered as a conffile.
db=$tmp/dpkg-root
mkdir -p "$db/var/lib/dpkg/info" "$db/var/lib/dpkg/updates"
: >"$db/var/lib/dpkg/status"
dpkg --root="$db" --force-depends --force-not-root --unpack "$deb" >/dev/null \
    || fail "dpkg --root --unpack refused the package"
status=$(dpkg --root="$db" -s shardline)
grep -q '^Status: install ok unpacked$' <<<"$status" || fail "dpkg status: $status"
registered=$(sed -n 's#^ \(/etc/[^ ]*\) newconffile$#\1#p' <<<"$status" | sort)
[ "$registered" = "$expected_conffiles" ] || fail "dpkg registered conffiles: $registered"
[ -x "$db/usr/bin/shardline" ] || fail "dpkg unpacked no binary"
ok "dpkg --root --unpack: installed unpacked, $(wc -l <<<"$registered") conffiles registered"

# The maintainer scripts, run for real by dpkg: install, reinstall, remove and purge into a
# temporary root, inside a private mount namespace whose /usr is an overlay of this
# machine's (so the scripts find sh, adduser and getent, and write nothing outside the
# temporary root), with this machine's /dev and a copy of /etc's user databases. /run/systemd/system does not
# exist there, as in a chroot: the scripts must not call systemctl.
maintainer_scripts() {
    set -euo pipefail
    local db=$1 deb=$2 expected_conffiles=$3
    fail() { echo "FAIL: $*" >&2; exit 1; }
    mkdir -p "$db"/{usr,dev,etc,run,tmp,var/lib/dpkg/info,var/lib/dpkg/updates} "$db.up" "$db.work"
    : >"$db/var/lib/dpkg/status"
    mount -t overlay overlay -o "lowerdir=/usr,upperdir=$db.up,workdir=$db.work" "$db/usr"
    mount --bind /dev "$db/dev"
    for link in bin sbin lib lib64; do
        if [ -L "/$link" ]; then ln -sfn "$(readlink "/$link")" "$db/$link"; fi
    done
    for f in passwd group shadow gshadow nsswitch.conf adduser.conf login.defs; do
        if [ -e "/etc/$f" ]; then cp -p "/etc/$f" "$db/etc/"; fi
    done
    local dpkg=(dpkg --root="$db" --force-depends)
    users() { grep -c '^shardline:' "$db/etc/passwd" || true; }

    "${dpkg[@]}" -i "$deb" >/dev/null 2>&1 || fail "dpkg -i: $("${dpkg[@]}" -i "$deb" 2>&1)"
    [ "$(users)" = 1 ] || fail "postinst created no shardline user"
    grep -q '^shardline:' "$db/etc/group" || fail "postinst created no shardline group"
    local seeded=$db/var/lib/shardline/policies/acme/default.json
    [ -f "$seeded" ] || fail "postinst seeded no policies"
    local uid
    uid=$(sed -n 's/^shardline:[^:]*:\([0-9]*\):.*/\1/p' "$db/etc/passwd")
    [ "$(stat -c %u "$seeded")" = "$uid" ] || fail "seeded policies not owned by shardline"
    echo "ok: dpkg -i: user and group created, policies seeded into /var/lib/shardline"

    echo '{"operator": "mine"}' >"$db/var/lib/shardline/policies/acme/default.json"
    "${dpkg[@]}" -i "$deb" >/dev/null 2>&1 || fail "reinstall failed"
    [ "$(users)" = 1 ] || fail "reinstall: $(users) shardline users"
    grep -q mine "$seeded" || fail "reinstall overwrote an operator's policy"
    echo "ok: reinstall: idempotent, the operator's policies kept"

    "${dpkg[@]}" -r shardline >/dev/null 2>&1 || fail "dpkg -r failed"
    [ ! -e "$db/usr/bin/shardline" ] || fail "dpkg -r left the binary"
    [ -f "$seeded" ] && [ "$(users)" = 1 ] || fail "dpkg -r removed the state or the user"
    [ -f "$db/etc/shardline/shardline.toml" ] || fail "dpkg -r removed a conffile"
    echo "ok: dpkg -r: binary gone; config, policies and user kept"

    "${dpkg[@]}" -P shardline >/dev/null 2>&1 || fail "dpkg -P failed"
    [ "$(users)" = 0 ] || fail "purge left the shardline user"
    [ ! -e "$db/var/lib/shardline" ] || fail "purge left /var/lib/shardline"
    [ ! -e "$db/etc/shardline" ] || fail "purge left /etc/shardline"
    echo "ok: dpkg -P: user, state and config gone"
}
if [ "$(id -u)" = 0 ] && unshare -m --propagation private true 2>/dev/null; then
    unshare -m --propagation private bash -c "$(declare -f maintainer_scripts); \
        maintainer_scripts \"\$@\"" _ "$tmp/sandbox" "$deb" "$expected_conffiles"
else
    echo "SKIPPED: the maintainer scripts under dpkg (needs root for a private mount namespace)"
fi

scripts/test_systemd.sh "$root$bin"
