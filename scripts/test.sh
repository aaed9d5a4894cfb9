#!/usr/bin/env bash
# Runs the whole test suite: unit, router, real-socket and real-model tests
# (cargo), then the browser tests (Playwright + Debian's Chromium) against
# the real binary. Installs what it needs first; never skips a tier.
source "$(dirname "$0")/env.sh"
# Each step says what it does, where it is and about how long it takes on a
# 2-core machine.
steps "tests" 12

# What the later steps need and a first run lacks (the Python clients'
# virtualenv, cargo-fuzz and the fuzz targets, llama.cpp built from source)
# is prepared by scripts/prepare-tests.sh in the background from the start
# until the tests are compiled (never while they run: a build beside them
# would skew their timings), beside the set-up's build on a fresh machine
# and the test build after it.
prep=()
clients_ready || prep+=("the Python clients")
cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION" || prep+=("cargo-fuzz")
llama_cpp_ready || prep+=("llama.cpp")
prepared="$(printf '%s, ' "${prep[@]}")" prepared="${prepared%, }"
what="set-up (scripts/setup.sh --browser)"
if [ "${#prep[@]}" -gt 0 ]; then
  what="$what; beside it, for later steps: $prepared"
  beside "$KINKO_ROOT/scripts/prepare-tests.sh"
fi
step "$what" "seconds when scripts/up.sh has run; about 24 minutes on a fresh machine"
"$KINKO_ROOT/scripts/setup.sh" --browser

if [ ! -x /usr/bin/chromium ]; then
  echo "Chromium is missing: install it with 'apt-get install chromium' (scripts/setup.sh --browser does)" >&2
  exit 1
fi
for m in smollm2-135m all-minilm-latest; do
  if [ ! -f "$KINKO_HOME/models/$m/manifest.json" ]; then
    echo "$KINKO_HOME/models/$m is missing (a default model): run scripts/default-model.sh" >&2
    exit 1
  fi
done

step "formatting (cargo fmt --check)" "seconds" "run 'cargo fmt --all' and commit what it changes"
(cd "$KINKO_ROOT" && cargo fmt --all -- --check)

logs="$(mktemp -d)"
what="compiling the tests (cargo test --release --no-run)"
[ "${#prep[@]}" -eq 0 ] || what="$what, then waiting for what is prepared beside it ($prepared)"
estimate="a minute or two after a change, seconds when nothing changed"
[ "${#prep[@]}" -eq 0 ] || estimate="about 8 minutes the first time, most of it llama.cpp"
step "$what" "$estimate" \
  "read the first 'error' above, or in the log of what was prepared beside it"
cd "$KINKO_ROOT"
cargo test --release -p kinko -p kinko-parse -p app --no-run
[ "${#prep[@]}" -eq 0 ] || beside_wait

step "tiers 1-4: unit, router, real-socket and real-model tests (cargo test --release)" "about a minute"
(cd "$KINKO_ROOT" && cargo test --release -p kinko -p kinko-parse -p app 2>&1) | tee "$logs/cargo.log"

step "fuzzing: the GGUF validator, the Modelfile parser, the history window, request decoding and upstream replies (cargo-fuzz, 25 s per target)" "about 2 minutes" \
  "a crash keeps its input in fuzz/artifacts/: make it a named regression test (README, Tests)"
"$KINKO_ROOT/scripts/fuzz.sh" 25 2>&1 | tee "$logs/fuzz.log"

step "API clients (the official ollama and openai Python packages, LangChain's OllamaEmbeddings) and the CLI, against the real binary" "about 45 seconds"
(cd "$KINKO_ROOT/server/tests/python" && KINKO_BIN="$KINKO_BIN" "$CLIENTS_VENV/bin/python" -m unittest -v test_clients test_embeddings test_cli 2>&1) | tee "$logs/clients.log"

