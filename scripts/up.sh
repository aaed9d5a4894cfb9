#!/usr/bin/env bash
# Sets up everything (tools, release build, default model) and serves the UI
# at http://127.0.0.1:3000 with the default model. Extra arguments go to
# `kinko serve`.
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
log "serving http://127.0.0.1:3000 (Ctrl-C to stop)"
exec "$KINKO_BIN" serve --site-root "$KINKO_ROOT/target/site" "$@"
