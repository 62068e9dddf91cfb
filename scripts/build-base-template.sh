#!/usr/bin/env bash
# Builds the default sandbox template `base` into this node's layer store, once.
#
#   bash scripts/build-base-template.sh           build unless templates/base exists and verifies
#   bash scripts/build-base-template.sh --force   build anew (an old layer stays until removed)
#
# The template is a Debian bookworm root filesystem made by mmdebstrap from the Debian mirror that
# this machine's apt already uses, with a `user` account (uid 1000, passwordless sudo) as in E2B's
# base image. It is imported as an immutable, content-addressed layer (see docs/templates-base.md).
#
# Environment: ARBOR_DATA_DIR (default /var/lib/arbor), CARGO_TARGET_DIR (default <repo>/target).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

SUITE=bookworm
REF=templates/base
PACKAGES=(bash coreutils procps python3 python3-pip nodejs npm git curl ca-certificates sudo iproute2)
# An empty file in the layer for the runtime to bind-mount arbor-envd onto.
ENVD_MOUNT_POINT=/usr/local/bin/arbor-envd
export ARBOR_DATA_DIR=${ARBOR_DATA_DIR:-/var/lib/arbor}
LAYERS_BIN="$CARGO_TARGET_DIR/release/arbor-layers"

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
esac
[ "$(id -u)" -eq 0 ] || die "building the base template needs root (mmdebstrap, chroot, file ownership)"

# Release build: verifying hashes the whole ~500 MB tree on every setup run.
cargo build --quiet --release -p arbor-layers --bin arbor-layers --manifest-path "$ROOT/Cargo.toml"

mkdir -p "$ARBOR_DATA_DIR"
# One builder per node at a time; a second one waits here, then finds the reference and stops.
exec 9>"$ARBOR_DATA_DIR/.build-base.lock"
flock 9

# The recipe (this script) is part of what the template is: a change to it rebuilds.
recipe=$(sha256sum "$0" | cut -c1-16)
if [ "$force" -eq 0 ]; then
    status=0
    why=$("$LAYERS_BIN" check-ref "$REF" 2>&1) || status=$?
    if [ "$status" -eq 0 ] && ! "$LAYERS_BIN" get-ref "$REF" | grep -q "\"recipe\": *\"$recipe\""; then
        status=3
        why="the recipe (scripts/build-base-template.sh) changed"
    fi
    case "$status" in
        0) note "$REF is built and verifies: $("$LAYERS_BIN" get-ref "$REF" | grep -o 'sha256-[0-9a-f]*' | head -1)"
           exit 0 ;;
        3) note "building: ${why#arbor-layers: }" ;;
        *) die "$why" ;;
    esac
fi
"$LAYERS_BIN" clean-tmp >/dev/null

if ! command -v mmdebstrap >/dev/null 2>&1; then
    note "installing mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi
sources=$("$LAYERS_BIN" apt-sources --suite "$SUITE")

# Built inside the store's tmp dir, on the store's filesystem, so that the import is a rename. The
# name carries our pid, which lets `clean-tmp` remove it after a crash.
work=$(mktemp -d "$ARBOR_DATA_DIR/tmp/build-$$-XXXXXX")
cleanup() {
    # mmdebstrap unmounts what it mounts in the chroot, unless it was killed half-way.
    { findmnt -rn -o TARGET | grep -F "$work/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"
log="$ARBOR_DATA_DIR/build-base.log"

# The image's own state for a sandbox: a `user` as in E2B's image, neutral network files (the
# runtime writes the real ones per sandbox), and nothing the build left behind.
customize() {
    local r=$1
    chroot "$r" useradd --create-home --uid 1000 --user-group --shell /bin/bash --groups sudo user
    printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$r/etc/sudoers.d/user"
    chmod 0440 "$r/etc/sudoers.d/user"
    chroot "$r" visudo -c -q -f /etc/sudoers.d/user
    # mmdebstrap copied the build host's resolv.conf and hostname: replace them.
    printf 'sandbox\n' >"$r/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
    printf '# Written per sandbox by the Arbor runtime.\n' >"$r/etc/resolv.conf"
    chmod 0644 "$r/etc/hostname" "$r/etc/hosts" "$r/etc/resolv.conf"
    install -m 0755 /dev/null "$r$ENVD_MOUNT_POINT"
    # The build host's own certificate authorities (/usr/local/share/ca-certificates: a company CA,
    # a TLS-inspecting egress proxy's) are trusted in the image too, so that pip, apt over https and
    # curl in sandboxes reach what the host reaches. Hosts without any add nothing.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
        chroot "$r" update-ca-certificates >/dev/null 2>&1
    fi
    # As in E2B's image, `pip install` works (into ~/.local for `user`) rather than refusing with
    # PEP 668's "externally managed environment".
    rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
    find "$r/var/log" -type f -delete
    rm -rf "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/tmp/* "$r"/root/.cache
}

note "mmdebstrap $SUITE (minbase + ${PACKAGES[*]}); log: $log"
started=$SECONDS
packages=$(IFS=,; echo "${PACKAGES[*]}")
if ! mmdebstrap --mode=root --variant=minbase --format=directory \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include="$packages" \
    "$SUITE" "$rootfs" - <<<"$sources" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "mmdebstrap failed (full log: $log)"
fi
customize "$rootfs"
size=$(du -sh "$rootfs" | cut -f1)
id=$("$LAYERS_BIN" import "$rootfs")
"$LAYERS_BIN" set-ref "$REF" --layer "$id" \
    --envd-mount-point "$ENVD_MOUNT_POINT" --default-user user --default-workdir /home/user \
    --label suite="$SUITE" --label builder=mmdebstrap --label packages="${PACKAGES[*]}" --label recipe="$recipe"
note "$REF -> $id ($size, built in $((SECONDS - started)) s)"
