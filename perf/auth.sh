#!/usr/bin/env bash
# Usage: perf/auth.sh            (from the repository root or anywhere)
#
# What authentication costs with the accounts policy on, Tidemark beside the reference Kinto
# 26.5.0 in one run (both with `multiauth.policies = account basicauth`, kinto.js's own test
# configuration; Tidemark also with `basicauth` alone as the baseline):
#   1. W2 (read one record) by a basicauth user who is no account, and by an account user;
#   2. a batch of 25 GETs carrying the user's Authorization in `defaults.headers`
#      (kinto-http.js's way) against one GET, by each user;
#   3. on Tidemark, 64 connections sending an account's wrong password while 8 connections of
#      the same account, with the right one, run W2 (its login verified just before, as in a
#      live session): the valid account's rate against its rate alone, and the heartbeat's
#      latency meanwhile.
# Writes perf/results/auth-<date>.md and auth-latest.md.
# Knobs: DURATION (s, default 6), KIT (default ../shared/perf beside the repository).
set -euo pipefail
export DURATION=${DURATION:-6}
WORK_NAME=tidemark-auth
. "$(dirname "$0")/lib.sh"
. "$KIT/workloads/lib.sh"

echo "# building the release binary"
(cd "$ROOT" && cargo build --release --quiet)

ACCOUNTS_INI="kinto.includes = kinto.plugins.accounts
kinto.account_create_principals = system.Everyone
kinto.bucket_create_principals = system.Authenticated
multiauth.policies = account basicauth
multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy"
start_tidemark() {  # start_tidemark NAME PORT POLICIES_BLOCK
  printf '[app:main]\nkinto.userid_hmac_secret = perf\n%s\n' "$3" >"$WORK/$1.ini"
  "$ROOT/target/release/tidemark" serve --ini "$WORK/$1.ini" --data "$WORK/$1" --bind "127.0.0.1:$2" \
    >"$WORK/$1.log" 2>&1 &
  PIDS+=($!); wait_up "http://127.0.0.1:$2/v1"
}
start_tidemark basic 18901 "kinto.bucket_create_principals = system.Authenticated
multiauth.policies = basicauth"
start_tidemark accounts 18902 "$ACCOUNTS_INI"
sed -e "s|@PORT@|28901|; s|@THREADS@|4|" "$KIT/kinto/kinto.ini.in" \
  | python3 -c 'import sys; t=sys.stdin.read(); t=t.replace("multiauth.policies = basicauth", sys.argv[1]); t=t.replace("kinto.includes = kinto.plugins.default_bucket", "kinto.includes = kinto.plugins.default_bucket\n                 kinto.plugins.accounts"); print(t)' \
    "kinto.account_create_principals = system.Everyone
multiauth.policies = account basicauth
multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy" >"$WORK/kinto.ini"
setsid "$VENV/bin/kinto" start --ini "$WORK/kinto.ini" >"$WORK/kinto.log" 2>&1 </dev/null &
PIDS+=($!); wait_up "http://127.0.0.1:28901/v1"

T_BASIC=http://127.0.0.1:18901/v1; T_ACC=http://127.0.0.1:18902/v1; K_ACC=http://127.0.0.1:28901/v1
BASIC_USER=bench:bench; ACCOUNT_USER=acct:acct-pw
seed() {  # seed BASE: the account, and bucket b / collection c / record r05000 readable by both users
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' -d '{"data":{"password":"acct-pw"}}' \
    "$1/accounts/acct" || true
  local owner; owner=$(printf %s "$BASIC_USER" | base64 -w0)
  curl -sf -o /dev/null -X PUT -H "Authorization: Basic $owner" -H 'Content-Type: application/json' \
    -d '{"permissions":{"read":["system.Authenticated"]}}' "$1/buckets/b"
  curl -sf -o /dev/null -X PUT -H "Authorization: Basic $owner" "$1/buckets/b/collections/c"
  curl -sf -o /dev/null -X PUT -H "Authorization: Basic $owner" -H 'Content-Type: application/json' \
    -d '{"data":{"title":"one record"}}' "$1/buckets/b/collections/c/records/r05000"
}
seed "$T_BASIC"; seed "$T_ACC"; seed "$K_ACC"

