#!/usr/bin/env python3
"""Write the query files of benches/peers into DIR (needs dnspython).

  make_queries.py DIR [ECS_NETWORKS] [SEED]

  geo-ecs.bin    www.example.test A with EDNS and a Client Subnet option, one query per random
                 public /24 (100,000 by default), in dnsperf's -B format (2-byte length, message)
  geo.txt        www.example.test A (dnsperf -e adds EDNS without ECS)
  static.txt     static.example.test A
  nxdomain.txt   10,000 random names under example.test that do not exist
"""

import os
import random
import struct
import sys

import dns.edns
import dns.message

from networks import random_public_slash24s

QNAME = "www.example.test."


def geo_ecs_query(net):
    ecs = dns.edns.ECSOption(str(net.network_address), net.prefixlen)
    msg = dns.message.make_query(QNAME, "A", use_edns=0, payload=1232, options=[ecs])
    msg.flags = 0  # an authoritative server is asked without RD, as a resolver asks it
    msg.id = 0  # dnsperf writes its own IDs
    return msg.to_wire()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 42
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "geo-ecs.bin"), "wb") as f:
        for net in random_public_slash24s(count, seed):
            wire = geo_ecs_query(net)
            f.write(struct.pack("!H", len(wire)) + wire)
    with open(os.path.join(out, "geo.txt"), "w") as f:
        f.write("www.example.test A\n")
    with open(os.path.join(out, "static.txt"), "w") as f:
        f.write("static.example.test A\n")
    rng = random.Random(seed)
    with open(os.path.join(out, "nxdomain.txt"), "w") as f:
        for _ in range(10_000):
            f.write("nx-%08x.example.test A\n" % rng.getrandbits(32))


if __name__ == "__main__":
    main()
