#!/usr/bin/env python3
"""Userspace IPIP/GUE decapsulator for test backends whose kernel lacks ipip/fou.

Receives frames on IFACE with an AF_PACKET socket, keeps IPv4 packets carrying IPIP (proto 4),
IPv6-in-IPv4 (proto 41) or GUE (UDP to GUE_PORT, variant 0), strips the outer headers, and writes
the inner IP packet to a TUN device TUN, where the kernel receives it as if a tunnel device had
decapsulated it. Prints "ready" once listening, and a count of decapsulated packets on SIGTERM.

usage: decap.py IFACE TUN [GUE_PORT]
"""
import fcntl
import os
import signal
import socket
import struct
import sys

IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TUNSETIFF = 0x400454CA
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def inner_packet(ip: bytes, gue_port: int):
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    if ihl < 20 or total > len(ip) or total < ihl:
        return None
    proto = ip[9]
    payload = ip[ihl:total]
    if proto in (4, 41):
        return payload
    if proto == 17 and len(payload) >= 12:
        dport = struct.unpack("!H", payload[2:4])[0]
        if dport == gue_port and payload[8] >> 6 == 0:
            hlen = (payload[8] & 0x1F) * 4
            return payload[12 + hlen:]
    return None


def main() -> None:
    iface, tun_name = sys.argv[1], sys.argv[2]
    gue_port = int(sys.argv[3]) if len(sys.argv) > 3 else 6080
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", tun_name.encode(), IFF_TUN | IFF_NO_PI))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((iface, 0))
    count = 0

    def done(*_):
        print(f"decapsulated {count}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    print("ready", flush=True)
    while True:
        frame, addr = sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING or len(frame) < 14:
            continue
        inner = inner_packet(frame[14:], gue_port)
        if inner:
            os.write(tun, inner)
            count += 1


if __name__ == "__main__":
    main()
