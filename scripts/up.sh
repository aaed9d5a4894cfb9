#!/usr/bin/env bash
# Sets up everything (tools, release build, default models: scripts/setup.sh,
# which says each step as it goes) and serves the UI at
# http://127.0.0.1:3000 with the default model. Extra arguments go to
# `kinko serve`.
source "$(dirname "$0")/env.sh"
"$KINKO_ROOT/scripts/setup.sh"
log "ready after $(minsec "$SECONDS"): serving http://127.0.0.1:3000 (Ctrl-C to stop)"
exec "$KINKO_BIN" serve --site-root "$KINKO_ROOT/target/site" "$@"
