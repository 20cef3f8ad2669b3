#!/usr/bin/env python3
"""Compare two api-log.txt files written by admin.mjs (one run against Kinto, one against Tidemark).

Usage: tests/clients/admin/compare-logs.py KINTO_DIR/api-log.txt TIDEMARK_DIR/api-log.txt

Normalizes what legitimately differs between two runs (host and port, the run's stamp in ids,
UUIDs, timestamps, dates, credentials), then groups the exchanges by (method, URL, request body)
and prints, for every group whose set of (status, headers, JSON body) differs, Kinto's and the
other server's answers. JSON bodies are compared as parsed values (key order ignored, lists of
strings as sets); Access-Control-Expose-Headers as a set. The admin sends some requests
concurrently, so the order of the exchanges is not compared, and a request made a different
number of times only shows up when its answers differ.
"""
import collections
import json
import re
import sys

METHODS = "GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS"


def normalize(text):
    text = re.sub(r"127\.0\.0\.1:\d+", "HOST", text)
    text = re.sub(r"(admin|bk|coll|pw)-[a-z0-9]{6,10}(?![a-z0-9])", r"\1-STAMP", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", text)
    text = re.sub(r"\b1[0-9]{12}\b", "1000000000000", text)
    text = re.sub(r'"date":\s*"[^"]*"', '"date":"DATE"', text)
    text = re.sub(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", "DATE", text)
    text = re.sub(r'"Basic [A-Za-z0-9+/=]+"', '"Basic X"', text)
    return text


def canon(value):
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [canon(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def entries(path):
    out = collections.defaultdict(set)
    text = normalize(open(path).read()).strip()
    for block in re.split(r"\n(?=(?:%s) )" % METHODS, text):
        lines = block.split("\n")
        method, url, _, status = lines[0].split(" ", 3)
        fields = {}
        for line in lines[1:]:
            key, _, value = line.strip().partition(": ")
            fields[key] = value
        headers = {}
        for h in filter(None, fields.get("resp-headers", "").split(" | ")):
            k, _, v = h.partition(": ")
            if k == "access-control-expose-headers":
                v = ",".join(sorted(x.strip() for x in v.split(",")))
            headers[k] = v
        body = fields.get("resp-body", "")
        try:
            body = json.dumps(canon(json.loads(body)), sort_keys=True)
        except ValueError:
            pass
        out[(method, url, fields.get("req-body", ""))].add(
            (status, json.dumps(headers, sort_keys=True), body))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = entries(sys.argv[1]), entries(sys.argv[2])
    differing = 0
    for key in sorted(set(a) | set(b)):
        ea, eb = a.get(key, set()), b.get(key, set())
        if ea == eb:
            continue
        differing += 1
        print("=== %s %s %s" % key)
        for x in sorted(ea - eb):
            print("  first :", " ".join(x))
        for x in sorted(eb - ea):
            print("  second:", " ".join(x))
    print("%d request kinds differ" % differing)


if __name__ == "__main__":
    main()
