#!/usr/bin/env bash
# Builds the Debian package: shardline_<version>_<arch>.deb, for `sudo dpkg -i`.
#
#   scripts/package.sh [--out DIR] [--binary PATH]
#
#   --out DIR      where the .deb goes (default _artifacts/package/)
#   --binary PATH  package this binary instead of building one (tests, CI artifacts)
#
# Without --binary it runs `cargo build --release -p shardline --bin shardline`: cargo's
# own freshness check reuses target/release/shardline when nothing it depends on changed
# (the sources, the lock file, the vendored crates, the profile), and rebuilds otherwise.
# The binary is packaged with its debug information stripped.
#
# Why dpkg-deb rather than cargo-deb: dpkg-deb is already on every Debian machine (it is
# part of dpkg), while cargo-deb is one more tool to compile and install before a package
# can be built; and the package is small enough — one binary, one unit, config, examples,
# docs, four maintainer scripts — that the layout below is the whole recipe, readable in
# one place. The tree is assembled under a temporary root and archived owned by root
# (`--root-owner-group`), so neither fakeroot nor root is needed to build.
#
# What lands where (the unit, config/systemd/shardline.service, expects exactly this):
#   /usr/bin/shardline
#   /lib/systemd/system/shardline.service
#   /etc/shardline/shardline.toml             conffile; policies_dir -> /var/lib/shardline/policies
#   /etc/shardline/extensions/*.json          conffiles: the extension registry
#   /usr/share/shardline/policies/            example policies, seeded into the state
#                                             directory on first install
#   /usr/share/doc/shardline/                 README, docs/*.md, copyright
#   /var/lib/shardline/policies/              (made by postinst) the live policies, where
#                                             the admin API's writes persist
set -euo pipefail
cd "$(dirname "$0")/.."

out=_artifacts/package
binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

for tool in dpkg-deb dpkg strip objdump; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is missing (apt-get install -y dpkg binutils)" >&2; exit 2; }
done

version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "cannot read the version from Cargo.toml" >&2; exit 2; }
arch=$(dpkg --print-architecture)

if [ -z "$binary" ]; then
    cargo build --release -p shardline --bin shardline
    binary=target/release/shardline
fi
[ -x "$binary" ] || { echo "$binary is not an executable" >&2; exit 2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/shardline/extensions" "$root/usr/share/shardline" "$root/usr/share/doc/shardline"

install -m 0755 "$binary" "$root/usr/bin/shardline"
strip --strip-debug "$root/usr/bin/shardline"
install -m 0644 config/systemd/shardline.service "$root/lib/systemd/system/shardline.service"

# The config, its relative paths made the package's: policies live in the state directory
# (writable under ProtectSystem=strict), the registry beside the config.
policies_line='policies_dir = "policies"'
grep -qxF "$policies_line" config/shardline.toml \
    || { echo "config/shardline.toml has no line '$policies_line' to adapt" >&2; exit 2; }
sed 's#^policies_dir = "policies"$#policies_dir = "/var/lib/shardline/policies"#' \
    config/shardline.toml >"$root/etc/shardline/shardline.toml"
chmod 0644 "$root/etc/shardline/shardline.toml"
install -m 0644 config/extensions/*.json "$root/etc/shardline/extensions/"
cp -r config/policies "$root/usr/share/shardline/policies"
find "$root/usr/share/shardline" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +

install -m 0644 README.md docs/*.md "$root/usr/share/doc/shardline/"
cat >"$root/usr/share/doc/shardline/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: shardline
Comment: Licences of the Rust crates compiled in are listed by \`cargo tree\` in the source.
COPYRIGHT
chmod 0644 "$root/usr/share/doc/shardline/copyright"

(cd "$root" && find etc -type f | sort | sed 's#^#/#') >"$root/DEBIAN/conffiles"

# The C library the binary needs at least (its newest versioned glibc symbol).
glibc=$(objdump -T "$root/usr/bin/shardline" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
size_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: shardline
Version: $version
Architecture: $arch
Maintainer: Shardline maintainers <shardline@localhost>
Installed-Size: $size_kib
Depends: libc6 (>= $glibc), libgcc-s1, adduser
Section: net
Priority: optional
Description: routing-decision service for AI/LLM traffic
 Shardline decides, per request, which provider and model serve an AI/LLM
 call, from per-tenant policies. Thread-per-core (one pinned shard per core),
 io_uring, HTTP and NATS. Runs as the systemd service shardline.service.
CONTROL

cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
# Idempotent: every step checks before it acts, so a reinstall or upgrade changes nothing
# an operator set up.
set -e
if [ "$1" = configure ]; then
    if ! getent group shardline >/dev/null; then
        addgroup --system --quiet shardline
    fi
    if ! getent passwd shardline >/dev/null; then
        adduser --system --quiet --ingroup shardline --no-create-home \
            --home /var/lib/shardline --shell /usr/sbin/nologin shardline
    fi
    install -d -o shardline -g shardline -m 0750 /var/lib/shardline
    # The example policies, only when there is no policy directory yet: never over an
    # operator's (or the admin API's) documents.
    if [ ! -e /var/lib/shardline/policies ]; then
        cp -r /usr/share/shardline/policies /var/lib/shardline/policies
        chown -R shardline:shardline /var/lib/shardline/policies
    fi
    # Only where systemd runs (not in a chroot or a container without it).
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
        # Restart on upgrade when it was running; a first install leaves it stopped
        # until the operator has looked at /etc/shardline/shardline.toml.
        if [ -n "$2" ] && systemctl is-active --quiet shardline.service; then
            systemctl restart shardline.service || true
        fi
    fi
fi
exit 0
POSTINST

cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
# Stop the service before its binary goes (a removal, not an upgrade: postinst restarts).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop shardline.service >/dev/null 2>&1 || true
    systemctl disable shardline.service >/dev/null 2>&1 || true
fi
exit 0
PRERM

cat >"$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
# remove: the unit is gone, tell systemd. purge: also the state (the live policies) and
# the system user; dpkg itself purges the conffiles under /etc/shardline.
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
    rm -rf /var/lib/shardline
    if getent passwd shardline >/dev/null && command -v deluser >/dev/null; then
        deluser --system --quiet shardline >/dev/null 2>&1 || true
    fi
    if getent group shardline >/dev/null && command -v delgroup >/dev/null; then
        delgroup --system --quiet shardline >/dev/null 2>&1 || true
    fi
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

mkdir -p "$out"
deb="$out/shardline_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
