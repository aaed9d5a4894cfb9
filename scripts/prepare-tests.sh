#!/usr/bin/env bash
# What scripts/test.sh's later steps need and a first run lacks, one after
# the other: the Python clients' virtualenv, cargo-fuzz and the fuzz
# targets, llama.cpp (llama-cpp-python built from source with native CPU
# flags). The test command runs this in the background while the tests
# compile. Lines starting "prepare-tests: " say what was done and how long
# it took; what is there already is skipped.
source "$(dirname "$0")/env.sh"
if ! clients_ready; then
  t0=$SECONDS
  ensure_clients
  echo "prepare-tests: the Python clients installed in $(minsec $((SECONDS - t0)))"
fi
t0=$SECONDS
"$KINKO_ROOT/scripts/fuzz.sh" --build
echo "prepare-tests: cargo-fuzz and the fuzz targets ready in $(minsec $((SECONDS - t0)))"
if ! llama_cpp_ready; then
  t0=$SECONDS
  ensure_llama_cpp
  echo "prepare-tests: llama.cpp built in $(minsec $((SECONDS - t0)))"
fi
