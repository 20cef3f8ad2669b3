"""kinto-http.py's client driving the toolkit's food service (examples/food) under /v0.

Usage: python food.py http://127.0.0.1:PORT/v0
Ends with "N passed, M failed"; exits non-zero when anything failed.
"""

import sys
import traceback

from kinto_http import Client, KintoException

URL = sys.argv[1].rstrip("/")
mkaur = Client(server_url=URL, auth=("token", "mkaur"))
other = Client(server_url=URL, auth=("someone", "else"))
results = []


def check(name):
    def run(test):
        try:
            test()
            results.append((name, None))
        except Exception:  # noqa: BLE001 - every failure is reported, none stops the run
            results.append((name, traceback.format_exc()))
        return test

    return run


def status_of(call):
    try:
        call()
    except KintoException as error:
        return error.response.status_code if error.response is not None else None
    return 200


@check("server_info describes the food service")
def _():
    info = mkaur.server_info()
    assert info["project_name"] == "food", info
    assert info["url"].endswith("/v0/"), info
    assert "basicauth" in info["capabilities"], info


@check("the tutorial's create, read, list, _since, PATCH with If-Match, delete")
def _():
    before = mkaur.session.request("get", "/food")[1]["ETag"].strip('"')
    body, headers = mkaur.session.request(
        "post", "/food", data={"food": "chocolate", "taste": "varies from bitter to sweet"}
    )
    food = body["data"]
    assert set(food) == {"food", "taste", "id", "last_modified"}, food
    assert headers["Content-Type"] == "application/json"
    path = "/food/" + food["id"]
    assert mkaur.session.request("get", path)[0]["data"]["food"] == "chocolate"
    listed = mkaur.session.request("get", "/food")[0]["data"]
    assert [f["id"] for f in listed] == [food["id"]], listed
    since = mkaur.session.request("get", "/food", params={"_since": before})[0]["data"]
    assert [f["id"] for f in since] == [food["id"]], since
    etag = '"%d"' % food["last_modified"]
    patched = mkaur.session.request("patch", path, data={"taste": "bitter"}, headers={"If-Match": etag})[0]
    assert patched["data"]["taste"] == "bitter", patched
    stale = status_of(lambda: mkaur.session.request("patch", path, data={"taste": "x"}, headers={"If-Match": etag}))
    assert stale == 412, stale
    deleted = mkaur.session.request("delete", path)[0]["data"]
    assert deleted["deleted"] is True, deleted


@check("another user sees nothing of mkaur's food")
def _():
    food = mkaur.session.request("post", "/food", data={"food": "tea"})[0]["data"]
    path = "/food/" + food["id"]
    assert status_of(lambda: other.session.request("get", path)) == 404
    assert status_of(lambda: other.session.request("delete", path)) == 404
    assert other.session.request("get", "/food")[0]["data"] == []
    assert mkaur.session.request("get", path)[0]["data"]["food"] == "tea"


@check("a schema violation is a Kinto 400")
def _():
    def bad():
        mkaur.session.request("post", "/food", data={"taste": "no food named"})

    try:
        bad()
        raise AssertionError("accepted")
    except KintoException as error:
        assert error.response.status_code == 400
        assert error.response.json()["errno"] == 107


@check("batch requests run under /v0")
def _():
    with mkaur.batch() as batch:
        batch.session.request("post", "/food", data={"food": "bread"})
        batch.session.request("post", "/food", data={"food": "butter"})
    names = {f["food"] for f in mkaur.session.request("get", "/food")[0]["data"]}
    assert {"bread", "butter"} <= names, names


failed = [(name, trace) for name, trace in results if trace]
for name, trace in results:
    print(("FAIL " if trace else "ok   ") + name)
for name, trace in failed:
    print("\n--- " + name + "\n" + trace)
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
