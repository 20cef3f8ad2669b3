#!/usr/bin/env bash
# Usage: tests/clients/admin/run-admin.sh URL SCREENSHOT_DIR
#   e.g. tests/clients/admin/run-admin.sh http://127.0.0.1:18891/v1 /tmp/admin-shots
#
# Drives the Kinto Admin SPA that the server at URL serves at URL/admin/ (Kinto Admin 6.2.0:
# `kinto.plugins.admin` in kinto.includes and `kinto.admin_assets_path` pointing at the build that
# fetch.sh extracts) in headless Chromium: see admin.mjs for the steps. The server must allow
# anyone to create an account (kinto.account_create_principals = system.Everyone), authenticated
# users to create buckets, and have the history plugin and the permissions endpoint on, as
# ../../../../shared/clients/kinto.ini does.
#
# Installs what it needs and leaves the repository clean:
#   - Debian's Chromium (/usr/bin/chromium) with apt-get, when missing;
#   - playwright-core, pinned by package-lock.json, with `npm ci` into
#     ${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-admin (override with ADMIN_TEST_HOME); it is
#     reinstalled only when package.json or package-lock.json change.
# Screenshots (step-NN-NAME.png) and api-log.txt (every API exchange) go to SCREENSHOT_DIR.
set -euo pipefail
URL=${1:?usage: $0 URL SCREENSHOT_DIR}
OUT=${2:?usage: $0 URL SCREENSHOT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null 2>&1 || { echo "node (>= 20) and npm are required" >&2; exit 1; }

CACHE=${ADMIN_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-admin}
mkdir -p "$CACHE"
stamp=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ ! -d "$CACHE/node_modules/playwright-core" ] || [ "$(cat "$CACHE/.installed" 2>/dev/null)" != "$stamp" ]; then
  cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/"
  (cd "$CACHE" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$stamp" >"$CACHE/.installed"
fi

mkdir -p "$OUT"
NODE_PATH="$CACHE/node_modules" exec node "$HERE/admin.mjs" "$URL" "$OUT"
