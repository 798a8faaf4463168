#!/usr/bin/env python3
"""Writes the pipeline benchmark's inputs: a policy, appliance settings, and pcaps of client
traffic addressed to that policy's VIPs, exactly as a router would deliver it to the uplink.

    gen_pipeline.py --dir OUT [--flows N] [--syn-share F] [--backends B] [--services S]
                    [--prefixes P] [--ipv6-share F] [--sizes 64|imix|SPEC] [--queues Q]

Also importable: generate(out_dir, flows=..., ...) writes the same files and returns the
metadata (what OUT/meta.json holds). Defaults reproduce the original single-service benchmark.

OUT/policy.yaml    S TCP services on port 8000: service 0 on VIP 203.0.113.10, service k > 0 on
                   198.18.0.0 + k (RFC 2544 benchmarking range). P = min(S, max(1, B // 10))
                   Maglev pools; service k routes to pool k % P; the B backends (10.100.0.1
                   onwards, weight 100) are spread evenly over the pools, each pool's maglev_size
                   the smallest prime >= max(251, 100 x its backends). Backends sit behind a gateway
                   on the backend interface (IPIP encapsulation). With --ipv6-share > 0 every
                   service has an IPv6 twin (`NAME-v6`, service 0 on 2001:db8:203:113::10,
                   service k on 2001:2::k; same port and pools, encapsulated v6-in-v4 to the same
                   IPv4 backends) and the uplink also gets 2001:db8:192::1/64. With --prefixes P
                   > 0: regions r0..r3 (GeoIP countries US, DE, JP, BR), a route per region (to
                   pool (k + r) % P for service k, region r) and the catch-all last (IPv6 clients
                   and clients outside the P blocks take the catch-all).
OUT/geo.mmdb       (only with --prefixes P > 0) a MaxMind DB (IPv4, record size 32; see
                   bench/mmdb.py) of the first P aligned blocks of length 10 + ceil(log2 P) of
                   100.64.0.0/10, block j in region j % 4 (country record {"country":
                   {"iso_code": CC}}), so no two sibling blocks share a region and the compiler
                   cannot merge them: the geo LPM holds P prefixes. Referenced by the policy's
                   `geoip_database` (a policy file could not list a million prefixes: it is limited
                   to 4 MiB and 250000 YAML nodes).
OUT/settings.yaml  net_pcap0 = uplink, net_null0 = backend; per-worker connection tables of 2 x
                   that worker's flows of each family (at least 1024); mbufs for every captured
                   frame (net_pcap infinite_rx preloads each capture) plus the queues and caches of
                   Q workers; a data room of 384 bytes for 64-byte traffic (so a million frames
                   fit in the reserved hugepages), else 128 bytes of headroom + the largest frame,
                   rounded up to 64; `mtu` = the largest IP packet + 20 (IPIP) when over 1500.
OUT/flows.pcap     (Q = 1) or OUT/flows-0.pcap .. flows-{Q-1}.pcap: one frame per flow, flow i in
                   file i % Q (one capture per worker, as RSS would spread them). Ethernet to the
                   uplink MAC from the router MAC; IPv4 (valid header checksum, DF, TTL 64) or IPv6
                   (hop limit 64); TCP (valid checksum) to port 8000 of service i % S's VIP; TCP
                   payload and Ethernet padding zero. Every flow has its own source: IPv4 clients
                   from 100.64.0.0/10 (address 100.64.0.0 + i; with --prefixes, 100.64.0.0 + (i x
                   3635633 mod 2^22) so the flows spread over all the geo blocks), IPv6 clients
                   2001:db8:c000::/40, one /64 each (2001:db8:c0XX:XXXX::1 with i in the 24 bits
                   after the /40), and source port 1024 + (i x 7919) % 64000. The first round(N x
                   F) flows are SYNs, the rest ACKs; the pipeline inserts a flow on a non-SYN miss
                   too, so after the first pass over a capture (it is replayed in a loop) every
                   flow is established either way. A share --ipv6-share of the flows (exactly
                   round(N x share), spread by a multiplicative permutation of the flow index) is
                   IPv6. Frame sizes on the wire (the capture has no FCS: 4 bytes less): 64 (IPv6
                   frames: at least 78, Ethernet + IPv6 + TCP), or imix = 64, 576, 1518 in a 7:4:1
                   pattern by flow index ((i // Q) % 12: each capture has the whole pattern, in
                   order), or a SPEC like 64x7,576x4,1518x1. A 1518-byte frame (1500-byte IP
                   packet) + 20 bytes of IPIP exceeds a 1500-byte backend network, so when the
                   sizes need it the policy sets `backend_mtu: 9000` (jumbo frames behind the
                   appliance, as DSR deployments have) and the settings raise the port MTU.
OUT/meta.json      every parameter, the pcap list, frame, byte and per-capture counts, the pools
                   and settings sizes, and generation timings.
MACs: uplink 02:00:00:00:00:01, router 02:00:00:00:00:fe, backend 02:00:00:00:01:01, backend
gateway 02:00:00:00:01:fe.
"""
import argparse
import ipaddress
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdb  # noqa: E402  (bench/mmdb.py)

