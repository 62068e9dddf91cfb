#!/usr/bin/env bash
# Installs everything Arbor needs on a fresh Debian bookworm machine (as root): Debian packages, CRIU >= 4,
# the static envd, the `arbor` binary, the base template, the SDK test environments. Then starts Arbor.
#
#   bash scripts/setup.sh              install, then run `arbor server` in the foreground on 127.0.0.1:3000
#   bash scripts/setup.sh --no-start   install only
#   bash scripts/setup.sh -- ARGS...   extra arguments for `arbor server` (see `arbor server --help`)
#
# Every step is idempotent: it checks first and does nothing when the work is already done, so running
# this again after a `git pull` only rebuilds what changed.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), ARBOR_DATA_DIR (default /var/lib/arbor: the
# server's state and the layer store the base template is built into), and every ARBOR_* variable of
# `arbor server --help`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

start=1
server_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-start) start=0 ;;
        --) shift; server_args=("$@"); break ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

# Debian packages the build and the test suites need. Node.js and npm are checked by command rather
# than by package, since a machine may carry a newer Node.js than Debian's.
install_debian_packages() {
    step "Debian packages"
    local wanted=(build-essential pkg-config ca-certificates file procps python3 python3-venv git nftables iproute2
        busybox-static btrfs-progs postgresql docker-registry skopeo umoci curl wrk)
    command -v node >/dev/null 2>&1 || wanted+=(nodejs)
    command -v npm >/dev/null 2>&1 || wanted+=(npm)
    local missing=()
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        note "all present"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
    note "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_toolchains() {
    step "toolchains"
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
    local node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || die "Node.js >= 20 needed for the JS suite (found $(node --version))"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
        || die "Python >= 3.9 needed (found $("$PYTHON" --version))"
    note "$(cargo --version), node $(node --version), $("$PYTHON" --version)"
}

# envd (every sandbox's PID 1) and the code interpreter (code-interpreter templates) run inside
# sandboxes whose root file systems we do not control, hence static binaries.
build_envd() {
    step "arbor-envd, arbor-interpreter (static release builds)"
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --quiet --release -p arbor-envd -p arbor-interpreter --target "$ENVD_TARGET" \
        --manifest-path "$ROOT/Cargo.toml"
    local bin
    for bin in "$ENVD_BIN" "$INTERPRETER_BIN"; do
        [ -x "$bin" ] || die "build did not produce $bin"
        # `file` says "statically linked" or "static-pie linked"; ldd refuses a static binary.
        if ! file -b "$bin" | grep -Eq "static(ally|-pie) linked"; then
            die "$bin is not static: $(file -b "$bin")"
        fi
        if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
            die "$bin has dynamic dependencies: $(ldd "$bin")"
        fi
        note "$bin ($(du -h "$bin" | cut -f1), static)"
    done
}

# The default sandbox template, built once into the node's layer store (docs/templates-base.md).
base_template() {
    step "base template (templates/base)"
    if [ "$(id -u)" -ne 0 ]; then
        note "not root: skipped (run scripts/build-base-template.sh as root)"
        return
    fi
    bash "$ROOT/scripts/build-base-template.sh"
}

# A stamp of the requirements file makes a second run skip pip entirely.
code_interpreter_template() {
    step "code-interpreter template (templates/code-interpreter-v1)"
    if [ "$(id -u)" -ne 0 ]; then
        note "not root: skipped"
        return
    fi
    bash "$ROOT/scripts/build-builtin-template.sh" code-interpreter-v1 "$ROOT/templates/code-interpreter" \
        --file "$INTERPRETER_BIN" --start-cmd "exec arbor-interpreter --eager python" \
        --ready-cmd "curl -sf http://127.0.0.1:49999/health" --memory-mb 1024
}

python_venv() {
    step "Python venv (.venv)"
    local req="$ROOT/tests/python/requirements.txt"
    local stamp="$VENV/.arbor-requirements.sha256"
    local want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        note "up to date"
        return
    fi
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
    note "installed $(grep -c '==' "$req") pinned packages"
}

node_modules() {
    step "JS packages (tests/js)"
    local js="$ROOT/tests/js"
    local stamp="$js/node_modules/.arbor-lock.sha256"
    local want
    want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        note "up to date"
        return
    fi
    (cd "$js" && npm ci --silent --no-audit --no-fund)
    echo "$want" >"$stamp"
    note "installed from package-lock.json"
}

# The server and the user CLI (one binary) and the sandbox launcher it executes.
build_arbor() {
    step "arbor (release build)"
    cargo build --quiet --release -p arbor-cli -p arbor-runtime --bin arbor --bin arbor-launch \
        --manifest-path "$ROOT/Cargo.toml"
    [ -x "$ARBOR_BIN" ] || die "build did not produce $ARBOR_BIN"
    note "$ARBOR_BIN"
}

run_server() {
    step "starting arbor server (Ctrl-C stops it; sandboxes keep running until the next start)"
    exec "$ARBOR_BIN" server --data-dir "${ARBOR_DATA_DIR:-/var/lib/arbor}" "${server_args[@]}"
}

install_debian_packages
check_toolchains
# Memory checkpoints (pause, resume, clone, snapshots) need CRIU >= 4, built from source once.
bash "$ROOT/scripts/build-criu.sh"
build_envd
build_arbor
base_template
code_interpreter_template
python_venv
node_modules
step "setup done"
[ "$start" -eq 1 ] && run_server
exit 0
