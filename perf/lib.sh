# Shared by perf/run.sh and perf/auth.sh; source it after `set -euo pipefail`, with WORK_NAME
# set. Sets ROOT, KIT (../shared/perf beside the repository unless given), VENV (the kit's
# Kinto), STAMP, OUT (perf/results) and WORK (a temporary directory); installs the kit when
# wrk or Kinto is missing; on exit kills every PID in PIDS and removes WORK. wait_up URL waits
# for a server to answer.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/perf}
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark-perf/venv}
[ -d "$KIT" ] || { echo "no perf kit at $KIT (set KIT)" >&2; exit 1; }
if ! command -v wrk >/dev/null || [ ! -x "$VENV/bin/kinto" ]; then "$KIT/setup.sh"; fi

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$ROOT/perf/results; mkdir -p "$OUT"
WORK=$(mktemp -d "/tmp/${WORK_NAME:-tidemark-perf}.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 150); do curl -sf -o /dev/null "$1/" && return 0; sleep 0.2; done; echo "$1 did not start" >&2; exit 1; }
