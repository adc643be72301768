#!/usr/bin/env bash
# Instructions per query of one query_path benchmark, counted by callgrind: unlike wall time,
# the count does not move when other work loads the machine.
#
#   bash benches/instructions.sh                          # handler/geo_query_varied_ecs, shipped example
#   MERIDIAN_BENCH_CONFIG=/path/meridian.yaml bash benches/instructions.sh [benchmark]
#
# Only the instructions inside `Handler::answer` are counted (--toggle-collect), divided by
# its calls; the lines after the total break that down by the query path's geo functions.
set -euo pipefail
BENCH=${1:-handler/geo_query_varied_ecs}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
EXE=$(cd "$ROOT" && cargo bench --bench query_path --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "query_path" and m.get("executable"):
        print(m["executable"])')
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" \
    --toggle-collect='meridian::dns::handler::Handler::answer' \
    "$EXE" --bench --profile-time 2 --exact "$BENCH" > "$OUT/log" 2>&1
python3 - "$OUT/cg.out" <<'PY'
import collections, re, sys
names, calls, inclusive = {}, collections.Counter(), collections.Counter()
callee, after_calls = None, False
for line in open(sys.argv[1]):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, i, name = m.groups()
        if name:
            names[i] = name
        if kind == "cfn":
            callee = i
        continue
    if line.startswith("calls="):
        calls[callee] += int(line.split("=")[1].split()[0])
        after_calls = True
    elif after_calls:
        inclusive[callee] += int(line.split()[1])
        after_calls = False
queries = sum(calls[i] for i, n in names.items() if n.endswith("Handler::answer"))
print(f"{queries} queries")
shown = ["Handler::answer", "RoutingTable::resolve", "Trie::lookup", "Trie::widest",
         "GeoMap::resolve::{{closure}}", "UniformNetworks::prefix_of", "GeoDb::locate"]
for i, name in sorted(names.items(), key=lambda item: -inclusive[item[0]]):
    if calls[i] and any(name.endswith(s) for s in shown):
        print(f"{inclusive[i] / queries:8.0f} instructions per query in {name} ({calls[i] / queries:.2f} calls per query)")
PY
