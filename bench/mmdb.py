"""A minimal MaxMind DB (format 2.0) writer, stdlib only, for benchmark GeoIP databases.

Spec: https://maxmind.github.io/MaxMind-DB/. A file is the binary search tree (node_count nodes
of two records each), 16 zero bytes, the data section, then b"\\xab\\xcd\\xefMaxMind.com" and the
metadata map. A record below node_count points to a node, equal to node_count means "no data",
above it points into the data section (offset = record - node_count - 16).

write_blocks() writes an IPv4 database (ip_version 4) of `count` consecutive aligned blocks of
length `block_len` starting at `base`/`base_len`, block j carrying records[j % len(records)].
The tree is built level by level as arrays (no per-prefix Python objects), so a million blocks
take about a second.
"""
import struct
import sys
import time
from array import array

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"

# Data section types (control byte: type << 5 | size; types above 7 are "extended").
T_POINTER, T_STRING, T_DOUBLE, T_BYTES, T_UINT16, T_UINT32, T_MAP = 1, 2, 3, 4, 5, 6, 7
T_INT32, T_UINT64, T_UINT128, T_ARRAY, T_BOOLEAN = 8, 9, 10, 11, 14


class Uint:
    """An unsigned integer of an explicit MaxMind type (T_UINT16, T_UINT32, T_UINT64...)."""

    def __init__(self, kind: int, value: int):
        self.kind, self.value = kind, value


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, extra = 30, struct.pack(">H", size - 285)
    else:
        head, extra = 31, struct.pack(">I", size - 65821)[1:]
    if kind <= 7:
        return bytes([kind << 5 | head]) + extra
    return bytes([head, kind - 7]) + extra


def encode(value) -> bytes:
    """One value of the data section: dict → map, str → UTF-8 string, list → array,
    bool → boolean, Uint → that unsigned type, int → uint32 (or uint64 when larger)."""
    if isinstance(value, dict):
        out = [_control(T_MAP, len(value))]
        for k, v in value.items():
            out += [encode(str(k)), encode(v)]
        return b"".join(out)
    if isinstance(value, str):
        b = value.encode()
        return _control(T_STRING, len(b)) + b
    if isinstance(value, (list, tuple)):
        return _control(T_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, bool):
        return _control(T_BOOLEAN, int(value))
    if isinstance(value, int):
        value = Uint(T_UINT32 if value < 1 << 32 else T_UINT64, value)
    if isinstance(value, Uint):
        if value.value < 0:
            raise ValueError("negative integer")
        b = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _control(value.kind, len(b)) + b
    raise TypeError(f"cannot encode {type(value).__name__}")


def write_blocks(path: str, base: int, base_len: int, block_len: int, count: int, records: list,
                 description: str = "Switchyard benchmark GeoIP database",
                 database_type: str = "Switchyard-Bench-Country", record_size: int = 32) -> dict:
    """Writes an IPv4 MaxMind DB holding the `count` aligned /`block_len` blocks that start at
    `base` (a host-order int inside the /`base_len` network `base`); block j maps to
    records[j % len(records)]. Returns {"node_count", "bytes", "seconds"}."""
    t0 = time.monotonic()
    if record_size != 32:
        raise ValueError("only record_size 32 is implemented")
    k = block_len - base_len
    if not (1 <= block_len <= 32 and 0 <= base_len <= block_len and 1 <= count <= 1 << k):
        raise ValueError("bad block layout")
    if base & ((1 << (32 - base_len)) - 1 if base_len < 32 else 0):
        raise ValueError("base has host bits set")
    if not records:
        raise ValueError("no records")

    # Node counts per tree level (depth t = 0 .. block_len - 1): one node per level on the path
    # down to the base network, then in the subtree level d has ceil(count / 2^(k - d)) nodes
    # (those covering at least one of the blocks 0 .. count - 1).
    sizes = [1] * base_len + [-(-count // (1 << (k - d))) for d in range(k)]
    firsts = [0] * block_len
    for t in range(1, block_len):
        firsts[t] = firsts[t - 1] + sizes[t - 1]
    node_count = firsts[-1] + sizes[-1]
    empty = node_count

    # Data section: one encoded record per distinct value.
    data = []
    pointers = []
    offset = 0
    for r in records:
        b = encode(r)
        pointers.append(node_count + 16 + offset)
        data.append(b)
        offset += len(b)
    if pointers[-1] >= 1 << 32:
        raise ValueError("database too large for record_size 32")

    tree = array("I")
    if tree.itemsize != 4:
        raise RuntimeError("array('I') is not 32-bit here")
    for t in range(block_len):
        last = t == block_len - 1
        if t < base_len:
            # The path: the child on the base network's side, nothing on the other.
            child = pointers[0] if last else firsts[t + 1]
            bit = base >> (31 - t) & 1
            tree.extend((empty, child) if bit else (child, empty))
        elif not last:
            # Children of node m are nodes 2m and 2m + 1 of the next level: consecutive ids.
            n, nxt = sizes[t], firsts[t + 1]
            level = array("I", range(nxt, nxt + 2 * n))
            if 2 * n > sizes[t + 1]:
                level[-1] = empty
            tree.extend(level)
        else:
            # Leaves: block j is child j of this level.
            n = 2 * sizes[t]
            pattern = array("I", pointers)
            level = pattern * (n // len(pointers) + 1)
            del level[n:]
            for j in range(count, n):
                level[j] = empty
            tree.extend(level)
    if len(tree) != 2 * node_count:
        raise AssertionError("tree size mismatch")
    if sys.byteorder == "little":
        tree.byteswap()

    metadata = {
        "binary_format_major_version": Uint(T_UINT16, 2),
        "binary_format_minor_version": Uint(T_UINT16, 0),
        "build_epoch": Uint(T_UINT64, int(time.time())),
        "database_type": database_type,
        "description": {"en": description},
        "ip_version": Uint(T_UINT16, 4),
        "languages": ["en"],
        "node_count": Uint(T_UINT32, node_count),
        "record_size": Uint(T_UINT16, record_size),
    }
    with open(path, "wb") as f:
        f.write(tree.tobytes())
        f.write(bytes(16))
        f.write(b"".join(data))
        f.write(METADATA_MARKER)
        f.write(encode(metadata))
        size = f.tell()
    return {"node_count": node_count, "bytes": size, "seconds": round(time.monotonic() - t0, 3)}