UPLINK_MAC = "02:00:00:00:00:01"
ROUTER_MAC = "02:00:00:00:00:fe"
BACKEND_MAC = "02:00:00:00:01:01"
BACKEND_GW_MAC = "02:00:00:00:01:fe"
VIP = (203, 0, 113, 10)
VIP_PORT = 8000
VIP_EXTRA_BASE = 198 << 24 | 18 << 16  # 198.18.0.0/15: VIPs of services 1..
VIP6 = 0x2001_0DB8_0203_0113_0000_0000_0000_0010  # 2001:db8:203:113::10
VIP6_EXTRA_BASE = 0x2001_0002_0000 << 80  # 2001:2::/48 (RFC 5180 benchmarking range)
UPLINK_V6 = "2001:db8:192::1/64"
CLIENT_BASE = 100 << 24 | 64 << 16  # 100.64.0.0/10: 4M client addresses, none martian
CLIENT_LEN = 10
CLIENT_SPREAD = 3635633  # odd: i -> i x CLIENT_SPREAD mod 2^22 is a permutation of the /10
CLIENT6_HI = 0x2001_0DB8_C000_0000  # 2001:db8:c000::/40; the flow index fills bits 40..63
CLIENT6_LO = 1
COUNTRIES = ("US", "DE", "JP", "BR")  # regions r0..r3
FRAME_LEN = 60  # 64 on the wire with the FCS
SYN, ACK = 0x02, 0x10
FCS = 4
IMIX = ((64, 7), (576, 4), (1518, 1))
HEADROOM = 128
IPIP = 20
MAX_FLOWS = 4 << 20
MAX_PREFIXES = 1 << 20
POLICY_MAX_BYTES = 4 * 1024 * 1024
POLICY_MAX_NODES = 250_000


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def ip4(a: int) -> str:
    return "%d.%d.%d.%d" % (a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255)


def ip6(a: int) -> str:
    return str(ipaddress.IPv6Address(a))


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):  # deterministic below 3.3e24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(n: int) -> int:
    while not is_prime(n):
        n += 1
    return n


def parse_sizes(spec: str):
    """'64', 'imix', a single wire size, or 'W1xN1,W2xN2,...' → ((wire size, weight), ...)."""
    spec = str(spec).strip().lower()
    if spec == "imix":
        return IMIX
    out = []
    for part in spec.split(","):
        w, _, n = part.partition("x")
        try:
            size, weight = int(w), int(n or 1)
        except ValueError:
            raise ValueError(f"--sizes: cannot read {part!r} (64, imix or e.g. 64x7,576x4,1518x1)")
        if not 64 <= size <= 1518 or weight < 1:
            raise ValueError(f"--sizes: {part!r}: wire sizes 64..1518, weights >= 1")
        out.append((size, weight))
    if not out or sum(n for _, n in out) > 1000:
        raise ValueError("--sizes: 1..1000 frames in the pattern")
    return tuple(out)


