#!/usr/bin/env bash
# The benchmark: kinko end to end, the bare engine, and llama.cpp (through
# llama-cpp-python built from source with native CPU flags, installed once
# into a virtualenv and reused) on the same GGUF, prompt, tokens and
# threads; then model sizes, long chats, cold start and arrivals. Arguments
# go to bench/bench.py (--runs, --max-tokens, --only, --smoke …).
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
venv="$KINKO_CACHE/bench-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  log "building llama-cpp-python from source with native CPU flags (about 3 minutes, once)"
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet --no-binary llama-cpp-python "llama-cpp-python==0.3.36"
fi
# The model-size shapes are written with the gguf package (numpy comes with
# llama-cpp-python).
"$venv/bin/python" -c 'import gguf' 2>/dev/null || "$venv/bin/pip" install --quiet "gguf==0.19.0"
cd "$KINKO_ROOT"
LLAMA_PYTHON="$venv/bin/python" "$venv/bin/python" bench/bench.py "$@"