step "structured outputs with the real default model: Ollama's format and OpenAI's response_format through the official clients and LangChain's with_structured_output, 10 sampled runs each, every answer validated against its schema" "about 4 minutes"
(cd "$KINKO_ROOT/server/tests/python" && KINKO_BIN="$KINKO_BIN" "$CLIENTS_VENV/bin/python" -m unittest -v test_structured 2>&1) | tee "$logs/structured.log"

step "benchmark smoke run (kinko, bare engine, llama.cpp; sizes, long chats, cold start, arrivals: one short generation each)" "about 40 seconds"
ensure_llama_cpp
(cd "$KINKO_ROOT" && "$LLAMA_PYTHON" bench/bench.py --smoke --json "$logs/bench-smoke.json" 2>&1) | tee "$logs/bench.log"

step "upstreams: kinko in front of llama.cpp's server (two replicas) and a second kinko, through every API (official clients); cancellation, failover, timeouts, a wrong key" "about 25 seconds"
(cd "$KINKO_ROOT/server/tests/python" && KINKO_BIN="$KINKO_BIN" LLAMA_PYTHON="$LLAMA_PYTHON" "$CLIENTS_VENV/bin/python" -m unittest -v test_upstream 2>&1) | tee "$logs/upstream.log"

step "soak, 1-minute version (mixed traffic on every API, random disconnects, 4x the concurrency limit; RSS growth under 20%; bench/soak.py --minutes 30, under 5%, is the real one)" "about 70 seconds"
(cd "$KINKO_ROOT" && KINKO_BIN="$KINKO_BIN" python3 bench/soak.py --minutes 1 --warmup 30 --max-rss-growth 20 2>&1) | tee "$logs/soak.log"

step "chat page benchmark smoke run (headless Chromium, the fake engine at 1 ms/token)" "about 15 seconds"
(cd "$KINKO_ROOT" && KINKO_BENCH_TOKEN_MS=1 KINKO_BIN="$KINKO_BIN" KINKO_SITE_ROOT="$KINKO_ROOT/target/site" \
  node bench/ui.mjs 2>&1) | tee "$logs/bench-ui.log"

step "tier 5: browser tests (Playwright, /usr/bin/chromium, the real binary)" "about a minute" \
  "the report of a failed test (with its screenshot) is in end2end/test-results/"
(cd "$KINKO_ROOT/end2end" && KINKO_BIN="$KINKO_BIN" KINKO_SITE_ROOT="$KINKO_ROOT/target/site" \
  npx playwright test 2>&1) | tee "$logs/e2e.log"

passed=0; failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$logs/cargo.log")
passed=$((passed + $(grep -c '^fuzz .*, 0 crashes$' "$logs/fuzz.log" || true)))
failed=$((failed + $(grep -c '^fuzz .*: CRASH' "$logs/fuzz.log" || true)))
clients_ran="$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} .*/\1/p' "$logs/clients.log" | tail -1)"
passed=$((passed + ${clients_ran:-0}))
upstream_ran="$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} .*/\1/p' "$logs/upstream.log" | tail -1)"
passed=$((passed + ${upstream_ran:-0}))
grep -q "^bench smoke: 1 passed" "$logs/bench.log" && passed=$((passed + 1))
if grep -q "^soak: passed" "$logs/soak.log"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
if grep -q "^  bundle: " "$logs/bench-ui.log"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
e2e_passed="$(sed -n 's/^ *\([0-9]*\) passed.*/\1/p' "$logs/e2e.log" | tail -1)"
e2e_failed="$(sed -n 's/^ *\([0-9]*\) failed.*/\1/p' "$logs/e2e.log" | tail -1)"
log "cargo and client tests: $passed passed, $failed failed; browser tests: ${e2e_passed:-0} passed, ${e2e_failed:-0} failed"
echo "$((passed + ${e2e_passed:-0})) passed, $((failed + ${e2e_failed:-0})) failed"
# Every failure above already stops the script; this catches a tier that
# ran but reported a failure without a failing exit status.
[ "$((failed + ${e2e_failed:-0}))" -eq 0 ]
