#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers that read
# what strangers send: the GGUF validator, the Modelfile parser, the history
# window and the APIs' request decoding (fuzz/fuzz_targets).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default: 25 s per target, all
#   scripts/fuzz.sh --build                 # only install cargo-fuzz and build
#
# Each target starts from its committed corpus (fuzz/corpus/TARGET, read
# only; what a run finds goes to a temporary directory). A crash stops the
# run: its input is kept under fuzz/artifacts/TARGET/, and it must become a
# named regression test (see the README). Runs on stable Rust
# (`--sanitizer none`); the targets never build the server or mistral.rs.
source "$(dirname "$0")/env.sh"
build_only=0
if [ "${1:-}" = --build ]; then build_only=1; shift; fi
seconds="${1:-25}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$KINKO_ROOT/fuzz/Cargo.toml" | grep -v '^kinko-fuzz$')
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute, once)"
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
fuzz_target_dir="$KINKO_CACHE/fuzz-target"
cd "$KINKO_ROOT/fuzz"
log "building the fuzz targets (${targets[*]})"
cargo fuzz build --sanitizer none --target-dir "$fuzz_target_dir"
[ "$build_only" = 0 ] || exit 0
status=0
for t in "${targets[@]}"; do
  found="$(mktemp -d)"
  out="$(mktemp)"
  log "fuzzing $t for ${seconds} s"
  if cargo fuzz run --sanitizer none --target-dir "$fuzz_target_dir" "$t" "$found" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$out" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)"
    echo "fuzz $t: ${runs:-?} executions in ${seconds} s, 0 crashes"
  else
    tail -40 "$out"
    echo "fuzz $t: CRASH, input kept in fuzz/artifacts/$t/ (make it a named regression test)"
    status=1
  fi
  rm -rf "$found" "$out"
done
exit "$status"
