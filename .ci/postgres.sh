#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the suites on that backend: the server
# already running is used; else Debian's cluster is started (installed first when missing).
# User postgres, password postgres (trust setups ignore the password).
set -euo pipefail
ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! command -v pg_isready >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
if ! ready; then
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h | while read -r version name _; do pg_ctlcluster "$version" "$name" start || true; done
  fi
  ready || service postgresql start || true
fi
for _ in $(seq 1 60); do ready && break; sleep 1; done
ready || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
# Fresh Debian clusters want a password over TCP: give postgres one (through the local socket).
if id postgres >/dev/null 2>&1; then
  runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
fi
