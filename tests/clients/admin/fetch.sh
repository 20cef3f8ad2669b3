#!/usr/bin/env bash
# Usage: tests/clients/admin/fetch.sh DIR
# Extracts the Kinto Admin build (6.2.0, built for /v1/admin/) that the kinto==25.0.0 wheel on
# PyPI ships (kinto/plugins/admin/build/) into DIR, for `kinto.admin_assets_path = DIR`. The
# Kinto 26.5.0 wheel ships none; nothing of it is committed to this repository.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
[ -f "$DIR/index.html" ] && [ -f "$DIR/VERSION" ] && { echo "$DIR already holds Kinto Admin $(cat "$DIR/VERSION")"; exit 0; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$TMP" kinto==25.0.0
mkdir -p "$DIR"
python3 - "$TMP" "$DIR" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "kinto-25.0.0-*.whl"))[0]
prefix = "kinto/plugins/admin/build/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(z.read(name))
PY
echo "Kinto Admin $(cat "$DIR/VERSION") in $DIR"
