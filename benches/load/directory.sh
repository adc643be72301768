#!/usr/bin/env bash
# Whole-server load test of the user directory: 10 M pins imported over HTTP, a restart from the
# state store, then lookups over HTTP (wrk) and DNS (dnsperf), server pinned to CPU 0 and the
# load generator to CPU 1. Needs: wrk, dnsperf, dig, curl, python3 (Debian: apt-get install wrk
# dnsperf bind9-dnsutils curl). Figures go to stdout; README.md quotes them.
#
#   bash benches/load/directory.sh            # PINS=10000000 DURATION=10 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
PINS=${PINS:-10000000}
DURATION=${DURATION:-10}
WORK=${WORK:-/tmp/meridian-directory-load}
DNS=127.0.0.1:5399
HTTP=127.0.0.1:8099

rm -rf "$WORK" && mkdir -p "$WORK/zones"
cargo build --release --quiet
# The example, with a rate limit that does not throttle the load generator.
ln -s "$PWD/geodata" "$WORK/geodata"
cp zones/example.com.zone "$WORK/zones/"
sed 's/^  report_ttl_seconds: 15/  report_ttl_seconds: 15\n  rate_limit: { per_second: 1000000, burst: 1000000 }/' \
    zones/example.yaml > "$WORK/zones/example.yaml"

python3 - "$PINS" "$WORK" <<'PY'
import random, sys
n, work = int(sys.argv[1]), sys.argv[2]
dcs = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"]
with open(f"{work}/pins.jsonl", "w") as f:
    for i in range(n):
        f.write('{"user":"user-%d","home":"%s","replica":"%s"}\n' % (i, dcs[i % 5], dcs[(i + 2) % 5]))
rnd = random.Random(3)
with open(f"{work}/dns-queries.txt", "w") as f:
    for _ in range(200000):
        f.write("user-%d.users.example.com TXT\n" % rnd.randrange(n))
with open(f"{work}/users.lua", "w") as f:
    f.write('wrk.headers["Authorization"] = "Bearer example-frontend-token"\n'
            'request = function() return wrk.format("GET", "/v1/users/user-" .. math.random(0, %d)) end\n' % (n - 1))
PY

serve() {
    taskset -c 0 ./target/release/meridian serve --config "$WORK/zones/example.yaml" \
        --dns "$DNS" --control "$HTTP" --state-dir "$WORK/state" > "$WORK/server.log" 2>&1 &
    PID=$!
    start=$(date +%s.%N)
    until curl -sf "http://$HTTP/readyz" > /dev/null; do sleep 0.1; done
    echo "ready in $(echo "$(date +%s.%N) - $start" | bc) s, resident $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
}
stop() { kill "$PID"; while kill -0 "$PID" 2> /dev/null; do sleep 0.2; done; }
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

serve
start=$(date +%s.%N)
curl -sf -X POST "http://$HTTP/v1/directory/import?confirm=true" -H 'Authorization: Bearer example-operator-token' \
    --data-binary @"$WORK/pins.jsonl"
echo
echo "import of $PINS pins: $(echo "$(date +%s.%N) - $start" | bc) s"
stop

echo "restart with $PINS pins:"
serve
t0=$(cpu)
taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" -s "$WORK/users.lua" "http://$HTTP" | grep -E 'Requests/sec|Non-2xx'
echo "HTTP: server CPU $(( $(cpu) - t0 )) ticks in ${DURATION} s (100 = one core-second)"
t0=$(cpu)
taskset -c 1 dnsperf -s "${DNS%:*}" -p "${DNS#*:}" -d "$WORK/dns-queries.txt" -c 8 -q 100 -l "$DURATION" \
    | grep -E 'Queries per second|Response codes'
echo "DNS: server CPU $(( $(cpu) - t0 )) ticks in ${DURATION} s"
stop
