#!/usr/bin/env bash
# Usage: run-js.sh BASE_URL        e.g. run-js.sh http://127.0.0.1:8888/v1
#
# Runs scenario.mjs (the real npm packages kinto-http and kinto, i.e. kinto-http.js and kinto.js,
# used as an application would) against a running server at BASE_URL. The server must run with
# the settings of shared/clients/kinto.ini (accounts, default bucket, history, flush, permissions
# endpoint, paginate_by = 5). Nothing is flushed: each run signs up its own accounts and buckets.
#
# Dependencies are installed with `npm ci` from package.json + package-lock.json beside this
# script into $TIDEMARK_JS_HOME (default ${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-js), once per
# lock file; the repository stays clean. Needs only node (>= 20.19) and npm, and the npm registry.
#
# Last line: `N passed, M failed`; exit 0 only when nothing failed (1 on failures, 2 on setup
# problems). SCENARIO_VERBOSE=1 prints every HTTP exchange; SCENARIO_TIMEOUT (s, default 600)
# bounds the whole run.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE_URL=${1:?usage: run-js.sh BASE_URL   (e.g. http://127.0.0.1:8888/v1)}
JS_HOME=${TIDEMARK_JS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-js}

die() { echo "run-js.sh: $*" >&2; echo "0 passed, 1 failed"; exit 2; }

command -v node >/dev/null || die "node not found (Node.js >= 20.19 is needed)"
command -v npm >/dev/null || die "npm not found"
# kinto 17.1.1 require()s the ESM-only uuid 13: needs require(esm), on by default from 20.19 / 22.12.
node -e '
  const [maj, min] = process.versions.node.split(".").map(Number);
  const ok = (maj === 20 && min >= 19) || (maj === 22 && min >= 12) || maj >= 23;
  process.exit(ok ? 0 : 1);
' || die "Node.js $(node --version) is too old: >= 20.19 (20.x) or >= 22.12 is needed"

LOCK_SUM=$(node -e '
  const h = require("crypto").createHash("sha256");
  for (const f of process.argv.slice(1)) h.update(require("fs").readFileSync(f));
  console.log(h.digest("hex"));
' "$HERE/package.json" "$HERE/package-lock.json") || die "cannot read package.json / package-lock.json"

ENV_DIR="$JS_HOME/env"
if [ "$(cat "$ENV_DIR/.lock-sha256" 2>/dev/null)" != "$LOCK_SUM" ] || [ ! -d "$ENV_DIR/node_modules" ]; then
  mkdir -p "$JS_HOME" || die "cannot create $JS_HOME"
  TMP=$(mktemp -d "$JS_HOME/install.XXXXXX") || die "cannot create a directory in $JS_HOME"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$TMP/"
  echo "run-js.sh: installing the JS clients into $ENV_DIR (npm ci)" >&2
  # --ignore-scripts: none of the pinned packages needs an install script (kinto depends on
  # playwright, which must not try to download browsers).
  if ! (cd "$TMP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2; then
    rm -rf "$TMP"
    die "npm ci failed"
  fi
  echo "$LOCK_SUM" >"$TMP/.lock-sha256"
  rm -rf "$ENV_DIR"
  mv "$TMP" "$ENV_DIR" || die "cannot move the installation to $ENV_DIR"
fi

if [ -d "$HERE/node_modules" ]; then
  echo "run-js.sh: note: $HERE/node_modules exists and takes precedence over $ENV_DIR/node_modules" >&2
fi

NODE_PATH="$ENV_DIR/node_modules" node "$HERE/scenario.mjs" "${BASE_URL%/}"
