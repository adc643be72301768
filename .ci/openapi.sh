#!/usr/bin/env bash
# The control plane's OpenAPI document, as the real server serves it, checked by a real
# validator (openapi-spec-validator, from PyPI). Expects target/debug/meridian (cargo test
# builds it).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "openapi-spec-validator==0.9.0"

work=$(mktemp -d)
target/debug/meridian serve --dns 127.0.0.1:0 --control 127.0.0.1:0 2>"$work/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

addr=""
for _ in $(seq 200); do
    addr=$(sed -n 's/.*listening for HTTP on \([0-9.:]*\).*/\1/p' "$work/log")
    [ -n "$addr" ] && break
    sleep 0.1
done
if [ -z "$addr" ]; then
    cat "$work/log" >&2
    echo "meridian did not start its control plane" >&2
    exit 1
fi

python3 - "$addr" <<'PY'
import json, sys, urllib.request
from openapi_spec_validator import validate

with urllib.request.urlopen(f"http://{sys.argv[1]}/v1/openapi.json", timeout=10) as response:
    doc = json.load(response)
validate(doc)
n_operations = sum(len(item) for item in doc["paths"].values())
print(f"/v1/openapi.json: valid OpenAPI {doc['openapi']} ({n_operations} operations)")
PY
