#!/usr/bin/env bash
# Builds the UI bundle into target/site as `cargo leptos build --release`
# does (the same cargo invocation for wasm32, wasm-bindgen --target=web,
# wasm-opt -Oz, minified JS and CSS, the public/ assets), without
# compiling cargo-leptos first: on a fresh machine that alone takes about
# 13 minutes. cargo-leptos stays the tool of the development loop
# (`cargo leptos watch`); both write the same files.
source "$(dirname "$0")/env.sh"
site="$KINKO_ROOT/target/site"
front="$CARGO_TARGET_DIR/front"
bin="$KINKO_ROOT/end2end/node_modules/.bin"

(cd "$KINKO_ROOT" && cargo build --package=frontend --lib --target-dir="$front" \
  --target=wasm32-unknown-unknown --no-default-features --features=hydrate --profile=wasm-release)

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
wasm-bindgen --target=web --out-name=kinko --out-dir="$out" \
  "$front/wasm32-unknown-unknown/wasm-release/frontend.wasm"
mv "$out/kinko_bg.wasm" "$out/kinko.wasm"
"$bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int "$out/kinko.wasm" -o "$out/kinko.wasm"
"$bin/esbuild" "$out/kinko.js" --minify --format=esm --log-level=warning --outfile="$out/kinko.min.js"
mv "$out/kinko.min.js" "$out/kinko.js"
"$bin/lightningcss" --minify --targets "defaults" "$KINKO_ROOT/style/main.css" -o "$out/kinko.css"

mkdir -p "$site/pkg"
cp -r "$KINKO_ROOT/public/." "$site/"
cp "$out"/kinko.wasm "$out"/kinko.js "$out"/kinko.css "$site/pkg/"
