#!/usr/bin/env bash
# The benchmark: kinko end to end, the bare engine, and llama.cpp (through
# llama-cpp-python built from source with native CPU flags, installed once
# into a virtualenv and reused) on the same GGUF, prompt, tokens and
# threads; then model sizes, long chats, cold start and arrivals. Arguments
# go to bench/bench.py (--runs, --max-tokens, --only, --smoke …).
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
ensure_llama_cpp
cd "$KINKO_ROOT"
"$LLAMA_PYTHON" bench/bench.py "$@"
