#!/usr/bin/env bash
# Builds and installs CRIU >= 4 (memory checkpoints for pause, resume, clone and snapshots).
#
# Debian bookworm ships CRIU 3.17, which fails on kernels >= 6.13 ("Unexpected rt vDSO area bounds").
# This takes the upstream tarball of Debian trixie's `criu` source package from the mirror this machine's
# apt already uses, builds only the `criu` binary (about 20 s on 2 cores) and installs it as
# /usr/local/sbin/criu. The trixie source list lives in a private apt state directory, so the machine's
# own apt configuration is left untouched.
#
# Before building it applies the patches in scripts/criu-patches/ (`patch -p1`, in name order) and stamps
# the binary with them: `criu --version` then reports "GitID: arbor-<hash of the patches>". Idempotent and
# fast: nothing is fetched or built when the installed CRIU is >= 4 and carries exactly these patches; any
# other CRIU (unpatched, older patches, a distribution build) at /usr/local/sbin/criu is rebuilt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

PREFIX=/usr/local/sbin
BUILD_DEPS=(build-essential patch pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev libnftables-dev uuid-dev
    libaio-dev)

PATCH_DIR="$ROOT/scripts/criu-patches"

criu_major() {
    [ -x "$PREFIX/criu" ] || { echo 0; return; }
    "$PREFIX/criu" --version 2>/dev/null | sed -n 's/^Version: \([0-9]*\).*/\1/p' | head -n1
}

# The patches, in the order they are applied.
patch_files() {
    find "$PATCH_DIR" -maxdepth 1 -name '*.patch' -type f 2>/dev/null | LC_ALL=C sort
}

# What `criu --version` prints as GitID for a build with exactly these patches: changes whenever a patch
# is added, removed or edited, so a stale build is noticed without looking inside the binary.
patch_stamp() {
    local files
    mapfile -t files < <(patch_files)
    if [ ${#files[@]} -eq 0 ]; then
        echo "arbor-unpatched"
    else
        echo "arbor-$(cat "${files[@]}" | sha256sum | cut -c1-12)"
    fi
}

installed_stamp() {
    [ -x "$PREFIX/criu" ] || return 0
    "$PREFIX/criu" --version 2>/dev/null | sed -n 's/^GitID: //p' | head -n1
}

# The Debian archive URI of this machine's apt configuration (deb822 .sources files or one-line lists),
# skipping the security archive.
debian_mirror() {
    local uri
    uri=$(awk '
        /^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris) }
        /^Suites:/ { if ($0 ~ /bookworm([ \t]|$)/ && uris != "") { split(uris, u, " "); print u[1]; exit } }
        /^[ \t]*$/ { uris = "" }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no Debian bookworm archive found in the apt configuration"
    echo "${uri%/}"
}

WORK=
main() {
    step "CRIU (>= 4, with scripts/criu-patches)"
    local major stamp
    major=$(criu_major)
    stamp=$(patch_stamp)
    if [ "${major:-0}" -ge 4 ] && [ "$(installed_stamp)" = "$stamp" ]; then
        note "$("$PREFIX/criu" --version | head -n1) ($stamp) already installed"
        return
    fi
    if [ "${major:-0}" -ge 4 ]; then
        note "installed CRIU lacks the current patches ($(installed_stamp || true), want $stamp): rebuilding"
    fi
    [ "$(id -u)" -eq 0 ] || die "need root to build and install CRIU"
    export DEBIAN_FRONTEND=noninteractive

    local missing=()
    for pkg in "${BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        note "build dependencies: ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi

    local mirror
    WORK=$(mktemp -d /tmp/arbor-criu.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    # apt downloads as the unprivileged `_apt` user when it can reach the directory.
    chmod 0755 "$WORK"
    local work=$WORK
    mirror=$(debian_mirror)
    mkdir -p "$work/lists/partial" "$work/src"
    cat >"$work/trixie-src.sources" <<SOURCES
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    local apt_opts=(-o "Dir::Etc::sourcelist=$work/trixie-src.sources" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")
    note "fetching trixie's criu source"
    apt-get "${apt_opts[@]}" update -qq
    # Only the upstream tarball is needed; the Debian parts may be missing from the mirror, which is fine.
    (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only -qq criu >/dev/null 2>&1) || true
    local tarball
    tarball=$(ls "$work"/src/criu_*.orig.tar.* 2>/dev/null | head -n1)
    [ -n "$tarball" ] || die "could not fetch the criu upstream tarball from $mirror"
    tar -C "$work/src" -xf "$tarball"
    local dir
    dir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'criu-*' | head -n1)
    local patch_file
    while read -r patch_file; do
        [ -n "$patch_file" ] || continue
        note "applying $(basename "$patch_file")"
        patch -d "$dir" -p1 --batch --forward --quiet <"$patch_file" \
            || die "$(basename "$patch_file") does not apply to $(basename "$dir"): update scripts/criu-patches"
    done < <(patch_files)
    note "building $(basename "$dir")"
    # GITID is what `criu --version` reports; it marks the build with the patch set (see patch_stamp).
    make -C "$dir" -j"$(nproc)" GITID="$stamp" criu >"$work/build.log" 2>&1 \
        || { tail -n 30 "$work/build.log" >&2; die "criu build failed"; }
    # Install through a temporary name and rename, so a running `criu` is never overwritten in place.
    install -m 0755 "$dir/criu/criu" "$PREFIX/.criu.new"
    mv -f "$PREFIX/.criu.new" "$PREFIX/criu"
    hash -r
    note "installed $("$PREFIX/criu" --version | head -n1) ($(installed_stamp)) at $PREFIX/criu"
    "$PREFIX/criu" check >/dev/null 2>&1 && note "criu check: looks good" || note "criu check reports problems: run 'criu check' for details"
}

main "$@"
