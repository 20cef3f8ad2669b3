#!/usr/bin/env bash
# Usage: perf/pg.sh            (from the repository root or anywhere)
#
# Tidemark on PostgreSQL next to Kinto 26.5.0 on PostgreSQL, in one run, on this machine:
#   1. W1..W6 of ../shared/perf (compare.sh): one Tidemark server (release build, storage and
#      cache as a scaled-out deployment: PostgreSQL storage; the cache in memory, as it does not
#      matter to these workloads) against Kinto with its PostgreSQL storage, permission and
#      cache backends, each on a fresh database of the PostgreSQL at PG (default 127.0.0.1:5432);
#   2. two Tidemark servers on one database: W1 (create) and W2 (read one) with half the
#      connections on each server at once, the sum of both, next to one server alone.
# Writes perf/results/pg-latest.md (date, machine, commit, tables) and a dated copy.
# Knobs: RUNS (default 2), DURATION (s, default 6), WORKLOADS (W1..W6 subset), SKIP_NODES=1,
#        PG (host:port), PGUSER (default postgres), KIT (default ../shared/perf).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/perf}
RUNS=${RUNS:-2}; export DURATION=${DURATION:-6}
PG=${PG:-127.0.0.1:5432}; PGUSER=${PGUSER:-postgres}
PORT=${PORT:-18888}; PORT_B=${PORT_B:-18887}; KINTO_PORT=${KINTO_PORT:-28887}
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-perf/venv}
[ -d "$KIT" ] || { echo "no perf kit at $KIT (set KIT)" >&2; exit 1; }
if ! command -v wrk >/dev/null || [ ! -x "$VENV/bin/kinto" ]; then "$KIT/setup.sh"; fi
# Kinto's PostgreSQL backends need these (its `postgresql` extra).
"$VENV/bin/python" -c 'import psycopg2, sqlalchemy, zope.sqlalchemy' 2>/dev/null \
  || "$VENV/bin/pip" install -q psycopg2-binary SQLAlchemy zope.sqlalchemy

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$ROOT/perf/results; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tidemark-pg-perf.XXXXXX)
KDB=tm_perf_kinto_${STAMP//-/_}; TDB=tm_perf_tidemark_${STAMP//-/_}
PIDS=()
sql() { psql "postgresql://$PGUSER@$PG/postgres" -qAtc "$1"; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  sql "DROP DATABASE IF EXISTS $KDB WITH (FORCE)" || true
  sql "DROP DATABASE IF EXISTS $TDB WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_up() { for _ in $(seq 1 150); do curl -sf -o /dev/null "$1/" && return 0; sleep 0.2; done; echo "$1 did not start" >&2; exit 1; }

echo "# building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
sql "CREATE DATABASE $KDB"
URL_K="postgresql://$PGUSER@$PG/$KDB"
sed -e "s|@PORT@|$KINTO_PORT|; s|@THREADS@|${KINTO_THREADS:-4}|" \
    -e "s|^kinto.storage_backend = .*|kinto.storage_backend = kinto.core.storage.postgresql\nkinto.storage_url = $URL_K|" \
    -e "s|^kinto.permission_backend = .*|kinto.permission_backend = kinto.core.permission.postgresql\nkinto.permission_url = $URL_K|" \
    -e "s|^kinto.cache_backend = .*|kinto.cache_backend = kinto.core.cache.postgresql\nkinto.cache_url = $URL_K|" \
    "$KIT/kinto/kinto.ini.in" > "$WORK/kinto.ini"
"$VENV/bin/kinto" migrate --ini "$WORK/kinto.ini" >"$WORK/kinto-migrate.log" 2>&1
setsid "$VENV/bin/kinto" start --ini "$WORK/kinto.ini" >"$WORK/kinto.log" 2>&1 </dev/null &
KPID=$!; PIDS+=("$KPID")

cat > "$WORK/tidemark.ini" <<INI
[app:main]
kinto.bucket_create_principals = system.Authenticated
kinto.userid_hmac_secret = perf
multiauth.policies = basicauth
kinto.storage_backend = kinto.core.storage.postgresql
kinto.storage_url = postgresql://$PGUSER@$PG/$TDB
INI
serve() { TIDEMARK_LOG_FORMAT=text "$ROOT/target/release/tidemark" serve --ini "$WORK/tidemark.ini" --data "$WORK/data-$1" --bind "127.0.0.1:$1" 2>"$WORK/tidemark-$1.log" & }
serve "$PORT"; TPID=$!; PIDS+=("$TPID")
T=http://127.0.0.1:$PORT/v1; K=http://127.0.0.1:$KINTO_PORT/v1
wait_up "$T"; wait_up "$K"

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
{
  echo "# Tidemark on PostgreSQL vs Kinto 26.5.0 on PostgreSQL"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $MACHINE; PostgreSQL $(sql 'SHOW server_version') at $PG"
  echo "- commit: $COMMIT"
  echo "- command: \`RUNS=$RUNS DURATION=$DURATION perf/pg.sh\` (wrk, 32 connections, 1 thread; medians of $RUNS runs)"
  echo "- Kinto: storage, permission and cache on PostgreSQL (\`kinto migrate\` first); Tidemark: \`storage_backend = postgresql\`"
  echo
} > "$WORK/report.md"

echo "# W1..W6 (compare.sh)"
RESULTS_DIR="$WORK/results" RUNS=$RUNS TIDEMARK_PID=$TPID KINTO_PID=$KPID "$KIT/compare.sh" "$T" "$K" | tee "$WORK/compare.txt"
{
  echo "## W1..W6, one Tidemark server"
  echo
  echo '```'
  grep -E '^W[0-9]' "$WORK/compare.txt" | grep 'ratio=' || tail -20 "$WORK/compare.txt"
  echo '```'
  echo
} >> "$WORK/report.md"

if [ -z "${SKIP_NODES:-}" ]; then
  echo "# two servers on one database"
  serve "$PORT_B"; PIDS+=("$!")
  B=http://127.0.0.1:$PORT_B/v1
  wait_up "$B"
  WL=$KIT/workloads
  rps() { awk '{for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { sub("rps=", "", $i); print $i }}'; }
  {
    echo "## Two Tidemark servers on one database (16 connections on each at once) vs one (32)"
    echo
    echo "| workload | one server req/s | two servers req/s (a + b) | Kinto req/s (above) |"
    echo "|---|---|---|---|"
  } >> "$WORK/report.md"
  for w in w1_create w2_read_one; do
    one=$(CONC=32 "$WL/$w.sh" "$T" 2>/dev/null | rps)
    a_out=$(mktemp); b_out=$(mktemp)
    CONC=16 "$WL/$w.sh" "$T" >"$a_out" 2>/dev/null & pa=$!
    CONC=16 "$WL/$w.sh" "$B" >"$b_out" 2>/dev/null & pb=$!
    wait "$pa" "$pb"
    ra=$(rps <"$a_out"); rb=$(rps <"$b_out")
    name=$(awk '{print $1}' "$a_out")
    kinto=$(grep -E "^${name} " "$WORK/compare.txt" | grep -o 'kinto_rps=[0-9.]*' | cut -d= -f2 || true)
    total=$(awk -v a="$ra" -v b="$rb" 'BEGIN{printf "%.0f", a + b}')
    echo "| $name | $(printf %.0f "$one") | $total ($(printf %.0f "$ra") + $(printf %.0f "$rb")) | ${kinto:-?} |" >> "$WORK/report.md"
    rm -f "$a_out" "$b_out"
  done
  echo >> "$WORK/report.md"
fi
cp "$WORK/report.md" "$OUT/pg-latest.md"
cp "$WORK/report.md" "$OUT/pg-$STAMP.md"
cat "$OUT/pg-latest.md"
