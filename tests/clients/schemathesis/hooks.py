"""Schemathesis hooks for Tidemark (loaded by run.sh through SCHEMATHESIS_HOOKS).

- `kinto_error_shape`: a check that every 4xx/5xx response with a body is Kinto's error
  object: JSON, `code` (int) equal to the HTTP status, `errno` (int), `error` (string), and
  when present `message` (string) and `info` (string); `details` may be anything.
  HEAD responses carry no body (as in Kinto) and are not checked.
- Fixtures: the objects whose ids schemathesis.toml offers (bucket st-b with collection st-c,
  group st-g and record st-r; bucket st-b2 with collection st-c2) are created when the hooks
  load, and created again after every successful DELETE (which may have removed them: DELETE
  /buckets removes them all), so that most generated requests reach existing objects. These
  set-up requests are not generated ones and are not counted. TIDEMARK_ST_BASE (the server's
  /v1 URL) and TIDEMARK_ST_AUTH (user:password) name the server and the user.
- `flatmap_headers`: a generated `If-Match`/`If-None-Match` header is kept in one case of
  three only (the rest of the time the case goes without it), since nearly every generated
  value fails the precondition and the write behind it would never run. Coverage-phase cases
  still send every boundary value of these headers.
- `after_call`: appends one line per request sent to the file named by
  TIDEMARK_ST_REQUEST_LOG (verdict `ok`, `FAIL-5xx` or `FAIL-shape`, method, status, path, and
  an error's `message`), so that run.sh can count the requests and the failed ones.
"""

import base64
import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis
from hypothesis import strategies as st

_LOG_PATH = os.environ.get("TIDEMARK_ST_REQUEST_LOG")
_BASE = os.environ.get("TIDEMARK_ST_BASE", "").rstrip("/")
_AUTH = os.environ.get("TIDEMARK_ST_AUTH", "")
_LOCK = threading.Lock()
_FIXTURES_LOCK = threading.Lock()

# (path, body) in creation order; PUT with `If-None-Match: *` leaves an existing object alone.
FIXTURES = [
    ("/buckets/st-b", {"data": {"title": "schemathesis"}}),
    ("/buckets/st-b/collections/st-c", {"data": {"title": "c"}}),
    ("/buckets/st-b/groups/st-g", {"data": {"members": ["basicauth:someone"]}}),
    ("/buckets/st-b/collections/st-c/records/st-r", {"data": {"title": "r", "n": 1, "a": {"b": [1, 2]}}}),
    ("/buckets/st-b2", {}),
    ("/buckets/st-b2/collections/st-c2", {}),
]


def ensure_fixtures():
    """Creates the fixture objects that are missing (no-op without TIDEMARK_ST_BASE)."""
    if not _BASE:
        return
    token = base64.b64encode(_AUTH.encode()).decode()
    with _FIXTURES_LOCK:
        for path, body in FIXTURES:
            request = urllib.request.Request(
                _BASE + path,
                data=json.dumps(body).encode(),
                method="PUT",
                headers={
                    "Authorization": f"Basic {token}",
                    "Content-Type": "application/json",
                    "If-None-Match": "*",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10):
                    pass
            except urllib.error.HTTPError as error:
                if error.code != 412:  # 412: it exists already
                    raise RuntimeError(f"fixture PUT {path}: {error.code} {error.read()[:300]!r}") from None


ensure_fixtures()


PRECONDITIONS = ("If-Match", "If-None-Match")


@schemathesis.hook
def flatmap_headers(context, headers):
    if not headers or not any(name in headers for name in PRECONDITIONS):
        return st.just(headers)
    stripped = {name: value for name, value in headers.items() if name not in PRECONDITIONS}
    return st.sampled_from([stripped, stripped, headers])


def error_shape_problem(response):
    """Why a 4xx/5xx response is not Kinto's error object, or None (also for non-errors)."""
    status = response.status_code
    if status < 400 or response.request.method == "HEAD":
        return None
    content_type = ",".join(response.headers.get("content-type", []))
    if not content_type.startswith("application/json"):
        return f"{status} error with Content-Type {content_type!r}, not application/json"
    try:
        body = json.loads(response.content)
    except ValueError as error:
        return f"{status} error body is not JSON: {error}"
    if not isinstance(body, dict):
        return f"{status} error body is not a JSON object: {body!r}"
    problems = []
    for field, kind in (("code", int), ("errno", int), ("error", str)):
        value = body.get(field)
        if field not in body:
            problems.append(f"`{field}` is missing")
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"`{field}` is {value!r}, not {kind.__name__}")
    if isinstance(body.get("code"), int) and body["code"] != status:
        problems.append(f"`code` is {body['code']}, the status is {status}")
    for field in ("message", "info"):
        if field in body and not isinstance(body[field], str):
            problems.append(f"`{field}` is {body[field]!r}, not a string")
    if problems:
        return f"{status} error not in Kinto's shape: " + "; ".join(problems) + f" (body {body!r})"
    return None


@schemathesis.hook
def after_call(context, case, response):
    request = response.request
    if _LOG_PATH:
        verdict = "ok"
        if response.status_code >= 500:
            verdict = "FAIL-5xx"
        elif error_shape_problem(response):
            verdict = "FAIL-shape"
        detail = ""
        if response.status_code >= 400 and response.content:
            try:
                detail = " " + json.dumps(json.loads(response.content).get("message"))
            except (ValueError, AttributeError):
                detail = " (not a JSON object)"
        line = f"{verdict} {request.method} {response.status_code} {request.path_url}{detail}\n"
        with _LOCK, open(_LOG_PATH, "a", encoding="utf-8") as log:
            log.write(line)
    if request.method == "DELETE" and 200 <= response.status_code < 300:
        ensure_fixtures()


@schemathesis.check
def kinto_error_shape(ctx, response, case):
    """4xx/5xx bodies are Kinto's error object, with `code` equal to the status."""
    problem = error_shape_problem(response)
    if problem:
        raise AssertionError(problem)
    return None
