# Shared by scripts/setup.sh and scripts/test.sh: paths and output helpers. Source it; don't run it.
# Expects ROOT to be set to the repository root.

ENVD_TARGET=x86_64-unknown-linux-gnu
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR
ENVD_BIN="$CARGO_TARGET_DIR/$ENVD_TARGET/release/arbor-envd"
INTERPRETER_BIN="$CARGO_TARGET_DIR/$ENVD_TARGET/release/arbor-interpreter"
ARBOR_BIN="$CARGO_TARGET_DIR/release/arbor"
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
