#!/usr/bin/env bash
# Usage: tests/clients/admin/run-with-server.sh SERVER_CMD SCREENSHOT_DIR [BASE_INI]
#   tests/clients/admin/run-with-server.sh ./target/debug/tidemark /tmp/admin-shots
#   tests/clients/admin/run-with-server.sh "$VENV/bin/kinto" /tmp/admin-shots-kinto   (the reference)
#
# The whole admin check in one command: extracts Kinto Admin 6.2.0 (fetch.sh) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-admin/build, writes an ini that is BASE_INI (default
# ../shared/clients/kinto.ini beside the repository) plus `kinto.plugins.admin` and
# `kinto.admin_assets_path`, starts the server on a free local port (a Tidemark binary with
# `serve --ini --data --bind`, or Kinto's `kinto` command with `start --ini --port`), waits for
# it, runs run-admin.sh against it and stops it. Exits with run-admin.sh's status.
set -euo pipefail
SERVER=${1:?usage: $0 SERVER_CMD SCREENSHOT_DIR [BASE_INI]}
OUT=${2:?usage: $0 SERVER_CMD SCREENSHOT_DIR [BASE_INI]}
HERE=$(cd "$(dirname "$0")" && pwd)
BASE_INI=${3:-$HERE/../../../../shared/clients/kinto.ini}
[ -f "$BASE_INI" ] || { echo "no base ini at $BASE_INI" >&2; exit 1; }

CACHE=${ADMIN_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-admin}
"$HERE/fetch.sh" "$CACHE/build"

work=$(mktemp -d)
mkdir -p "$OUT"
# kinto.includes is a multi-line value: add the admin plugin as one more continuation line.
python3 - "$BASE_INI" "$work/kinto.ini" "$CACHE/build" <<'PY'
import sys
src, dst, assets = sys.argv[1:]
out, in_includes, done = [], False, False
for line in open(src).read().splitlines():
    if in_includes and not line[:1].isspace():
        out.append("                 kinto.plugins.admin")
        in_includes, done = False, True
    out.append(line)
    if line.startswith("kinto.includes"):
        in_includes = True
if in_includes:
    out.append("                 kinto.plugins.admin")
    done = True
if not done:
    sys.exit("no kinto.includes in " + src)
out.insert(out.index("[app:main]") + 1, "kinto.admin_assets_path = " + assets)
open(dst, "w").write("\n".join(out) + "\n")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
case "$(basename "$SERVER")" in
  kinto) "$SERVER" start --ini "$work/kinto.ini" --port "$port" >"$OUT/server.log" 2>&1 & ;;
  *) "$SERVER" serve --ini "$work/kinto.ini" --data "$work/data" --bind "127.0.0.1:$port" >"$OUT/server.log" 2>&1 & ;;
esac
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/v1/__lbheartbeat__" && break
  kill -0 $server 2>/dev/null || { echo "server exited:" >&2; cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$port/v1/admin/" || { echo "GET /v1/admin/ fails" >&2; exit 1; }

"$HERE/run-admin.sh" "http://127.0.0.1:$port/v1" "$OUT"
