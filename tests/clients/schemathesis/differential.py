"""Optional differential mode for run.sh (ST_KINTO_URL set): loaded instead of hooks.py, it
loads hooks.py and then sends every generated request a second time, as it was sent, to a
reference Kinto (same settings), appending one JSON line per request to ST_DIFF_LOG with both
statuses and short bodies. It never fails the run: the servers' states drift apart (ids that
POST generates, timestamps, the stateful phase's links), so a status difference is a lead to
reproduce by hand, not a verdict. The fixtures of hooks.py are created on Kinto too.
"""

import base64
import importlib.util
import json
import os
import threading
import urllib.parse

import requests
import schemathesis

_spec = importlib.util.spec_from_file_location(
    "tidemark_st_hooks", os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks.py")
)
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)

KINTO = os.environ["ST_KINTO_URL"].rstrip("/")
DIFF_LOG = os.environ["ST_DIFF_LOG"]
_LOCK = threading.Lock()
_SESSION = requests.Session()
_TOKEN = base64.b64encode(os.environ.get("TIDEMARK_ST_AUTH", "").encode()).decode()
_SKIPPED_HEADERS = {"host", "content-length"}


def ensure_kinto_fixtures():
    for path, body in hooks.FIXTURES:
        _SESSION.put(
            KINTO + path,
            json=body,
            headers={"Authorization": f"Basic {_TOKEN}", "If-None-Match": "*"},
            timeout=30,
        )


ensure_kinto_fixtures()


def _short(status, content):
    try:
        body = json.loads(content)
    except ValueError:
        return repr(content[:120])
    if status >= 400 and isinstance(body, dict):
        return json.dumps({k: body.get(k) for k in ("errno", "message", "details") if k in body})[:300]
    return json.dumps(body)[:200]


@schemathesis.hook
def after_call(context, case, response):
    sent = response.request
    target = urllib.parse.urlsplit(sent.url)
    kinto = urllib.parse.urlsplit(KINTO)
    url = urllib.parse.urlunsplit((kinto.scheme, kinto.netloc, target.path, target.query, ""))
    headers = {k: v for k, v in sent.headers.items() if k.lower() not in _SKIPPED_HEADERS}
    try:
        answer = _SESSION.request(
            sent.method, url, headers=headers, data=sent.body, allow_redirects=False, timeout=30
        )
        k_status, k_body = answer.status_code, answer.content
    except requests.RequestException as error:
        k_status, k_body = -1, str(error).encode()
    if sent.method == "DELETE" and 200 <= k_status < 300:
        ensure_kinto_fixtures()
    body = sent.body.decode("utf-8", "replace") if isinstance(sent.body, bytes) else sent.body
    line = {
        "same": response.status_code == k_status,
        "method": sent.method,
        "path": sent.path_url,
        "tidemark": response.status_code,
        "kinto": k_status,
        "tidemark_body": _short(response.status_code, response.content),
        "kinto_body": _short(k_status, k_body),
        "headers": {
            k: v
            for k, v in headers.items()
            if k.lower() not in ("user-agent", "accept-encoding", "accept", "connection", "x-schemathesis-testcaseid")
        },
        "body": body,
    }
    with _LOCK, open(DIFF_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
