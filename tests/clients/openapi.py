"""Validates a running server's /__api__ document against the Swagger 2.0 schema.

Usage: python openapi.py http://127.0.0.1:PORT/v1 [more base URLs]
Ends with "N passed, M failed"; exits non-zero when a document is invalid.
"""

import json
import sys
import urllib.request

from openapi_spec_validator import validate

failed = 0
for base in sys.argv[1:]:
    with urllib.request.urlopen(base.rstrip("/") + "/__api__") as response:
        document = json.load(response)
    try:
        validate(document)
        print(f"ok   {base}/__api__ ({len(document['paths'])} paths)")
    except Exception as error:  # noqa: BLE001 - every invalid document is reported
        failed += 1
        print(f"FAIL {base}/__api__: {error}")
total = len(sys.argv) - 1
print(f"{total - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
