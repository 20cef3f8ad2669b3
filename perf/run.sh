#!/usr/bin/env bash
# Usage: perf/run.sh            (from the repository root or anywhere)
#
# Tidemark next to the reference Kinto 26.5.0, in one run, on this machine:
#   1. W1..W6 of ../shared/perf (compare.sh): Tidemark (release build, sled, flush_policy
#      always, fresh data dir) against Kinto's memory backend, interleaved;
#   2. W7, history: both servers with kinto.plugins.history, the same 2,000 writes in one
#      bucket, then `GET /buckets/h/history?_limit=100` (W7a, the newest page, kinto-admin's
#      history tab) and `?record_id=r0042` (W7b, one record's history), interleaved.
# Writes perf/results/latest.md (date, machine, commit, both tables) and a dated copy
# (accounts-<ACCOUNTS>-latest.md and its copy with ACCOUNTS).
# Knobs: RUNS (default 3), DURATION (s, default 10), WORKLOADS (W1..W6 subset, e.g. w1,w4a),
#        SKIP_HISTORY=1, SKIP_COMPARE=1 (W7 only), KIT (default ../shared/perf beside the repository),
#        ACCOUNTS=account|basic: both servers with the accounts plugin and
#        `multiauth.policies = account basicauth` (kinto.js's test configuration; Kinto started
#        here with it), the workloads' user (bench:bench) an account, or a Basic Auth user who
#        is no account. perf/auth.sh measures logins themselves (batches, floods).
set -euo pipefail
RUNS=${RUNS:-3}; export DURATION=${DURATION:-10}
PORT=${PORT:-18888}; KINTO_PORT=${KINTO_PORT:-28888}; KINTO_HISTORY_PORT=${KINTO_HISTORY_PORT:-28889}
WORK_NAME=tidemark-perf
. "$(dirname "$0")/lib.sh"

echo "# building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
cat > "$WORK/tidemark.ini" <<INI
[app:main]
kinto.includes = kinto.plugins.history
kinto.bucket_create_principals = system.Authenticated
kinto.userid_hmac_secret = perf
multiauth.policies = basicauth
INI
ACCOUNTS_SETTINGS="kinto.account_create_principals = system.Everyone
multiauth.policies = account basicauth
multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy"
if [ -n "${ACCOUNTS:-}" ]; then
  sed -i -e 's/^kinto.includes = kinto.plugins.history$/kinto.includes = kinto.plugins.history kinto.plugins.accounts/' \
    -e '/^multiauth.policies = basicauth$/d' "$WORK/tidemark.ini"
  echo "$ACCOUNTS_SETTINGS" >>"$WORK/tidemark.ini"
fi
TIDEMARK_LOG_FORMAT=text "$ROOT/target/release/tidemark" serve --ini "$WORK/tidemark.ini" --data "$WORK/data" \
  --bind "127.0.0.1:$PORT" 2>"$WORK/tidemark.log" &
TPID=$!; PIDS+=("$TPID")
T=http://127.0.0.1:$PORT/v1
wait_up "$T"

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
{
  echo "# Tidemark vs Kinto 26.5.0"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $MACHINE"
  echo "- commit: $COMMIT"
  echo "- command: \`RUNS=$RUNS DURATION=$DURATION perf/run.sh\` (wrk, 32 connections, 1 thread; medians of $RUNS runs)"
  echo "- Tidemark: release build, sled, \`flush_policy = always\` (every 2xx on disk); Kinto: memory backend"
  echo
} > "$WORK/report.md"

if [ -z "${SKIP_COMPARE:-}" ]; then
KINTO_ARGS=()
if [ -n "${ACCOUNTS:-}" ]; then
  # Kinto with the same policies, started here (compare.sh's own has Basic Auth alone).
  sed -e "s|@PORT@|$KINTO_PORT|; s|@THREADS@|${KINTO_THREADS:-4}|" "$KIT/kinto/kinto.ini.in" \
    | sed -e 's/^kinto.includes = kinto.plugins.default_bucket$/kinto.includes = kinto.plugins.default_bucket kinto.plugins.accounts/' \
          -e '/^multiauth.policies = basicauth$/d' >"$WORK/kinto-accounts.ini"
  printf '%s\n' "$ACCOUNTS_SETTINGS" | sed -i '/^\[app:main\]$/r /dev/stdin' "$WORK/kinto-accounts.ini"
  setsid "$VENV/bin/kinto" start --ini "$WORK/kinto-accounts.ini" >"$WORK/kinto-accounts.log" 2>&1 </dev/null &
  KPID=$!; PIDS+=("$KPID"); K=http://127.0.0.1:$KINTO_PORT/v1; wait_up "$K"
  if [ "$ACCOUNTS" = account ]; then
    for base in "$T" "$K"; do
      curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '{"data":{"password":"bench"}}' \
        "$base/accounts/bench"
    done
  fi
  KINTO_ARGS=("$K")
  echo "- policies: \`account basicauth\` on both; the workloads' user is $([ "$ACCOUNTS" = account ] && echo an account || echo 'a Basic Auth user, no account')" >>"$WORK/report.md"
