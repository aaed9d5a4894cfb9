#!/usr/bin/env bash
# Builds the UI bundle into target/site as `cargo leptos build --release`
# does (the same cargo invocation for wasm32, wasm-bindgen --target=web,
# wasm-opt -Oz, minified JS and CSS, the public/ assets), without
# compiling cargo-leptos first: on a fresh machine that alone takes about
# 18 minutes. cargo-leptos stays the tool of the development loop
# (scripts/dev.sh, `cargo leptos watch`); both write the same files.
# Installs wasm-bindgen-cli (matching Cargo.lock) first if it is missing.
# Lines starting "build-ui: " say what was done and how long it took.
source "$(dirname "$0")/env.sh"
site="$KINKO_ROOT/target/site"
front="$CARGO_TARGET_DIR/front"
bin="$KINKO_ROOT/end2end/node_modules/.bin"

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  t0=$SECONDS
  # Not --locked: its lock file names a webpki-roots release crates.io no
  # longer serves.
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
  echo "build-ui: installed wasm-bindgen-cli $WASM_BINDGEN_VERSION in $(minsec $((SECONDS - t0)))"
fi

t0=$SECONDS
(cd "$KINKO_ROOT" && cargo build --package=frontend --lib --target-dir="$front" \
  --target=wasm32-unknown-unknown --no-default-features --features=hydrate --profile=wasm-release)
wasm="$front/wasm32-unknown-unknown/wasm-release/frontend.wasm"

# Nothing newer than the bundle: nothing to do.
if [ -f "$site/pkg/kinko.wasm" ] && [ -f "$site/pkg/kinko.css" ] && [ "$wasm" -ot "$site/pkg/kinko.wasm" ] \
   && [ "$KINKO_ROOT/style/main.css" -ot "$site/pkg/kinko.css" ] \
   && [ -z "$(find "$KINKO_ROOT/public" -newer "$site/pkg/kinko.wasm" -print -quit)" ]; then
  echo "build-ui: the UI bundle in target/site is up to date"
  exit 0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
wasm-bindgen --target=web --out-name=kinko --out-dir="$out" "$wasm"
mv "$out/kinko_bg.wasm" "$out/kinko.wasm"
"$bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int "$out/kinko.wasm" -o "$out/kinko.wasm"
"$bin/esbuild" "$out/kinko.js" --minify --format=esm --log-level=warning --outfile="$out/kinko.min.js"
mv "$out/kinko.min.js" "$out/kinko.js"
"$bin/lightningcss" --minify --targets "defaults" "$KINKO_ROOT/style/main.css" -o "$out/kinko.css"

mkdir -p "$site/pkg"
cp -r "$KINKO_ROOT/public/." "$site/"
# The WASM last: its time says the bundle is complete.
cp "$out"/kinko.js "$out"/kinko.css "$site/pkg/"
cp "$out"/kinko.wasm "$site/pkg/"
echo "build-ui: built the UI bundle into target/site in $(minsec $((SECONDS - t0)))"
