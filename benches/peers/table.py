#!/usr/bin/env python3
"""results.csv of benches/peers/run.sh -> one markdown table, medians over the repetitions.

  table.py results.csv

Per server and query mix: queries per second answered at the load generator's limit, queries
lost, the server's CPU-seconds per million queries (utime+stime from /proc/PID/stat over the
run) and its queries per CPU-second, also as a share of the reflector's on the same mix.
"""

import csv
import statistics
import sys

MIXES = {
    "geo-ecs": "geo, 100k random /24 ECS",
    "geo": "geo, no ECS",
    "static": "static name",
    "nxdomain": "NXDOMAIN",
}
SERVERS = ["reflector", "meridian", "gdnsd", "knot"]


def order(values, known):
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), v))


def main(path):
    rows = list(csv.DictReader(open(path)))
    groups = {}
    for r in rows:
        groups.setdefault((r["mix"], r["server"]), []).append(r)

    def per_cpu_second(runs):
        return statistics.median(
            int(r["completed"]) / float(r["server_cpu_s"]) for r in runs if float(r["server_cpu_s"]) > 0
        )

    print("| mix | server | runs | queries/s | lost | server CPU % | CPU-s per M queries "
          "| queries per CPU-s | of reflector | dnsperf CPU % | other load % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mix in order({m for m, _ in groups}, list(MIXES)):
        limit = groups.get((mix, "reflector"))
        limit_rate = per_cpu_second(limit) if limit else None
        for server in order({s for m, s in groups if m == mix}, SERVERS):
            runs = groups[(mix, server)]
            med = lambda key: statistics.median(float(r[key]) for r in runs)
            rate = per_cpu_second(runs)
            share = f"{100 * rate / limit_rate:.0f} %" if limit_rate else "-"
            print(
                f"| {MIXES.get(mix, mix)} | {server} | {len(runs)} | {med('qps'):,.0f} "
                f"| {sum(int(r['lost']) for r in runs)} "
                f"| {100 * med('server_cpu_s') / med('elapsed_s'):.0f} "
                f"| {1e6 / rate:.2f} | {rate:,.0f} | {share} "
                f"| {100 * med('dnsperf_cpu_s') / med('elapsed_s'):.0f} | {med('other_load_pct'):.0f} |"
            )
    # A fast wrong answer is no result: say so when a real server's rcodes are not the expected ones.
    for r in rows:
        expected = "NXDOMAIN" if r["mix"] == "nxdomain" else "NOERROR"
        if r["server"] != "reflector" and r["rcodes"].split("_")[0::2] != [expected]:
            print(f"\nwarning: {r['server']} {r['mix']} run {r['rep']} answered {r['rcodes']}, expected only {expected}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