fi
echo "# W1..W6 (compare.sh)"
RESULTS_DIR="$WORK/results" RUNS=$RUNS TIDEMARK_PID=$TPID KINTO_PID=${KPID:-} "$KIT/compare.sh" "$T" "${KINTO_ARGS[@]}" \
  | tee "$WORK/compare.txt"
{
  echo "## W1..W6"
  echo
  echo '```'
  # The summary block: one line per workload with the ratios.
  grep -E '^W[0-9]' "$WORK/compare.txt" | grep 'ratio=' || tail -20 "$WORK/compare.txt"
  echo '```'
  echo
} >> "$WORK/report.md"
fi

if [ -z "${SKIP_HISTORY:-}" ]; then
  echo "# W7: history"
  sed -e "s|@PORT@|$KINTO_HISTORY_PORT|; s|@THREADS@|${KINTO_THREADS:-4}|" "$KIT/kinto/kinto.ini.in" \
    | sed 's|^kinto.includes = kinto.plugins.default_bucket|kinto.includes = kinto.plugins.default_bucket\n                 kinto.plugins.history|' \
    > "$WORK/kinto-history.ini"
  setsid "$VENV/bin/kinto" start --ini "$WORK/kinto-history.ini" >"$WORK/kinto-history.log" 2>&1 </dev/null &
  KPID=$!; PIDS+=("$KPID")
  K=http://127.0.0.1:$KINTO_HISTORY_PORT/v1
  wait_up "$K"
  # shellcheck source=/dev/null
  . "$KIT/workloads/lib.sh"
  for base in "$T" "$K"; do
    api -X PUT "$base/buckets/h" >/dev/null
    api -X PUT "$base/buckets/h/collections/c" >/dev/null
    python3 - "$base" "$AUTH_HEADER" <<'PY'
import json, sys, urllib.request
base, auth = sys.argv[1], sys.argv[2].split(": ", 1)[1]
# 2,000 writes: 100 records, each written 20 times, 25 per batch.
for round_ in range(20):
    for start in range(0, 100, 25):
        reqs = [{"method": "PUT", "path": f"/buckets/h/collections/c/records/r{i:04d}",
                 "body": {"data": {"title": f"record {i}", "round": round_}}} for i in range(start, start + 25)]
        body = json.dumps({"requests": reqs}).encode()
        r = urllib.request.Request(base + "/batch", body, {"Authorization": auth, "Content-Type": "application/json"})
        urllib.request.urlopen(r).read()
PY
  done
  : > "$WORK/history.txt"
  for run in $(seq 1 "$RUNS"); do
    order=("$T" "$K"); [ $((run % 2)) -eq 0 ] && order=("$K" "$T")
    for base in "${order[@]}"; do
      label=tidemark; [ "$base" = "$K" ] && label=kinto
      for w in "W7a_history_page:$base/buckets/h/history?_limit=100" "W7b_history_record:$base/buckets/h/history?record_id=r0042"; do
        name=${w%%:*}; url=${w#*:}
        preflight "$name" 200 GET "$url"
        echo "$label $(run_wrk "$name" GET "$url")" | tee -a "$WORK/history.txt"
      done
    done
  done
  python3 - "$WORK/history.txt" >> "$WORK/report.md" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 3 or "=" not in parts[2]:
        continue
    label, name = parts[0], parts[1]
    fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    rows.setdefault((name, label), []).append((float(fields["rps"]), float(fields["p99_ms"]), int(fields["errors"])))
print("## W7: history (kinto.plugins.history on both)\n")
print("| workload | Tidemark req/s | Kinto req/s | ratio | Tidemark p99 ms | Kinto p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for name in sorted({n for n, _ in rows}):
    t, k = rows.get((name, "tidemark"), []), rows.get((name, "kinto"), [])
    if not t or not k:
        continue
    tr, kr = statistics.median(r for r, _, _ in t), statistics.median(r for r, _, _ in k)
    tp, kp = statistics.median(p for _, p, _ in t), statistics.median(p for _, p, _ in k)
    errors = sum(e for _, _, e in t) + sum(e for _, _, e in k)
    print(f"| {name} | {tr:,.0f} | {kr:,.1f} | {tr / kr:.1f}x | {tp:.2f} | {kp:.1f} | {errors} |")
print()
PY
fi
NAME=${ACCOUNTS:+accounts-$ACCOUNTS-}
cp "$WORK/report.md" "$OUT/${NAME}latest.md"
cp "$WORK/report.md" "$OUT/$NAME$STAMP.md"
cat "$OUT/${NAME}latest.md"
