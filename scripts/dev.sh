#!/usr/bin/env bash
# The development loop: `cargo leptos watch --release -- serve`, which
# rebuilds the server and the UI bundle when a file changes and restarts
# the server (reload the page to see the change: the page carries no
# live-reload script). It reuses the release build scripts/up.sh made (the same target
# directory and flags), so a change to kinko takes a minute or two, not a
# cold build. cargo-leptos is installed the first time (about 18 minutes on
# 2 cores, once); the set-up itself never needs it. Extra arguments go to
# `kinko serve` (e.g. --engine fake).
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  log "installing cargo-leptos $CARGO_LEPTOS_VERSION for the development loop (about 18 minutes on 2 cores, once)"
  env -u CARGO_TARGET_DIR cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi
cd "$KINKO_ROOT"
log "cargo leptos watch --release: http://127.0.0.1:3000, rebuilt and restarted on every change (Ctrl-C to stop)"
exec cargo leptos watch --release -- serve "$@"
