#!/usr/bin/env python3
"""Issue 8 benchmark (b): ask meridian and gdnsd the same random public /24 client networks.

  scope.py MERIDIAN_PORT GDNSD_PORT [NETWORKS] [SEED]

Both serve www.example.test over the same five datacenters (nearest, one answer) with the same
City database. For every network it sends www.example.test A with ECS <network>/24 to each
server on 127.0.0.1 and prints both servers' median ECS scope (with quartiles) and the share of
networks whose answers agree, plus the first disagreements. Needs dnspython.
"""

import os
import statistics
import sys
from collections import Counter

import dns.edns
import dns.message
import dns.query

from networks import random_public_slash24s

QNAME = "www.example.test."
# How many networks on which meridian's scope is narrower than gdnsd's to list (SHOW_NARROWER).
SHOW_NARROWER = int(os.environ.get("SHOW_NARROWER", "10"))


def ask(port, net):
    """(sorted A addresses, ECS scope or None, rcode text) for one client network."""
    ecs = dns.edns.ECSOption(str(net.network_address), net.prefixlen)
    query = dns.message.make_query(QNAME, "A", use_edns=0, payload=1232, options=[ecs])
    query.flags = 0
    for attempt in range(3):
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
            break
        except dns.exception.Timeout:
            if attempt == 2:
                return ((), None, "TIMEOUT")
    addrs = tuple(sorted(rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == 1))
    scope = next((o.scopelen for o in reply.options if isinstance(o, dns.edns.ECSOption)), None)
    return (addrs, scope, dns.rcode.to_text(reply.rcode()))


def quartiles(values):
    if len(values) < 2:
        return values * 3 if values else [None] * 3
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], statistics.median_low(values), q[2]]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    servers = {"meridian": int(sys.argv[1]), "gdnsd": int(sys.argv[2])}
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    nets = random_public_slash24s(count, seed)
    answers = {name: [ask(port, net) for net in nets] for name, port in servers.items()}

    print(f"{count} random public /24 client networks (seed {seed}), www.example.test A with ECS")
    print()
    print("| server | median ECS scope | quartiles (25 %, 75 %) | no scope | rcodes |")
    print("|---|---|---|---|---|")
    for name, got in answers.items():
        scopes = [s for _, s, _ in got if s is not None]
        q1, med, q3 = quartiles(scopes)
        rcodes = ", ".join(f"{r} {n}" for r, n in Counter(r for _, _, r in got).most_common())
        print(f"| {name} | /{med} | /{q1:g}, /{q3:g} | {count - len(scopes)} | {rcodes} |")
    mine, theirs = answers["meridian"], answers["gdnsd"]
    agree = sum(1 for a, b in zip(mine, theirs) if a[0] == b[0] and a[0])
    wider = sum(1 for a, b in zip(mine, theirs) if a[1] is not None and b[1] is not None and a[1] < b[1])
    narrower = sum(1 for a, b in zip(mine, theirs) if a[1] is not None and b[1] is not None and a[1] > b[1])
    print()
    print(f"answers agree on {agree}/{count} networks = {100.0 * agree / count:.2f} %")
    print(f"meridian's scope is wider than gdnsd's on {wider}, narrower on {narrower}, "
          f"equal on {count - wider - narrower} networks")
    shown = 0
    for net, a, b in zip(nets, mine, theirs):
        if a[0] != b[0] and shown < 10:
            print(f"  differ: {net}  meridian {','.join(a[0]) or a[2]} /{a[1]}  "
                  f"gdnsd {','.join(b[0]) or b[2]} /{b[1]}")
            shown += 1
    narrower_by = Counter(a[1] - b[1] for a, b in zip(mine, theirs)
                          if a[1] is not None and b[1] is not None and a[1] > b[1])
    if narrower_by:
        print("narrower by (bits: networks): "
              + ", ".join(f"{bits}: {n}" for bits, n in sorted(narrower_by.items())))
    shown = 0
    for net, a, b in zip(nets, mine, theirs):
        if a[1] is not None and b[1] is not None and a[1] > b[1] and shown < SHOW_NARROWER:
            print(f"  narrower: {net}  meridian {','.join(a[0]) or a[2]} /{a[1]}  "
                  f"gdnsd {','.join(b[0]) or b[2]} /{b[1]}")
            shown += 1


if __name__ == "__main__":
    main()
