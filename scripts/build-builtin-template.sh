#!/usr/bin/env bash
# Builds a built-in template from a Dockerfile with Arbor's own builder, once per recipe.
#
#   bash scripts/build-builtin-template.sh NAME DIR [options]
#     --file PATH       copy PATH into the build context first (repeatable; e.g. a binary DIR's
#                       Dockerfile COPYs)
#     --start-cmd CMD   the command its sandboxes start with already running
#     --ready-cmd CMD   exits 0 once the start command is ready
#     --memory-mb N     default memory of its sandboxes
#     --force           build anew even if the recipe is unchanged
#
# A temporary `arbor server` of its own (instance `arborsetup`, its own network pool and data dir,
# loopback only) builds DIR/Dockerfile exactly as `arbor template build` does for users, start command
# included (so a start command that never gets ready fails here). The result's layers are then
# published in this node's template store as `templates/NAME`, with the start and ready commands as
# labels: every server finds NAME there and, the first time a sandbox of it is created, takes its own
# memory snapshot of the start command running (docs/templates.md, "Built-in templates").
#
# Environment: ARBOR_DATA_DIR (the template store; default /var/lib/arbor), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

[ $# -ge 2 ] || die "usage: build-builtin-template.sh NAME DIR [--file PATH] [--start-cmd CMD] [--ready-cmd CMD] [--memory-mb N] [--force]"
NAME=$1 DIR=$2
shift 2
files=() start_cmd="" ready_cmd="" memory_mb="" force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --file) files+=("$2"); shift ;;
        --start-cmd) start_cmd=$2; shift ;;
        --ready-cmd) ready_cmd=$2; shift ;;
        --memory-mb) memory_mb=$2; shift ;;
        --force) force=1 ;;
        *) die "unknown option: $1" ;;
    esac
    shift
done
[ -f "$DIR/Dockerfile" ] || die "$DIR/Dockerfile not found"
[ "$(id -u)" -eq 0 ] || die "building a template needs root (it runs a server and sandboxes)"

export ARBOR_DATA_DIR=${ARBOR_DATA_DIR:-/var/lib/arbor}
LAYERS_BIN="$CARGO_TARGET_DIR/release/arbor-layers"
REF="templates/$NAME"
INSTANCE=arborsetup

mkdir -p "$ARBOR_DATA_DIR"
exec 9>"$ARBOR_DATA_DIR/.build-$NAME.lock"
flock 9

# The recipe: the context's files, the extra files, the commands and the base template's layers.
base_layers=$("$LAYERS_BIN" get-ref templates/base | grep -o 'sha256-[0-9a-f]*' | tr '\n' ' ')
recipe=$({
    (cd "$DIR" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    for f in "${files[@]}"; do sha256sum "$f" | cut -d' ' -f1; done
    printf '%s\n' "$start_cmd" "$ready_cmd" "$memory_mb" "$base_layers"
} | sha256sum | cut -c1-16)
if [ "$force" -eq 0 ] && "$LAYERS_BIN" check-ref "$REF" 2>/dev/null \
    && "$LAYERS_BIN" get-ref "$REF" | grep -q "\"recipe\": *\"$recipe\""; then
    note "$REF is built (recipe $recipe) and verifies"
    exit 0
fi

work=$(mktemp -d /tmp/arbor-build-"$NAME".XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    # What the temporary server set up on the host (it leaves no sandbox: builds remove theirs).
    nft delete table inet "$INSTANCE" 2>/dev/null || true
    for cg in /sys/fs/cgroup/*/"$INSTANCE" /sys/fs/cgroup/"$INSTANCE"; do
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    rm -rf "/run/$INSTANCE" "$work"
}
trap cleanup EXIT

cp -a "$DIR/." "$work/context"
for f in "${files[@]}"; do cp "$f" "$work/context/"; done
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$ARBOR_BIN" server --listen "127.0.0.1:$port" --data-dir "$work/data" --templates-dir "$ARBOR_DATA_DIR" \
    --api-key "$key" --instance "$INSTANCE" --veth-prefix asu --network-pool 10.204.0.0/24 \
    --no-disk-limits --envd-bin "$ENVD_BIN" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    grep -q "serving at" "$work/server.log" && break
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$work/server.log" >&2; die "the build server did not start"; }
    sleep 0.1
done
grep -q "serving at" "$work/server.log" || die "the build server did not start in 60 s"

note "building $NAME from $DIR (a build server on 127.0.0.1:$port)"
# Under a name of its own: the build server refuses names of built-in templates (NAME may be one).
build_name="setup-$NAME"
args=(template build "$work/context" --name "$build_name")
[ -n "$start_cmd" ] && args+=(--start-cmd "$start_cmd")
[ -n "$ready_cmd" ] && args+=(--ready-cmd "$ready_cmd")
[ -n "$memory_mb" ] && args+=(--memory-mb "$memory_mb")
started=$SECONDS
if ! ARBOR_API_URL="http://127.0.0.1:$port" ARBOR_API_KEY="$key" "$ARBOR_BIN" "${args[@]}" >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    die "building $NAME failed"
fi
build_id=$(ARBOR_API_URL="http://127.0.0.1:$port" ARBOR_API_KEY="$key" "$ARBOR_BIN" template info "$build_name" --json \
    | "$PYTHON" -c 'import json, sys; print(max((b for b in json.load(sys.stdin)["builds"] if b["status"] == "ready"), key=lambda b: b["version"])["buildID"])')
labels=(--label recipe="$recipe" --label builder=dockerfile)
[ -n "$start_cmd" ] && labels+=(--label start_cmd="$start_cmd")
[ -n "$ready_cmd" ] && labels+=(--label ready_cmd="$ready_cmd")
"$LAYERS_BIN" copy-ref "templates/build-${build_id,,}" "$REF" "${labels[@]}"
# The build's own reference belonged to the temporary server; the layers stay, named by $REF.
"$LAYERS_BIN" remove-ref "templates/build-${build_id,,}"
note "$REF built in $((SECONDS - started)) s: $("$LAYERS_BIN" get-ref "$REF" | grep -c 'sha256-') layers"
