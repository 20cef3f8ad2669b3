#!/usr/bin/env bash
# Makes sure Redis answers on 127.0.0.1:6379 for the scaled-out suites (the cache backend): the
# server already running is used; else one is started (installed from Debian's packages first
# when missing), keeping nothing on disk.
set -euo pipefail
ready() { command -v redis-cli >/dev/null 2>&1 && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  ready || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; }
fi
if ! ready; then
  service redis-server start >/dev/null 2>&1 || true
  ready || redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes
fi
for _ in $(seq 1 30); do ready && break; sleep 1; done
ready || { echo "Redis does not answer on 127.0.0.1:6379" >&2; exit 1; }
