#!/usr/bin/env bash
# The chat page's browser benchmark: headless Chromium against the release
# binary with the fake engine (see bench/ui.mjs). Builds first if needed.
source "$(dirname "$0")/env.sh"
[ -x "$KINKO_BIN" ] && [ -f "$KINKO_ROOT/target/site/pkg/kinko.wasm" ] || "$KINKO_ROOT/scripts/setup.sh" --browser
KINKO_BIN="$KINKO_BIN" KINKO_SITE_ROOT="$KINKO_ROOT/target/site" node "$KINKO_ROOT/bench/ui.mjs"
