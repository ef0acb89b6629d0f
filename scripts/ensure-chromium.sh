#!/usr/bin/env bash
# Headless Chromium for the browser tests: Debian's package (browsers that tools download themselves cannot
# be fetched on these machines). Idempotent; prints the browser's path last.
set -euo pipefail
BROWSER=/usr/bin/chromium
if [ ! -x "$BROWSER" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
"$BROWSER" --version >&2
echo "$BROWSER"
