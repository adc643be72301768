"""Random public IPv4 /24 client networks, the same for a given seed on every machine."""

import ipaddress
import random


def random_public_slash24s(count, seed):
    """`count` distinct /24 networks that are globally routable unicast (no private, shared,
    loopback, link-local, documentation, benchmarking, multicast or reserved space)."""
    rng = random.Random(seed)
    seen = set()
    networks = []
    while len(networks) < count:
        base = rng.getrandbits(24) << 8
        if base in seen:
            continue
        net = ipaddress.IPv4Network((base, 24))
        if net.is_global and not net.is_multicast and not net.is_reserved:
            seen.add(base)
            networks.append(net)
    return networks
