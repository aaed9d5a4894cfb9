#!/usr/bin/env bash
# The benchmark: kinko end to end, the bare engine, and llama.cpp (through
# llama-cpp-python built from source with native CPU flags, installed once
# into a virtualenv and reused) on the same GGUF, prompt, tokens and
# threads. Arguments go to bench/bench.py (--runs, --max-tokens, --smoke …).
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
venv="$KINKO_CACHE/bench-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  log "building llama-cpp-python from source with native CPU flags (about 3 minutes, once)"
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet --no-binary llama-cpp-python "llama-cpp-python==0.3.36"
fi
cd "$KINKO_ROOT"
LLAMA_PYTHON="$venv/bin/python" python3 bench/bench.py "$@"
