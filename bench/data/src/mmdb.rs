//! A minimal MaxMind DB (format 2.0) writer for the benchmark's GeoIP databases: IPv4 only,
//! record size 32, records that are small maps of strings.
//!
//! Spec: <https://maxmind.github.io/MaxMind-DB/>. A file is the binary search tree (`node_count`
//! nodes of two records each), 16 zero bytes, the data section, then `\xab\xcd\xefMaxMind.com`
//! and the metadata map. A record below `node_count` points to a node, equal to it means "no
//! data", above it points into the data section (offset = record − `node_count` − 16).
//!
//! [`write_blocks`] builds the tree level by level as arrays (no per-prefix objects), so a
//! million blocks take a fraction of a second.

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// A value of the data section.
#[derive(Debug, Clone)]
pub enum Value {
    String(String),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
    Uint16(u16),
    Uint32(u32),
    Uint64(u64),
}

// Data section types (control byte: type << 5 | size; types above 7 are "extended").
const T_STRING: u8 = 2;
const T_UINT16: u8 = 5;
const T_UINT32: u8 = 6;
const T_MAP: u8 = 7;
const T_UINT64: u8 = 9;
const T_ARRAY: u8 = 11;

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (head, extra): (u8, Vec<u8>) = if size < 29 {
        (u8::try_from(size).unwrap(), Vec::new())
    } else if size < 29 + 256 {
        (29, vec![u8::try_from(size - 29).unwrap()])
    } else if size < 285 + 65536 {
        (
            30,
            u16::try_from(size - 285).unwrap().to_be_bytes().to_vec(),
        )
    } else {
        (
            31,
            u32::try_from(size - 65821).unwrap().to_be_bytes()[1..].to_vec(),
        )
    };
    if kind <= 7 {
        out.push(kind << 5 | head);
    } else {
        out.extend_from_slice(&[head, kind - 7]);
    }
    out.extend_from_slice(&extra);
}

fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends the encoding of `value`.
pub fn encode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => {
            control(out, T_STRING, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Map(entries) => {
            control(out, T_MAP, entries.len());
            for (k, v) in entries {
                encode(out, &Value::String(k.clone()));
                encode(out, v);
            }
        }
        Value::Array(items) => {
            control(out, T_ARRAY, items.len());
            for v in items {
                encode(out, v);
            }
        }
        Value::Uint16(v) => uint(out, T_UINT16, u64::from(*v)),
        Value::Uint32(v) => uint(out, T_UINT32, u64::from(*v)),
        Value::Uint64(v) => uint(out, T_UINT64, *v),
    }
}

/// What [`write_blocks`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub node_count: u32,
    pub bytes: u64,
}

/// Writes an IPv4 database of the `count` aligned `/block_len` blocks that start at `base` (the
/// network `base/base_len`); block j maps to `records[j % records.len()]`.
///
/// # Errors
/// A bad layout (`InvalidInput`), or the file cannot be written.
pub fn write_blocks(
    path: &Path,
    (base, base_len): (u32, u32),
    block_len: u32,
    count: u32,
    records: &[Value],
) -> io::Result<Written> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if !(1..=32).contains(&block_len) || base_len > block_len || records.is_empty() {
        return Err(bad("bad block layout"));
    }
    let k = block_len - base_len;
    if count == 0 || u64::from(count) > 1u64 << k {
        return Err(bad("bad block count"));
    }
    if base_len < 32 && base & (u32::MAX >> base_len) != 0 {
        return Err(bad("base has host bits set"));
    }

    // Node counts per tree level (depth t = 0 .. block_len - 1): one node per level on the
    // path down to the base network, then in the subtree level d has ceil(count / 2^(k - d))
    // nodes (those covering at least one of the blocks 0 .. count - 1).
    let mut sizes: Vec<u32> = vec![1; base_len as usize];
    sizes.extend((0..k).map(|d| count.div_ceil(1 << (k - d))));
    let mut firsts = vec![0u32; block_len as usize];
    for t in 1..block_len as usize {
        firsts[t] = firsts[t - 1] + sizes[t - 1];
    }
    let node_count = firsts[block_len as usize - 1] + sizes[block_len as usize - 1];
    let empty = node_count;

    // Data section: one encoded record per distinct value.
    let mut data = Vec::new();
    let mut pointers = Vec::new();
    for r in records {
        pointers.push(
            u32::try_from(u64::from(node_count) + 16 + data.len() as u64)
                .map_err(|_| bad("database too large for record size 32"))?,
        );
        encode(&mut data, r);
    }

    let mut tree: Vec<u32> = Vec::with_capacity(2 * node_count as usize);
    for t in 0..block_len {
        let last = t == block_len - 1;
        let tu = t as usize;
        if t < base_len {
            // The path: the child on the base network's side, nothing on the other.
            let child = if last { pointers[0] } else { firsts[tu + 1] };
            if base >> (31 - t) & 1 == 1 {
                tree.extend([empty, child]);
            } else {
                tree.extend([child, empty]);
            }
        } else if !last {
            // Children of node m are nodes 2m and 2m + 1 of the next level: consecutive ids.
            let (n, next) = (sizes[tu], firsts[tu + 1]);
            let start = tree.len();
            tree.extend(next..next + 2 * n);
            if 2 * n > sizes[tu + 1] {
                tree[start + 2 * n as usize - 1] = empty;
            }
        } else {
            // Leaves: block j is child j of this level.
            let n = 2 * sizes[tu] as usize;
            tree.extend((0..n).map(|j| {
                if j < count as usize {
                    pointers[j % pointers.len()]
                } else {
                    empty
                }
            }));
        }
    }
    assert_eq!(tree.len(), 2 * node_count as usize, "tree size mismatch");

    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = |v: &str| Value::String(v.to_string());
    let metadata = Value::Map(vec![
        ("binary_format_major_version".into(), Value::Uint16(2)),
        ("binary_format_minor_version".into(), Value::Uint16(0)),
        ("build_epoch".into(), Value::Uint64(epoch)),
        ("database_type".into(), s("Switchyard-Bench-Country")),
        (
            "description".into(),
            Value::Map(vec![(
                "en".into(),
                s("Switchyard benchmark GeoIP database"),
            )]),
        ),
        ("ip_version".into(), Value::Uint16(4)),
        ("languages".into(), Value::Array(vec![s("en")])),
        ("node_count".into(), Value::Uint32(node_count)),
        ("record_size".into(), Value::Uint16(32)),
    ]);
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0u64;
    for record in &tree {
        out.write_all(&record.to_be_bytes())?;
    }
    bytes += 4 * tree.len() as u64;
    let mut tail = vec![0u8; 16];
    tail.extend_from_slice(&data);
    tail.extend_from_slice(METADATA_MARKER);
    encode(&mut tail, &metadata);
    out.write_all(&tail)?;
    out.flush()?;
    bytes += tail.len() as u64;
    Ok(Written { node_count, bytes })
}
