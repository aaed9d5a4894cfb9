#!/usr/bin/env bash
# Installs what kinko needs to build and run, skipping what is already there:
# the wasm32 target, wasm-bindgen-cli (matching Cargo.lock), npm packages
# (wasm-opt, esbuild, lightningcss, Playwright), then builds the release
# binary and the UI bundle (scripts/build-ui.sh: what `cargo leptos build
# --release` does, without compiling cargo-leptos, which the development
# loop's `cargo leptos watch` needs and the set-up does not), and installs
# the default models. With --browser it also installs Debian's Chromium,
# curl and iproute2 for the tests.
source "$(dirname "$0")/env.sh"
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (matches Cargo.lock)"
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

if [ ! -x "$KINKO_ROOT/end2end/node_modules/.bin/wasm-opt" ] || [ ! -d "$KINKO_ROOT/end2end/node_modules/playwright-core" ] \
   || [ "$KINKO_ROOT/end2end/package-lock.json" -nt "$KINKO_ROOT/end2end/node_modules/.package-lock.json" ]; then
  log "installing npm packages (binaryen for wasm-opt, esbuild, lightningcss, playwright-core)"
  (cd "$KINKO_ROOT/end2end" && npm ci --no-audit --no-fund)
fi

if [ "$want_browser" = 1 ]; then
  # The test tools from Debian: the browser, a Japanese font for it, and
  # curl and iproute2 for the LAN test (a network namespace).
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -d /usr/share/fonts/opentype/ipafont-gothic ] || missing+=(fonts-ipafont-gothic)
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing from Debian: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

log "building kinko (release; about 20 minutes the first time on 2 cores, mostly mistral.rs)"
(cd "$KINKO_ROOT" && cargo build --release --package=kinko --bin=kinko --no-default-features)
log "building the UI bundle (about 3 minutes the first time)"
"$KINKO_ROOT/scripts/build-ui.sh"

"$KINKO_ROOT/scripts/default-model.sh"
