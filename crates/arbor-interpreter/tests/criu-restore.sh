#!/usr/bin/env bash
# Reproduces what a paused/cloned sandbox goes through: dump a running
# arbor-interpreter and its kernels and restore them as arbor-runtime does
# (`--tcp-established --file-locks` on dump and restore: loopback TCP
# connections, such as the ZeroMQ links to Deno's kernel, come back intact),
# then check that state set before the dump is still there and every run's
# output is complete, in python and javascript, with no kernel restart.
#
# `--file-locks` is required: Deno keeps its sqlite caches
# (~/.cache/deno/*_analysis_cache_v2, WAL mode) open with a POSIX read lock on
# the -shm file, and criu refuses to dump held locks without it.
#
# Needs root, criu (4.1.1 tested), and kernels on PATH:
#   KERNEL_PATH=/work/wt/interp-venv/bin  (python3 with ipykernel, deno)
#   SDK_PYTHON=/work/main/.venv/bin/python (httpx + novita_sandbox, for e2e.py)
#   BIN=<target>/release/arbor-interpreter
# Usage: sudo -E crates/arbor-interpreter/tests/criu-restore.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?set BIN to the arbor-interpreter binary}
KERNEL_PATH=${KERNEL_PATH:?set KERNEL_PATH to a directory with python3 (ipykernel) and deno}
SDK_PYTHON=${SDK_PYTHON:-python3}
PORT=${PORT:-49998}
work=$(mktemp -d /tmp/arbor-criu.XXXXXX)
mkdir -p "$work/img" "$work/cwd"
export INTERP=http://127.0.0.1:$PORT
CRIU_FLAGS="--tcp-established --file-locks"

# The dumped tree was SIGKILLed by criu; until its zombies are reaped (by
# whoever adopted them) their pids are taken and `criu restore` fails with
# "Can't fork for <pid>: File exists". Retry for a few seconds.
restore() {
    for _ in $(seq 20); do
        criu restore -D "$1" $CRIU_FLAGS -d -o restore.log -v2 && return 0
        sleep 0.5
    done
    return 1
}

cleanup() {
    if [[ -n "${pid:-}" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# setsid: the tree gets its own session, which CRIU can restore as is; stdio
# goes to a file (no terminal to carry over).
PATH=$KERNEL_PATH:$PATH setsid "$BIN" --listen "127.0.0.1:$PORT" --cwd "$work/cwd" --run-dir "$work/run" \
    --envd-url none </dev/null >"$work/interp.log" 2>&1 &
bg=$!
for _ in $(seq 100); do
    curl -fs "$INTERP/health" >/dev/null && break
    sleep 0.1
done
pid=$(pgrep -f -- "--listen 127.0.0.1:$PORT" | head -1)
echo "interpreter pid $pid"

"$SDK_PYTHON" "$here/e2e.py" prepare_restore
t0=$(date +%s.%N)
criu dump -t "$pid" -D "$work/img" $CRIU_FLAGS -o dump.log -v2
t1=$(date +%s.%N)
# The dumped tree was killed; reap it so its pid is free for the restore.
wait "$bg" 2>/dev/null || true
restore "$work/img"
t2=$(date +%s.%N)
echo "dump $(echo "$t1 - $t0" | bc) s, restore $(echo "$t2 - $t1" | bc) s"

start=$(date +%s.%N)
"$SDK_PYTHON" "$here/e2e.py" check_restored
echo "first requests after restore: $(echo "$(date +%s.%N) - $start" | bc) s"
"$SDK_PYTHON" "$here/e2e.py" check_restored_runs check_python check_javascript check_interrupt
# A second dump/restore cycle (a clone of a resumed sandbox).
"$SDK_PYTHON" "$here/e2e.py" prepare_restore
rm -rf "$work/img" && mkdir "$work/img"
criu dump -t "$pid" -D "$work/img" $CRIU_FLAGS -o dump.log
restore "$work/img"
"$SDK_PYTHON" "$here/e2e.py" check_restored check_restored_runs
echo "PASS (logs in $work)"
