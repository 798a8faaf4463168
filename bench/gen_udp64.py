#!/usr/bin/env python3
"""Writes a pcap of 64-byte (60 on the wire without FCS) IPv4/UDP frames with FLOWS distinct
source addresses and ports: the simplest benchmark traffic. Usage: gen_udp64.py OUT.pcap FLOWS"""
import struct
import sys


def checksum(b: bytes) -> int:
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(i: int) -> bytes:
    eth = bytes.fromhex("020000000001" "020000000002") + b"\x08\x00"
    src = bytes([10, 1 + (i >> 16) % 200, (i >> 8) & 0xFF, i & 0xFF])
    dst = bytes([203, 0, 113, 10])
    payload = bytes(18)
    udp = struct.pack("!HHHH", 1024 + i % 60000, 443, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return eth + ip + udp


def main() -> None:
    out, flows = sys.argv[1], int(sys.argv[2])
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            fr = frame(i)
            f.write(struct.pack("<IIII", i // 1000000, i % 1000000, len(fr), len(fr)))
            f.write(fr)


if __name__ == "__main__":
    main()
