#!/usr/bin/env bash
# Generated API requests against a running server: schemathesis (PyPI, pinned in
# requirements.txt) reads the server's Swagger 2.0 document at URL/__api__ and sends requests
# made from it, with Basic auth, and checks every response:
#   - not_a_server_error: no 5xx;
#   - kinto_error_shape (hooks.py): every 4xx/5xx body is Kinto's error object
#     (application/json, {code, errno, error[, message, details, info]}, `code` = the status).
# It fails when a check fails, when schemathesis errs, or when fewer than MIN_REQUESTS requests
# were made.
#
# Usage: tests/clients/schemathesis/run.sh URL [more schemathesis run options]
#   URL like http://127.0.0.1:8888/v1 (a server with the basicauth policy, any user is valid)
# Settings (environment):
#   ST_MAX_EXAMPLES  test cases per operation in the fuzzing phase (default 100: ~6,000 requests)
#   ST_SEED          Hypothesis seed (default 1; the same seed on a fresh server sends the same
#                    requests, but for the ids that the server generates and the run reuses)
#   ST_AUTH          user:password (default schemathesis:secret)
#   ST_CHECKS        schemathesis checks (default not_a_server_error,kinto_error_shape; `all`
#                    adds the schema-conformance checks, which the document does not pass)
#   MIN_REQUESTS     the least number of requests the run must make (default 2000)
#   ST_REPORT_DIR    where the request log and the JUnit report go (default a temporary folder)
#   ST_KINTO_URL     a reference Kinto's /v1 URL (same settings): each request is sent to it as
#                    well and the status differences are summarised (differential.py; report
#                    only, never a failure)
# The virtualenv is ${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-schemathesis.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 URL [schemathesis run options]   (URL like http://127.0.0.1:8888/v1)" >&2
  exit 2
fi
url=${1%/}
shift
here=$(cd "$(dirname "$0")" && pwd)

venv=${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-schemathesis
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/st" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

report=${ST_REPORT_DIR:-$(mktemp -d)}
mkdir -p "$report"
log="$report/requests.log"
: >"$log"

max_examples=${ST_MAX_EXAMPLES:-100}
seed=${ST_SEED:-1}
auth=${ST_AUTH:-schemathesis:secret}
checks=${ST_CHECKS:-not_a_server_error,kinto_error_shape}
min_requests=${MIN_REQUESTS:-2000}

hooks="$here/hooks.py"
diff_log="$report/differences.jsonl"
if [ -n "${ST_KINTO_URL:-}" ]; then
  hooks="$here/differential.py"
  : >"$diff_log"
fi

echo "schemathesis $("$venv/bin/st" --version | awk '{print $NF}') against $url/__api__" \
  "(seed $seed, $max_examples examples per operation, checks $checks)"
status=0
SCHEMATHESIS_HOOKS="$hooks" \
ST_KINTO_URL="${ST_KINTO_URL:-}" \
ST_DIFF_LOG="$diff_log" \
TIDEMARK_ST_BASE="$url" \
TIDEMARK_ST_AUTH="$auth" \
TIDEMARK_ST_REQUEST_LOG="$log" \
  "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/__api__" \
  --auth "$auth" \
  --checks "$checks" \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-database none \
  --workers 1 \
  --continue-on-failure \
  --wait-for-schema 30 \
  --request-timeout 30 \
  --report junit --report-junit-path "$report/junit.xml" \
  --no-color \
  "$@" || status=$?

total=$(wc -l <"$log")
server_errors=$(grep -c '^FAIL-5xx ' "$log" || true)
bad_shape=$(grep -c '^FAIL-shape ' "$log" || true)
failed=$((server_errors + bad_shape))
echo
echo "schemathesis: $total requests sent; by status:" \
  "$(awk '{print $3}' "$log" | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}' | sed 's/, $//')"
echo "schemathesis: $server_errors answered 5xx, $bad_shape errors not in Kinto's shape" \
  "(request log: $log)"
if [ "$failed" -gt 0 ]; then
  echo "schemathesis: failing requests (first 20):"
  grep '^FAIL-' "$log" | head -20
fi
if [ -n "${ST_KINTO_URL:-}" ]; then
  "$venv/bin/python" - "$diff_log" <<'PY'
import collections, json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
differ = [r for r in rows if not r["same"]]
print(f"differential: {len(differ)} of {len(rows)} requests answered another status by Kinto"
      f" (method, Tidemark, Kinto: count; details in {sys.argv[1]}):")
for (method, tm, kinto), n in collections.Counter(
        (r["method"], r["tidemark"], r["kinto"]) for r in differ).most_common():
    print(f"  {method} {tm} {kinto}: {n}")
PY
fi
if [ "$total" -lt "$min_requests" ]; then
  echo "schemathesis: only $total requests, fewer than $min_requests" >&2
  status=1
fi
if [ "$status" -ne 0 ] || [ "$failed" -gt 0 ]; then
  echo "schemathesis: FAILED (exit $status)" >&2
  [ "$status" -ne 0 ] || status=1
  [ "$failed" -gt 0 ] || failed=1 # the run itself failed: counted once
fi
echo "$((total - failed < 0 ? 0 : total - failed)) passed, $failed failed"
exit "$status"
