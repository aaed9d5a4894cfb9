#!/usr/bin/env bash
# The chat page's browser benchmark: headless Chromium against the release
# binary with the fake engine (see bench/ui.mjs). Builds first if needed.
# KINKO_BENCH_TOKEN_MS (default 10) sets the token rate, KINKO_BENCH_CPU_SLOWDOWN
# (default 1) Chromium's CPU throttling.
source "$(dirname "$0")/env.sh"
[ -x "$KINKO_BIN" ] && [ -f "$KINKO_ROOT/target/site/pkg/kinko.wasm" ] || "$KINKO_ROOT/scripts/setup.sh" --browser
KINKO_BIN="$KINKO_BIN" KINKO_SITE_ROOT="$KINKO_ROOT/target/site" node "$KINKO_ROOT/bench/ui.mjs"
