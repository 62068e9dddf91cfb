#!/usr/bin/env bash
# Runs the whole test suite; exits non-zero if any part fails.
#
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh python js       only the named parts (rust, python, js)
#
# It first runs `scripts/setup.sh --no-start`. That step is idempotent and quick when nothing changed,
# and it guarantees that the SDK suites drive a release binary built from the current sources rather
# than a stale one. Every part runs even after an earlier one failed, so one run shows all failures.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(rust python js)
for p in "${parts[@]}"; do
    case "$p" in rust|python|js) ;; *) die "unknown part: $p (rust, python, js)" ;; esac
done
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

failed=()
run() {
    local name=$1
    shift
    step "$name"
    if "$@"; then
        note "$name: ok"
    else
        note "$name: FAILED"
        failed+=("$name")
    fi
}

if wants python || wants js; then
    bash "$ROOT/scripts/setup.sh" --no-start || die "setup failed"
fi

if wants rust; then
    run "cargo fmt --check" cargo fmt --all --check
    run "cargo clippy" cargo clippy --quiet --workspace --all-targets -- -D warnings
    run "cargo test" cargo test --quiet --workspace
fi

# The SDK suites find the daemon and the server through ARBOR_ENVD_BIN and ARBOR_BIN.
export ARBOR_ENVD_BIN="$ENVD_BIN" ARBOR_BIN="$ARBOR_BIN"
if wants python; then
    run "pytest tests/python" "$VENV/bin/python" -m pytest -ra tests/python
fi
if wants js; then
    run "node --test tests/js" bash -c 'cd tests/js && node --test --test-concurrency=1 --test-timeout=120000'
fi

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all passed"