def backend_addr(b: int) -> str:
    # 10.100.0.1 onwards, 250 per /24, never .0 or .255.
    return f"10.{100 + b // 64000}.{b // 250 % 256}.{b % 250 + 1}"


def service_vip(k: int) -> int:
    return (VIP[0] << 24 | VIP[1] << 16 | VIP[2] << 8 | VIP[3]) if k == 0 else VIP_EXTRA_BASE + k


def service_vip6(k: int) -> int:
    return VIP6 if k == 0 else VIP6_EXTRA_BASE + k


def name_of(base: str, k: int) -> str:
    return base if k == 0 else f"{base}-{k}"


class Layout:
    """Who is who: services, pools, regions, prefixes, and which flow is what."""

    def __init__(self, flows, syn_share, backends, services, prefixes, ipv6_share, sizes, queues):
        self.flows, self.syn_share, self.backends = flows, syn_share, backends
        self.services, self.prefixes, self.ipv6_share = services, prefixes, ipv6_share
        self.queues = queues
        self.sizes = parse_sizes(sizes)
        self.size_pattern = [w for w, n in self.sizes for _ in range(n)]
        self.syns = round(flows * syn_share)
        self.v6_count = round(flows * ipv6_share)
        # Flow i is IPv6 when (i x v6_mult) mod N < v6_count: exactly v6_count flows, spread.
        m = max(1, round(flows * 0.6180339887)) | 1
        while math.gcd(m, flows) != 1:
            m += 2
        self.v6_mult = m
        self.pools = min(services, max(1, backends // 10))
        base, extra = divmod(backends, self.pools)
        self.pool_sizes = [base + (1 if p < extra else 0) for p in range(self.pools)]
        self.pool_first = [sum(self.pool_sizes[:p]) for p in range(self.pools)]
        self.maglev_sizes = [next_prime(max(251, 100 * n)) for n in self.pool_sizes]
        # Geo blocks: the first P aligned /(10 + c) blocks of the client /10.
        self.prefix_bits = (prefixes - 1).bit_length() if prefixes > 0 else 0
        self.prefix_len = CLIENT_LEN + self.prefix_bits
        self.spread = prefixes > 0

    def pool_name(self, p: int) -> str:
        return name_of("bench", p)

    def route_pool(self, k: int, region=None) -> int:
        return (k if region is None else k + region) % self.pools


def write_policy(path: str, lay: Layout, geoip: str = None) -> dict:
    """Writes the policy; returns its size in bytes and an estimate of its YAML nodes. Every
    backend is written `weight: 100` unless that would break the parser's node budget; then only
    the first backend of each pool carries it (the others take the same default)."""
    for all_weights in (True, False):
        text, nodes = policy_text(lay, geoip, all_weights)
        if len(text) <= POLICY_MAX_BYTES and nodes <= POLICY_MAX_NODES:
            break
    else:
        raise ValueError(
            f"the policy would be {len(text)} bytes and about {nodes} YAML nodes; the control plane "
            f"reads at most {POLICY_MAX_BYTES} bytes and {POLICY_MAX_NODES} nodes "
            "(fewer backends, services or no IPv6 twins)")
    with open(path, "w") as f:
        f.write(text)
    return {"bytes": len(text), "yaml_nodes_estimate": nodes, "all_weights_written": all_weights}


def policy_text(lay: Layout, geoip, all_weights: bool):
    nodes = 0
    lines = [
        "# Generated by bench/gen_pipeline.py: the pipeline benchmark's policy.",
        "interfaces:",
    ]
    if lay.v6_count:
        lines.append(f"  - {{ name: uplink, mac: {UPLINK_MAC}, addresses: [192.0.2.1/24, {UPLINK_V6}] }}")
    else:
        lines.append(f"  - {{ name: uplink, mac: {UPLINK_MAC}, addresses: [192.0.2.1/24] }}")
    lines += [
        "  - name: backend",
        f"    mac: {BACKEND_MAC}",
        "    addresses: [198.51.100.1/24]",
        f"    gateway: {{ ipv4: 198.51.100.254, mac: {BACKEND_GW_MAC} }}",
        "encap: ipip",
    ]
    # Full-size client packets (1500-byte IP) plus the 20-byte IPIP header need a jumbo backend
    # network, as DSR deployments have; otherwise they are answered with frag-needed.
    if max(lay.size_pattern) - 18 + IPIP > 1500:
        lines.append("backend_mtu: 9000")
    nodes += 40
    regions = range(4) if lay.prefixes else ()
    if lay.prefixes:
        lines.append(f"geoip_database: {geoip}")
        lines.append("regions:")
        for r in regions:
            lines.append(f"  r{r}: {{ geoip: {{ countries: [{COUNTRIES[r]}] }} }}")
            nodes += 7
    lines.append("services:")
    families = [(False, "")] + ([(True, "-v6")] if lay.v6_count else [])
    for k in range(lay.services):
        for v6, suffix in families:
            vip = ip6(service_vip6(k)) if v6 else ip4(service_vip(k))
            lines += [
                f"  - name: {name_of('bench', k)}{suffix}",
                f"    vip: {vip}",
                f"    ports: [{VIP_PORT}]",
                "    protocol: tcp",
                "    routes:",
            ]
            for r in regions:
                lines.append(f"      - {{ from: r{r}, pool: {lay.pool_name(lay.route_pool(k, r))} }}")
                nodes += 5
            lines.append(f"      - {{ pool: {lay.pool_name(lay.route_pool(k))} }}")
            nodes += 15
    lines.append("pools:")
    for p in range(lay.pools):
        lines += [
            f"  {lay.pool_name(p)}:",
            "    scheduler: maglev",
            # A prime with about 100 slots per backend.
            f"    maglev_size: {lay.maglev_sizes[p]}",
            "    backends:",
        ]
        first, count = lay.pool_first[p], lay.pool_sizes[p]
        for b in range(first, first + count):
            if all_weights or b == first:
                lines.append(f"      - {{ address: {backend_addr(b)}, weight: 100 }}")
            else:
                lines.append(f"      - {{ address: {backend_addr(b)} }}")
        nodes += 8 + (5 * count if all_weights else 3 * count + 2)
    return "\n".join(lines) + "\n", nodes


def write_settings(path: str, lay: Layout, frames: int, per_queue_v4: list, per_queue_v6: list,
                   max_frame: int) -> dict:
    q = lay.queues
    rx_desc, tx_desc, cache = 1024, 2048, 256
    # One mbuf per captured frame, plus every queue (two ports with Q RX + Q TX each), the
    # per-lcore caches (Q workers + main) and some slack.
    mbufs = frames + 2 * q * (rx_desc + tx_desc) + (q + 1) * cache + 4096
    data_room = 384 if max_frame + HEADROOM <= 384 else -(-(max_frame + HEADROOM) // 64) * 64
    v4_flows = max(1024, 2 * max(per_queue_v4))
    v6_flows = max(1024, 2 * max(per_queue_v6))
    mtu = max_frame - 14 + IPIP
    mtu = mtu if mtu > 1500 else None
    text = (
        "# Generated by bench/gen_pipeline.py: the pipeline benchmark's appliance settings.\n"
        "ports:\n"
        "  - { device: net_pcap0, role: uplink, interface: uplink }\n"
        "  - { device: net_null0, role: backend, interface: backend }\n"
        f"queues: {{ rx_descriptors: {rx_desc}, tx_descriptors: {tx_desc} }}\n"
        f"mempool: {{ mbufs: {mbufs}, cache: {cache}, data_room: {data_room} }}\n"
        + (f"mtu: {mtu}\n" if mtu else "")
        + f"flow_table: {{ ipv4_flows: {v4_flows}, ipv6_flows: {v6_flows} }}\n"
    )
    with open(path, "w") as f:
        f.write(text)
    # rte_mbuf (128) + data room + mempool object header/alignment (about 64).
    return {"mbufs": mbufs, "data_room": data_room, "mbuf_cache": cache, "rx_descriptors": rx_desc,
            "tx_descriptors": tx_desc, "mtu": mtu, "ipv4_flows_per_worker": v4_flows,
            "ipv6_flows_per_worker": v6_flows,
            "mempool_bytes_estimate": mbufs * (data_room + 192)}


def write_pcaps(paths: list, lay: Layout) -> dict:
    """Writes the captures; returns the counts. One pass, fields patched into per-template
    structs; both checksums summed from the field values."""
    n, q, nsvc = lay.flows, lay.queues, lay.services
    eth = mac(UPLINK_MAC) + mac(ROUTER_MAC)
    eth4, eth6 = eth + b"\x08\x00", eth + b"\x86\xdd"
    pattern = lay.size_pattern
    plen = len(pattern)
    # Templates by (pattern slot, flags), one table per family: the frame's struct, its capture
    # length, IP length field, ACK number and the constant parts of the checksum sums (the
    # per-flow fields are added to them in the loop, folded twice: the sums stay below 2^20).
    caps4 = [w - FCS for w in pattern]
    caps6 = [max(w - FCS, 74) for w in pattern]
    def tpl4(cap, flags):
        total = 40 if cap <= 60 else cap - 14  # a 64-byte frame: 40 bytes of IP + 6 of padding
        s = struct.Struct("!14sBBHHHBBHIIHHIIBBHHH%dx" % (cap - 54))
        ip_sum = 0x4500 + total + 0x4000 + (64 << 8 | 6)
        ack = 1 if flags & ACK else 0
        tcp_sum = 6 + (total - 20) + VIP_PORT + (ack >> 16) + (ack & 0xFFFF) + (0x5000 | flags) + 65535
        return s, cap, total, ack, ip_sum, tcp_sum
    def tpl6(cap, flags):
        plen6 = cap - 54
        s = struct.Struct("!14sIHBBQQQQHHIIBBHHH%dx" % (cap - 74))
        ack = 1 if flags & ACK else 0
        tcp_sum = (6 + plen6 + VIP_PORT + (ack >> 16) + (ack & 0xFFFF) + (0x5000 | flags) + 65535
                   + 0x2001 + 0x0DB8 + 0xC000 + CLIENT6_LO)
        return s, cap, plen6, ack, tcp_sum
    t4 = {(slot, f): tpl4(caps4[slot], f) for slot in range(plen) for f in (SYN, ACK)}
    t6 = {(slot, f): tpl6(caps6[slot], f) for slot in range(plen) for f in (SYN, ACK)}
    vip4 = [service_vip(k) for k in range(nsvc)]
    vip4_sum = [(v >> 16) + (v & 0xFFFF) for v in vip4]
    vip6 = [service_vip6(k) for k in range(nsvc)]
    vip6_hi = [v >> 64 for v in vip6]
    vip6_lo = [v & (1 << 64) - 1 for v in vip6]
    vip6_sum = [sum(v >> s & 0xFFFF for s in range(0, 128, 16)) for v in vip6]
    rec = struct.Struct("<IIII")
    rec_pack = rec.pack

    files = [open(p, "wb") for p in paths]
    for f in files:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    bufs = [[] for _ in range(q)]
    frames_q = [0] * q
    v4_q = [0] * q
    v6_q = [0] * q
    bytes_q = [0] * q
    by_size = {}
    by_region = [0] * 5  # r0..r3, none
    syns, v6n, v6m = lay.syns, lay.v6_count, lay.v6_mult
    spread = lay.spread
    shift = 32 - lay.prefix_len
    nprefixes = lay.prefixes
    mask22 = (1 << 22) - 1
    CHUNK = 1 << 16
    for start in range(0, n, CHUNK):
        for i in range(start, min(n, start + CHUNK)):
            flags = SYN if i < syns else ACK
            slot = (i // q) % plen  # each capture gets the whole pattern
            k = i % nsvc
            sport = 1024 + (i * 7919) % 64000
            seq = (i * 2654435761) & 0xFFFFFFFF
            seqw = (seq >> 16) + (seq & 0xFFFF)
            if v6n and (i * v6m) % n < v6n:
                s, cap, plen6, ack, tsum = t6[slot, flags]
                hi = CLIENT6_HI | i  # i < 2^24 fills bits 40..63 of the address
                t = tsum + vip6_sum[k] + (i >> 16) + (i & 0xFFFF) + sport + seqw
                t = (t & 0xFFFF) + (t >> 16)
                t = (t & 0xFFFF) + (t >> 16)
                fr = s.pack(eth6, 0x60000000, plen6, 6, 64, hi, CLIENT6_LO, vip6_hi[k], vip6_lo[k],
                            sport, VIP_PORT, seq, ack, 0x50, flags, 65535, t ^ 0xFFFF, 0)
                v6_q[i % q] += 1
            else:
                s, cap, total, ack, isum, tsum = t4[slot, flags]
                src = CLIENT_BASE + ((i * CLIENT_SPREAD) & mask22 if spread else i)
                srcw = (src >> 16) + (src & 0xFFFF)
                ident = i & 0xFFFF
                c = isum + vip4_sum[k] + srcw + ident
                c = (c & 0xFFFF) + (c >> 16)
                c = (c & 0xFFFF) + (c >> 16)
                t = tsum + vip4_sum[k] + srcw + sport + seqw
                t = (t & 0xFFFF) + (t >> 16)
                t = (t & 0xFFFF) + (t >> 16)
                fr = s.pack(eth4, 0x45, 0, total, ident, 0x4000, 64, 6, c ^ 0xFFFF, src, vip4[k],
                            sport, VIP_PORT, seq, ack, 0x50, flags, 65535, t ^ 0xFFFF, 0)
                v4_q[i % q] += 1
                if nprefixes:
                    j = (src - CLIENT_BASE) >> shift
                    by_region[j % 4 if j < nprefixes else 4] += 1
            qi = i % q
            b = bufs[qi]
            b.append(rec_pack(i // 1000000, i % 1000000, cap, cap))
            b.append(fr)
            bytes_q[qi] += cap
            by_size[cap] = by_size.get(cap, 0) + 1
        for qi in range(q):
            files[qi].write(b"".join(bufs[qi]))
            bufs[qi].clear()
    for qi, f in enumerate(files):
        frames_q[qi] = v4_q[qi] + v6_q[qi]
        f.close()
    return {
        "frames_per_pcap": frames_q, "ipv4_per_pcap": v4_q, "ipv6_per_pcap": v6_q,
        "bytes_per_pcap": bytes_q,
        "by_size": {str(cap + FCS): by_size[cap] for cap in sorted(by_size)},
        "by_region": ({f"r{r}": by_region[r] for r in range(4)} | {"none": by_region[4]}
                      if nprefixes else None),
    }


def generate(out_dir: str, flows: int = 1_000_000, syn_share: float = 1.0, backends: int = 1000,
             services: int = 1, prefixes: int = 0, ipv6_share: float = 0.0, sizes: str = "64",
             queues: int = 1) -> dict:
    """Writes policy.yaml, settings.yaml, the capture(s), geo.mmdb (with prefixes) and meta.json
    into out_dir; returns the metadata. Raises ValueError on a parameter out of range."""
    t0 = time.monotonic()
    errors = []
    if not 1 <= flows <= MAX_FLOWS:
        errors.append(f"flows {flows}: 1..{MAX_FLOWS}")
    if not 0.0 <= syn_share <= 1.0:
        errors.append(f"syn-share {syn_share}: 0..1")
    if not 1 <= backends <= 64000:
        errors.append(f"backends {backends}: 1..64000")
    if not 1 <= services <= 1000:
        errors.append(f"services {services}: 1..1000")
    if not 0 <= prefixes <= MAX_PREFIXES:
        errors.append(f"prefixes {prefixes}: 0..{MAX_PREFIXES}")
    if not 0.0 <= ipv6_share <= 1.0:
        errors.append(f"ipv6-share {ipv6_share}: 0..1")
    if not 1 <= queues <= 8:
        errors.append(f"queues {queues}: 1..8")
    elif 1 <= flows < queues:
        errors.append(f"flows {flows} < queues {queues}: net_pcap cannot replay an empty capture")
    try:
        parse_sizes(sizes)
    except ValueError as e:
        errors.append(str(e))
    if errors:
        raise ValueError("; ".join(errors))
    lay = Layout(flows, syn_share, backends, services, prefixes, ipv6_share, sizes, queues)

    os.makedirs(out_dir, exist_ok=True)
    pcaps = ["flows.pcap"] if queues == 1 else [f"flows-{qi}.pcap" for qi in range(queues)]
    # Captures of an earlier run with another --queues would be replayed by mistake.
    for old in os.listdir(out_dir):
        if old.startswith("flows") and old.endswith(".pcap") and old not in pcaps:
            os.remove(os.path.join(out_dir, old))
    geo = "geo.mmdb" if prefixes else None
    timings = {}
    t = time.monotonic()
    policy = write_policy(os.path.join(out_dir, "policy.yaml"), lay, geo)
    timings["policy_seconds"] = round(time.monotonic() - t, 3)

    if prefixes:
        t = time.monotonic()
        info = mmdb.write_blocks(
            os.path.join(out_dir, geo), CLIENT_BASE, CLIENT_LEN, lay.prefix_len, prefixes,
            [{"country": {"iso_code": c}} for c in COUNTRIES])
        timings["mmdb_seconds"] = round(time.monotonic() - t, 3)
        geo_meta = {"file": geo, "prefixes": prefixes, "prefix_len": lay.prefix_len,
                    "node_count": info["node_count"], "bytes": info["bytes"],
                    "countries": {f"r{r}": c for r, c in enumerate(COUNTRIES)}}
    else:
        stale = os.path.join(out_dir, "geo.mmdb")
        if os.path.exists(stale):
            os.remove(stale)
        geo_meta = None
    t = time.monotonic()
    counts = write_pcaps([os.path.join(out_dir, p) for p in pcaps], lay)
    timings["pcap_seconds"] = round(time.monotonic() - t, 3)
    max_frame = max(int(s) for s in counts["by_size"]) - FCS
    settings = write_settings(os.path.join(out_dir, "settings.yaml"), lay, flows,
                              counts["ipv4_per_pcap"], counts["ipv6_per_pcap"], max_frame)
    frames = sum(counts["frames_per_pcap"])
    captured = sum(counts["bytes_per_pcap"])
    timings["total_seconds"] = round(time.monotonic() - t0, 3)
    meta = {
        "generator": "bench/gen_pipeline.py",
        "params": {"flows": flows, "syn_share": syn_share, "backends": backends,
                   "services": services, "prefixes": prefixes, "ipv6_share": ipv6_share,
                   "sizes": sizes, "queues": queues},
        "files": {"policy": "policy.yaml", "settings": "settings.yaml", "geoip_database": geo,
                  "pcaps": pcaps, "meta": "meta.json"},
        "pcaps": pcaps,
        "geoip_database": geo,
        "frames": frames,
        "syn_frames": lay.syns,
        "ack_frames": flows - lay.syns,
        "ipv4_frames": sum(counts["ipv4_per_pcap"]),
        "ipv6_frames": sum(counts["ipv6_per_pcap"]),
        "frames_per_pcap": counts["frames_per_pcap"],
        "ipv4_frames_per_pcap": counts["ipv4_per_pcap"],
        "ipv6_frames_per_pcap": counts["ipv6_per_pcap"],
        "frames_by_wire_size": counts["by_size"],
        "size_pattern": [[w, n] for w, n in lay.sizes],
        # Captured: frame bytes in the pcaps (no FCS); wire: + 4 FCS per frame; line: + 20
        # (preamble, start delimiter, inter-frame gap), what a link's bit rate is spent on.
        "bytes_captured": captured,
        "bytes_captured_per_pcap": counts["bytes_per_pcap"],
        "bytes_on_wire": captured + FCS * frames,
        "bytes_on_line": captured + (FCS + 20) * frames,
        "mean_wire_frame": round((captured + FCS * frames) / frames, 2),
        "pcap_file_bytes": [os.path.getsize(os.path.join(out_dir, p)) for p in pcaps],
        "flows_by_region": counts["by_region"],
        "services": [{"name": name_of("bench", k), "vip": ip4(service_vip(k)),
                      "vip6": ip6(service_vip6(k)) if lay.v6_count else None,
                      "port": VIP_PORT, "pool": lay.pool_name(lay.route_pool(k))}
                     for k in range(min(services, 4))] + (["..."] if services > 4 else []),
        "pools": [{"name": lay.pool_name(p), "backends": lay.pool_sizes[p],
                   "maglev_size": lay.maglev_sizes[p]} for p in range(lay.pools)],
        "client_ranges": {"ipv4": "100.64.0.0/10", "ipv6": "2001:db8:c000::/40"},
        "geoip": geo_meta,
        "policy": policy,
        "settings": settings,
        "eal_vdev": "--vdev=net_pcap0," + ",".join(f"rx_pcap={os.path.join(out_dir, p)}" for p in pcaps)
                    + ",infinite_rx=1",
        "timings": timings,
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--flows", type=int, default=1_000_000, help="flows = frames, 1..4194304")
    p.add_argument("--syn-share", type=float, default=1.0, help="share of flows whose packet is a SYN (0..1)")
    p.add_argument("--backends", type=int, default=1000, help="1..64000")
    p.add_argument("--services", type=int, default=1, help="TCP services (VIPs), 1..1000")
    p.add_argument("--prefixes", type=int, default=0,
                   help="GeoIP prefixes in 4 regions (geo.mmdb), 0..1048576; 0: no regions")
    p.add_argument("--ipv6-share", type=float, default=0.0, help="share of IPv6 flows (0..1)")
    p.add_argument("--sizes", default="64", help="64, imix (64:576:1518 as 7:4:1) or e.g. 64x7,576x4,1498x1")
    p.add_argument("--queues", type=int, default=1, help="captures (one per worker), 1..8")
    a = p.parse_args()
    try:
        meta = generate(a.dir, flows=a.flows, syn_share=a.syn_share, backends=a.backends,
                        services=a.services, prefixes=a.prefixes, ipv6_share=a.ipv6_share,
                        sizes=a.sizes, queues=a.queues)
    except ValueError as e:
        p.error(str(e))
    print(f"{a.dir}: {meta['frames']} frames in {len(meta['pcaps'])} pcap(s), "
          f"{meta['bytes_captured']} bytes, {len(meta['pools'])} pool(s), "
          f"{meta['params']['prefixes']} geo prefixes; {meta['timings']['total_seconds']} s")


if __name__ == "__main__":
    main()