w2() {  # w2 BASE USER [CONC]: requests/s of W2 (a run with errors says how many)
  AUTH=$2 CONC=${3:-32} bash "$KIT/workloads/w2_read_one.sh" "$1" 2>/dev/null \
    | sed -n 's/^W2_read_one rps=\([0-9.]*\) .*errors=\([0-9]*\).*/\1 \2/p' | awk '{ print ($2 > 0) ? $1 " (" $2 " errors)" : $1 }'
}
batch_vs_one() {  # batch_vs_one BASE USER: "one GET ms, batch of 25 ms" (means of 20, after a warm-up)
  python3 - "$1" "$2" <<'PY'
import base64, json, sys, time, urllib.request
base, user = sys.argv[1], sys.argv[2]
auth = "Basic " + base64.b64encode(user.encode()).decode()
path = "/buckets/b/collections/c/records/r05000"
def call(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": auth, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
batch = json.dumps({"defaults": {"method": "GET", "headers": {"Authorization": auth}},
                    "requests": [{"path": path}] * 25}).encode()
call("GET", base + path); call("POST", base + "/batch", batch)
def mean(f):
    t = time.perf_counter()
    for _ in range(20): f()
    return (time.perf_counter() - t) / 20 * 1000
one = mean(lambda: call("GET", base + path))
many = mean(lambda: call("POST", base + "/batch", batch))
print(f"{one:.2f} {many:.2f}")
PY
}

echo "# W2 by a basicauth user and by an account user"
t_basic=$(w2 "$T_BASIC" "$BASIC_USER")
t_acc_basic=$(w2 "$T_ACC" "$BASIC_USER")
t_acc_acct=$(w2 "$T_ACC" "$ACCOUNT_USER")
k_acc_basic=$(w2 "$K_ACC" "$BASIC_USER")
k_acc_acct=$(w2 "$K_ACC" "$ACCOUNT_USER")
echo "# batches"
read -r t_one_b t_batch_b <<<"$(batch_vs_one "$T_ACC" "$BASIC_USER")"
read -r t_one_a t_batch_a <<<"$(batch_vs_one "$T_ACC" "$ACCOUNT_USER")"
read -r k_one_b k_batch_b <<<"$(batch_vs_one "$K_ACC" "$BASIC_USER")"
read -r k_one_a k_batch_a <<<"$(batch_vs_one "$K_ACC" "$ACCOUNT_USER")"

echo "# a flood of wrong passwords beside a valid account"
# The valid account's session is fresh (its verified login remembered) when the flood begins.
curl -sf -o /dev/null -X PATCH -u "$ACCOUNT_USER" -H 'Content-Type: application/json' -d '{"data":{"note":"fresh"}}' \
  "$T_ACC/accounts/acct"
alone=$(w2 "$T_ACC" "$ACCOUNT_USER" 8)
WRONG="Authorization: Basic $(printf %s 'acct:wrong' | base64 -w0)"
WRK_METHOD=GET WRK_BODY_FILE= WRK_HEADERS=$WRONG timeout $((DURATION + 30)) wrk -t1 -c64 -d"$((DURATION + 2))s" \
  -s "$KIT/workloads/req.lua" "$T_ACC/buckets/b/collections/c/records/r05000" >"$WORK/flood.txt" 2>&1 &
flood=$!
sleep 1
python3 - "$T_ACC" "$DURATION" >"$WORK/heartbeat.txt" <<'PY' &
import sys, time, urllib.request
base, secs = sys.argv[1], float(sys.argv[2])
worst, n, end = 0.0, 0, time.time() + secs
while time.time() < end:
    t = time.perf_counter()
    try: urllib.request.urlopen(base + "/__heartbeat__", timeout=5).read()
    except Exception: pass
    worst = max(worst, time.perf_counter() - t); n += 1
    time.sleep(0.1)
print(f"{worst * 1000:.1f} {n}")
PY
beat=$!
during=$(w2 "$T_ACC" "$ACCOUNT_USER" 8)
wait "$beat"; wait "$flood" || true
read -r beat_worst beat_n <"$WORK/heartbeat.txt"
flood_line=$(grep '^WRKRESULT' "$WORK/flood.txt" | tail -1 || true)

REPORT=$OUT/auth-$STAMP.md
{
  echo "# Authentication cost, Tidemark vs Kinto 26.5.0"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "- command: \`DURATION=$DURATION perf/auth.sh\` (wrk, 1 thread; W2 at 32 connections unless said)"
  echo "- both servers: \`multiauth.policies = account basicauth\` (Kinto: memory backend); baseline: Tidemark with \`basicauth\` alone"
  echo
  echo "| W2 req/s | Tidemark | Kinto |"
  echo "|---|---|---|"
  echo "| basicauth user, \`basicauth\` alone | $t_basic | |"
  echo "| basicauth user, \`account basicauth\` | $t_acc_basic | $k_acc_basic |"
  echo "| account user, \`account basicauth\` | $t_acc_acct | $k_acc_acct |"
  echo
  echo "W2 by a basicauth user under \`account basicauth\` / under \`basicauth\` alone (Tidemark): $(awk -v a="${t_acc_basic%% *}" -v b="${t_basic%% *}" 'BEGIN{printf "%.2f", a/b}')"
  echo
  echo "| one GET / batch of 25 GETs (\`defaults.headers.Authorization\`), ms | Tidemark | Kinto |"
  echo "|---|---|---|"
  echo "| basicauth user | $t_one_b / $t_batch_b ($(awk -v a="$t_batch_b" -v b="$t_one_b" 'BEGIN{printf "%.1f", a/b}')×) | $k_one_b / $k_batch_b ($(awk -v a="$k_batch_b" -v b="$k_one_b" 'BEGIN{printf "%.1f", a/b}')×) |"
  echo "| account user | $t_one_a / $t_batch_a ($(awk -v a="$t_batch_a" -v b="$t_one_a" 'BEGIN{printf "%.1f", a/b}')×) | $k_one_a / $k_batch_a ($(awk -v a="$k_batch_a" -v b="$k_one_a" 'BEGIN{printf "%.1f", a/b}')×) |"
  echo
  echo "A flood of wrong passwords (64 connections) beside 8 connections of a valid account (Tidemark):"
  echo "- the valid account's W2 (8 connections, its login remembered): $during req/s during the flood, $alone alone ($(awk -v a="${during%% *}" -v b="${alone%% *}" 'BEGIN{printf "%.0f%%", 100*a/b}'))"
  echo "- \`__heartbeat__\` meanwhile: worst $beat_worst ms of $beat_n"
  echo "- the flood: ${flood_line#WRKRESULT }"
} >"$REPORT"
cp "$REPORT" "$OUT/auth-latest.md"
cat "$REPORT"
