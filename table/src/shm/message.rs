//! Fixed 64-byte ring messages and their validated decoding.
//!
//! A message on the wire is a [`RawMessage`]: `kind: u32`, `len: u32` (payload bytes used),
//! `seq: u64` (the ring position it was written at) and 48 payload bytes. Payload fields are
//! little-endian at fixed offsets:
//!
//! ```text
//! kind  name      direction      len  payload
//! 1     Install   control→data   24   generation u64 @0, size u64 @8, checksum u64 @16
//! 2     Ack       data→control   12   generation u64 @0, worker u32 @8
//! 3     Live      data→control    8   generation u64 @0
//! 4     Rejected  data→control   44   generation u64 @0, code u32 @8, name [u8; 32] @12
//! 5     Event     data→control   20   a u64 @0, b u64 @8, kind u32 @16
//! 6     Trace     control→data   44   query u32 @0, family u8 @6, proto u8 @7, src [u8; 16] @8,
//!                                     dst [u8; 16] @24, sport u16 @40, dport u16 @42
//! 7     Sample    control→data   32   query u32 @0, limit u16 @4, family u8 @6 (0: any VIP),
//!                                     proto u8 @7 (0: any), vip [u8; 16] @8, port u16 @24
//!                                     (0: any), backend u32 @28 (stable id, 0: any)
//! 8     Flow      data→control   48   query u32 @0, worker u8 @4, state u8 @5, family u8 @6,
//!                                     proto u8 @7, src @8, dst @24, sport @40, dport @42,
//!                                     backend u32 @44 (stable id)
//! 9     Traced    data→control   40   query u32 @0, worker u16 @4, outcome u8 @6, flags u8 @7,
//!                                     counter u32 @8, service u32 @12, route u32 @16,
//!                                     pool u32 @20, backend u32 @24, held u32 @28,
//!                                     generation u64 @32
//! 10    Done      data→control   24   query u32 @0, worker u32 @4, matched u64 @8,
//!                                     scanned u64 @16
//! 11    Capture   control→data    4   capture u32 @0: start the capture described by the file
//!                                     `switchyard-<instance>.capture-<capture>` (see `capture`)
//! 12    Dropped   data→control   44   counter u32 @0, worker u16 @4, family u8 @6, proto u8 @7,
//!                                     src @8, dst @24, sport @40, dport @42: a sampled drop
//! ```
//!
//! Queries (6, 7) ask every worker about its connection table: `Trace` what it does with a
//! given 5-tuple (one `Traced` per worker), `Sample` up to `limit` live flows matching the
//! filters (`Flow` messages); each worker ends its answer with `Done`. Addresses are 16 bytes;
//! IPv4 sits in the first four (family 4).
//!
//! Bytes past `len` must be zero. [`Message::decode`] checks the kind, the exact length and the
//! padding, and reads each field from bytes — no transmute of untrusted bytes into an enum.

use bytemuck::{Pod, Zeroable};

use super::layout::MESSAGE_SIZE;
use crate::generation::{fixed_name, fixed_str, DecodeError};

/// Bytes of a reason name carried in a `Rejected` message.
pub const REASON_NAME_LEN: usize = 32;

/// Payload bytes of one message.
pub const PAYLOAD_SIZE: usize = 48;

/// A message as it sits in a ring slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RawMessage {
    pub kind: u32,
    pub len: u32,
    pub seq: u64,
    pub payload: [u8; PAYLOAD_SIZE],
}

const _: () = assert!(std::mem::size_of::<RawMessage>() == MESSAGE_SIZE);
const _: () = assert!(std::mem::align_of::<RawMessage>() == 8);

pub const KIND_INSTALL: u32 = 1;
pub const KIND_ACK: u32 = 2;
pub const KIND_LIVE: u32 = 3;
pub const KIND_REJECTED: u32 = 4;
pub const KIND_EVENT: u32 = 5;
pub const KIND_TRACE: u32 = 6;
pub const KIND_SAMPLE: u32 = 7;
pub const KIND_FLOW: u32 = 8;
pub const KIND_TRACED: u32 = 9;
pub const KIND_DONE: u32 = 10;
pub const KIND_CAPTURE: u32 = 11;
pub const KIND_DROPPED: u32 = 12;

/// `Event` kinds (the `kind` field of [`Message::Event`]).
/// A port's link went down: `a` = DPDK port id, `b` = link changes seen on it so far.
pub const EVENT_LINK_DOWN: u32 = 1;
/// A port's link came up: `a` = DPDK port id, `b` = speed in Mbps (0: unknown).
pub const EVENT_LINK_UP: u32 = 2;

/// A 5-tuple as queries and answers carry it: client → VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowTuple {
    /// 4 or 6.
    pub family: u8,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

impl FlowTuple {
    pub fn addr(&self, a: &[u8; 16]) -> std::net::IpAddr {
        if self.family == 6 {
            std::net::IpAddr::from(*a)
        } else {
            std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        }
    }

    /// 16 address bytes of `ip` (IPv4 in the first four) and its family.
    pub fn addr_bytes(ip: std::net::IpAddr) -> ([u8; 16], u8) {
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (b, 4)
            }
            std::net::IpAddr::V6(v6) => (v6.octets(), 6),
        }
    }

    fn put(&self, p: &mut [u8; PAYLOAD_SIZE]) {
        p[6] = self.family;
        p[7] = self.proto;
        put(p, 8, &self.src);
        put(p, 24, &self.dst);
        put(p, 40, &self.sport.to_le_bytes());
        put(p, 42, &self.dport.to_le_bytes());
    }

    fn get(p: &[u8; PAYLOAD_SIZE]) -> Self {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&p[8..24]);
        dst.copy_from_slice(&p[24..40]);
        Self {
            family: p[6],
            proto: p[7],
            src,
            dst,
            sport: get_u16(p, 40),
            dport: get_u16(p, 42),
        }
    }
}

/// What a worker does with a traced 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Traced {
    pub query: u32,
    pub worker: u16,
    /// [`TRACE_FORWARD`], [`TRACE_DROP`] or [`TRACE_LOCAL`].
    pub outcome: u8,
    /// [`TRACE_CANARY`], [`TRACE_FALLBACK`], [`TRACE_SPILL`], [`TRACE_HELD`].
    pub flags: u8,
    /// Index of the data plane's counter that names the reason (its drop counter, or the
    /// counter the forwarded packet counts under), in the segment's counter-name order.
    pub counter: u32,
    /// Service, route and pool indices in the generation (`u32::MAX`: none).
    pub service: u32,
    pub route: u32,
    pub pool: u32,
    /// Stable id of the backend a new flow would get (0: none).
    pub backend: u32,
    /// Stable id of the backend this worker's connection table holds for the flow (0: none).
    pub held: u32,
    /// The generation the worker answered from.
    pub generation: u64,
}

pub const TRACE_FORWARD: u8 = 1;
pub const TRACE_DROP: u8 = 2;
pub const TRACE_LOCAL: u8 = 3;
pub const TRACE_CANARY: u8 = 1;
pub const TRACE_FALLBACK: u8 = 2;
pub const TRACE_SPILL: u8 = 4;
pub const TRACE_HELD: u8 = 8;

/// A `Sample` query's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sample {
    pub query: u32,
    /// Flows per worker at most.
    pub limit: u16,
    /// 0: any VIP; else the family of `vip`.
    pub family: u8,
    /// 0: any protocol.
    pub proto: u8,
    pub vip: [u8; 16],
    /// 0: any port.
    pub port: u16,
    /// Stable backend id; 0: any.
    pub backend: u32,
}

/// Which way a message travels; each ring accepts one direction only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ControlToData,
    DataToControl,
}

/// "Install generation N": its blob is the file `switchyard-<instance>.gen-<N>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Install {
    pub generation: u64,
    /// Bytes in the blob file.
    pub size: u64,
    /// The blob header's xxh3 checksum.
    pub checksum: u64,
}

/// A decoded, validated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    Install(Install),
    /// Worker `worker` runs `generation`.
    Ack {
        worker: u32,
        generation: u64,
    },
    /// Every worker runs `generation`.
    Live {
        generation: u64,
    },
    /// The data plane refused `generation`; the previous one stays live.
    Rejected {
        generation: u64,
        /// A [`RejectReason`] code (unknown codes from a newer peer are kept as they are).
        code: u32,
        /// The reason's short snake_case name, NUL-padded.
        name: [u8; REASON_NAME_LEN],
    },
    /// A data-plane event for the control plane's event export (kinds defined later).
    Event {
        kind: u32,
        a: u64,
        b: u64,
    },
    /// Ask every worker what it does with this 5-tuple.
    Trace {
        query: u32,
        flow: FlowTuple,
    },
    /// Ask every worker for live flows matching the filters.
    Sample(Sample),
    /// One live flow of a worker's connection table.
    Flow {
        query: u32,
        worker: u8,
        /// The connection-table state (`FlowState` as a number).
        state: u8,
        flow: FlowTuple,
        backend: u32,
    },
    /// A worker's answer to a `Trace`.
    Traced(Traced),
    /// A worker finished answering `query`.
    Done {
        query: u32,
        worker: u32,
        matched: u64,
        scanned: u64,
    },
    /// Start the capture of file `switchyard-<instance>.capture-<capture>`.
    Capture {
        capture: u32,
    },
    /// A sampled drop: the packet's 5-tuple and the index of its drop counter.
    Dropped {
        counter: u32,
        worker: u16,
        flow: FlowTuple,
    },
}

/// Why a received message was refused. Each variant has a stable counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageError {
    UnknownKind,
    BadLength,
    DirtyPadding,
    WrongDirection,
}

impl MessageError {
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownKind => "unknown_kind",
            Self::BadLength => "bad_length",
            Self::DirtyPadding => "dirty_padding",
            Self::WrongDirection => "wrong_direction",
        }
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for MessageError {}

fn get_u64(p: &[u8; PAYLOAD_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn get_u32(p: &[u8; PAYLOAD_SIZE], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

fn get_u16(p: &[u8; PAYLOAD_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

fn put(p: &mut [u8; PAYLOAD_SIZE], at: usize, bytes: &[u8]) {
    p[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Message {
    pub fn kind(&self) -> u32 {
        match self {
            Self::Install(_) => KIND_INSTALL,
            Self::Ack { .. } => KIND_ACK,
            Self::Live { .. } => KIND_LIVE,
            Self::Rejected { .. } => KIND_REJECTED,
            Self::Event { .. } => KIND_EVENT,
            Self::Trace { .. } => KIND_TRACE,
            Self::Sample(_) => KIND_SAMPLE,
            Self::Flow { .. } => KIND_FLOW,
            Self::Traced(_) => KIND_TRACED,
            Self::Done { .. } => KIND_DONE,
            Self::Capture { .. } => KIND_CAPTURE,
            Self::Dropped { .. } => KIND_DROPPED,
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Self::Install(_) | Self::Trace { .. } | Self::Sample(_) | Self::Capture { .. } => {
                Direction::ControlToData
            }
            _ => Direction::DataToControl,
        }
    }

    /// A `Rejected` message for `generation` with `reason`.
    pub fn rejected(generation: u64, reason: RejectReason) -> Self {
        Self::Rejected {
            generation,
            code: reason.code(),
            name: fixed_name(reason.name()),
        }
    }

    /// The payload length a kind must carry, or `None` for an unknown kind.
    pub fn payload_len(kind: u32) -> Option<u32> {
        Some(match kind {
            KIND_INSTALL => 24,
            KIND_ACK => 12,
            KIND_LIVE => 8,
            KIND_REJECTED => 44,
            KIND_EVENT => 20,
            KIND_TRACE => 44,
            KIND_SAMPLE => 32,
            KIND_FLOW => 48,
            KIND_TRACED => 40,
            KIND_DONE => 24,
            KIND_CAPTURE => 4,
            KIND_DROPPED => 44,
            _ => return None,
        })
    }

    /// Lays the message out for ring position `seq`.
    pub fn encode(&self, seq: u64) -> RawMessage {
        let mut p = [0u8; PAYLOAD_SIZE];
        match *self {
            Self::Install(i) => {
                put(&mut p, 0, &i.generation.to_le_bytes());
                put(&mut p, 8, &i.size.to_le_bytes());
                put(&mut p, 16, &i.checksum.to_le_bytes());
            }
            Self::Ack { worker, generation } => {
                put(&mut p, 0, &generation.to_le_bytes());
                put(&mut p, 8, &worker.to_le_bytes());
            }
            Self::Live { generation } => put(&mut p, 0, &generation.to_le_bytes()),
            Self::Rejected {
                generation,
                code,
                name,
            } => {
                put(&mut p, 0, &generation.to_le_bytes());
                put(&mut p, 8, &code.to_le_bytes());
                put(&mut p, 12, &name);
            }
            Self::Event { kind, a, b } => {
                put(&mut p, 0, &a.to_le_bytes());
                put(&mut p, 8, &b.to_le_bytes());
                put(&mut p, 16, &kind.to_le_bytes());
            }
            Self::Trace { query, flow } => {
                put(&mut p, 0, &query.to_le_bytes());
                flow.put(&mut p);
            }
            Self::Sample(s) => {
                put(&mut p, 0, &s.query.to_le_bytes());
                put(&mut p, 4, &s.limit.to_le_bytes());
                p[6] = s.family;
                p[7] = s.proto;
                put(&mut p, 8, &s.vip);
                put(&mut p, 24, &s.port.to_le_bytes());
                put(&mut p, 28, &s.backend.to_le_bytes());
            }
            Self::Flow {
                query,
                worker,
                state,
                flow,
                backend,
            } => {
                put(&mut p, 0, &query.to_le_bytes());
                flow.put(&mut p);
                p[4] = worker;
                p[5] = state;
                put(&mut p, 44, &backend.to_le_bytes());
            }
            Self::Traced(t) => {
                put(&mut p, 0, &t.query.to_le_bytes());
                put(&mut p, 4, &t.worker.to_le_bytes());
                p[6] = t.outcome;
                p[7] = t.flags;
                for (at, v) in [
                    (8, t.counter),
                    (12, t.service),
                    (16, t.route),
                    (20, t.pool),
                    (24, t.backend),
                    (28, t.held),
                ] {
                    put(&mut p, at, &v.to_le_bytes());
                }
                put(&mut p, 32, &t.generation.to_le_bytes());
            }
            Self::Done {
                query,
                worker,
                matched,
                scanned,
            } => {
                put(&mut p, 0, &query.to_le_bytes());
                put(&mut p, 4, &worker.to_le_bytes());
                put(&mut p, 8, &matched.to_le_bytes());
                put(&mut p, 16, &scanned.to_le_bytes());
            }
            Self::Capture { capture } => put(&mut p, 0, &capture.to_le_bytes()),
            Self::Dropped {
                counter,
                worker,
                flow,
            } => {
                put(&mut p, 0, &counter.to_le_bytes());
                flow.put(&mut p);
                put(&mut p, 4, &worker.to_le_bytes());
            }
        }
        let kind = self.kind();
        RawMessage {
            kind,
            len: Self::payload_len(kind).unwrap_or(0),
            seq,
            payload: p,
        }
    }

    /// Validates an untrusted raw message: known kind, exact length, zero padding.
    pub fn decode(raw: &RawMessage) -> Result<Self, MessageError> {
        let len = Self::payload_len(raw.kind).ok_or(MessageError::UnknownKind)?;
        if raw.len != len {
            return Err(MessageError::BadLength);
        }
        let used = usize::try_from(len).map_err(|_| MessageError::BadLength)?;
        if raw.payload[used..].iter().any(|&b| b != 0) {
            return Err(MessageError::DirtyPadding);
        }
        let p = &raw.payload;
        Ok(match raw.kind {
            KIND_INSTALL => Self::Install(Install {
                generation: get_u64(p, 0),
                size: get_u64(p, 8),
                checksum: get_u64(p, 16),
            }),
            KIND_ACK => Self::Ack {
                generation: get_u64(p, 0),
                worker: get_u32(p, 8),
            },
            KIND_LIVE => Self::Live {
                generation: get_u64(p, 0),
            },
            KIND_REJECTED => {
                let mut name = [0u8; REASON_NAME_LEN];
                name.copy_from_slice(&p[12..12 + REASON_NAME_LEN]);
                Self::Rejected {
                    generation: get_u64(p, 0),
                    code: get_u32(p, 8),
                    name,
                }
            }
            KIND_EVENT => Self::Event {
                a: get_u64(p, 0),
                b: get_u64(p, 8),
                kind: get_u32(p, 16),
            },
            KIND_TRACE => {
                // Bytes 4..6 are reserved: zero.
                if p[4] != 0 || p[5] != 0 {
                    return Err(MessageError::DirtyPadding);
                }
                Self::Trace {
                    query: get_u32(p, 0),
                    flow: FlowTuple::get(p),
                }
            }
            KIND_SAMPLE => {
                if p[26] != 0 || p[27] != 0 {
                    return Err(MessageError::DirtyPadding);
                }
                let mut vip = [0u8; 16];
                vip.copy_from_slice(&p[8..24]);
                Self::Sample(Sample {
                    query: get_u32(p, 0),
                    limit: get_u16(p, 4),
                    family: p[6],
                    proto: p[7],
                    vip,
                    port: get_u16(p, 24),
                    backend: get_u32(p, 28),
                })
            }
            KIND_FLOW => Self::Flow {
                query: get_u32(p, 0),
                worker: p[4],
                state: p[5],
                flow: FlowTuple::get(p),
                backend: get_u32(p, 44),
            },
            KIND_TRACED => Self::Traced(Traced {
                query: get_u32(p, 0),
                worker: get_u16(p, 4),
                outcome: p[6],
                flags: p[7],
                counter: get_u32(p, 8),
                service: get_u32(p, 12),
                route: get_u32(p, 16),
                pool: get_u32(p, 20),
                backend: get_u32(p, 24),
                held: get_u32(p, 28),
                generation: get_u64(p, 32),
            }),
            KIND_DONE => Self::Done {
                query: get_u32(p, 0),
                worker: get_u32(p, 4),
                matched: get_u64(p, 8),
                scanned: get_u64(p, 16),
            },
            KIND_CAPTURE => Self::Capture {
                capture: get_u32(p, 0),
            },
            KIND_DROPPED => Self::Dropped {
                counter: get_u32(p, 0),
                worker: get_u16(p, 4),
                flow: FlowTuple::get(p),
            },
            _ => return Err(MessageError::UnknownKind),
        })
    }

    /// For `Rejected`: the reason's name as sent (lossy on bad UTF-8).
    pub fn reason_name(&self) -> Option<&str> {
        match self {
            Self::Rejected { name, .. } => Some(fixed_str(name)),
            _ => None,
        }
    }
}

/// Why the data plane refused a generation. Codes 1–31 mirror [`DecodeError`] (same names as
/// [`DecodeError::name`]); codes from 32 on are checks the data plane makes around the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooShort,
    BadMagic,
    AbiVersion,
    BadSize,
    BadChecksum,
    BadSection,
    MissingSection,
    BadReference,
    BadLpm,
    /// The blob file does not exist.
    BlobMissing,
    /// The blob file could not be opened or read (or is not a regular file).
    BlobUnreadable,
    /// The blob file is larger than the data plane accepts.
    BlobTooLarge,
    /// The file's size differs from the `Install` message.
    SizeMismatch,
    /// The blob's checksum differs from the `Install` message.
    ChecksumMismatch,
    /// The blob's generation number differs from the `Install` message.
    GenerationMismatch,
    /// Older than the generation already installed.
    Stale,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        Self::TooShort,
        Self::BadMagic,
        Self::AbiVersion,
        Self::BadSize,
        Self::BadChecksum,
        Self::BadSection,
        Self::MissingSection,
        Self::BadReference,
        Self::BadLpm,
        Self::BlobMissing,
        Self::BlobUnreadable,
        Self::BlobTooLarge,
        Self::SizeMismatch,
        Self::ChecksumMismatch,
        Self::GenerationMismatch,
        Self::Stale,
    ];

    pub fn code(self) -> u32 {
        match self {
            Self::TooShort => 1,
            Self::BadMagic => 2,
            Self::AbiVersion => 3,
            Self::BadSize => 4,
            Self::BadChecksum => 5,
            Self::BadSection => 6,
            Self::MissingSection => 7,
            Self::BadReference => 8,
            Self::BadLpm => 9,
            Self::BlobMissing => 32,
            Self::BlobUnreadable => 33,
            Self::BlobTooLarge => 34,
            Self::SizeMismatch => 35,
            Self::ChecksumMismatch => 36,
            Self::GenerationMismatch => 37,
            Self::Stale => 38,
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A stable snake_case name for counters and the `Rejected` message.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadMagic => "bad_magic",
            Self::AbiVersion => "abi_version",
            Self::BadSize => "bad_size",
            Self::BadChecksum => "bad_checksum",
            Self::BadSection => "bad_section",
            Self::MissingSection => "missing_section",
            Self::BadReference => "bad_reference",
            Self::BadLpm => "bad_lpm",
            Self::BlobMissing => "blob_missing",
            Self::BlobUnreadable => "blob_unreadable",
            Self::BlobTooLarge => "blob_too_large",
            Self::SizeMismatch => "size_mismatch",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::GenerationMismatch => "generation_mismatch",
            Self::Stale => "stale",
        }
    }

    pub fn from_decode(e: &DecodeError) -> Self {
        match e {
            DecodeError::TooShort => Self::TooShort,
            DecodeError::BadMagic => Self::BadMagic,
            DecodeError::AbiVersion { .. } => Self::AbiVersion,
            DecodeError::BadSize => Self::BadSize,
            DecodeError::BadChecksum => Self::BadChecksum,
            DecodeError::BadSection { .. } => Self::BadSection,
            DecodeError::MissingSection(_) => Self::MissingSection,
            DecodeError::BadReference { .. } => Self::BadReference,
            DecodeError::BadLpm { .. } => Self::BadLpm,
        }
    }

    /// Index into per-reason counter arrays (`0..ALL.len()`).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Install(Install {
                generation: 7,
                size: 4096,
                checksum: 0xdead_beef_cafe_f00d,
            }),
            Message::Ack {
                worker: 63,
                generation: u64::MAX - 1,
            },
            Message::Live { generation: 1 },
            Message::rejected(9, RejectReason::BadChecksum),
            Message::Event {
                kind: 3,
                a: 1,
                b: u64::MAX,
            },
            Message::Trace {
                query: 7,
                flow: tuple(),
            },
            Message::Sample(Sample {
                query: 8,
                limit: 500,
                family: 4,
                proto: 6,
                vip: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                port: 8000,
                backend: 12,
            }),
            Message::Flow {
                query: 8,
                worker: 3,
                state: 2,
                flow: tuple(),
                backend: u32::MAX,
            },
            Message::Traced(Traced {
                query: 7,
                worker: 1,
                outcome: TRACE_FORWARD,
                flags: TRACE_CANARY | TRACE_HELD,
                counter: 5,
                service: 1,
                route: 2,
                pool: 3,
                backend: 4,
                held: 4,
                generation: 99,
            }),
            Message::Done {
                query: 8,
                worker: 1,
                matched: 500,
                scanned: 1 << 40,
            },
            Message::Capture { capture: 17 },
            Message::Dropped {
                counter: 42,
                worker: 3,
                flow: tuple(),
            },
        ]
    }

    fn tuple() -> FlowTuple {
        FlowTuple {
            family: 6,
            proto: 6,
            src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
            sport: 40000,
            dport: 443,
        }
    }

    #[test]
    fn query_reserved_bytes_must_be_zero() {
        let mut raw = Message::Trace {
            query: 1,
            flow: tuple(),
        }
        .encode(0);
        raw.payload[4] = 1;
        assert_eq!(Message::decode(&raw), Err(MessageError::DirtyPadding));
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, m) in all().into_iter().enumerate() {
            let raw = m.encode(i as u64);
            assert_eq!(raw.seq, i as u64);
            assert_eq!(Message::decode(&raw), Ok(m));
        }
    }

    #[test]
    fn annotated_install_bytes() {
        let raw = Message::Install(Install {
            generation: 2,
            size: 0x100,
            checksum: 3,
        })
        .encode(5);
        let bytes = bytemuck::bytes_of(&raw);
        assert_eq!(&bytes[0..4], &[1, 0, 0, 0], "kind");
        assert_eq!(&bytes[4..8], &[24, 0, 0, 0], "len");
        assert_eq!(&bytes[8..16], &[5, 0, 0, 0, 0, 0, 0, 0], "seq");
        assert_eq!(&bytes[16..24], &[2, 0, 0, 0, 0, 0, 0, 0], "generation");
        assert_eq!(&bytes[24..32], &[0, 1, 0, 0, 0, 0, 0, 0], "size");
        assert_eq!(&bytes[32..40], &[3, 0, 0, 0, 0, 0, 0, 0], "checksum");
        assert!(bytes[40..].iter().all(|&b| b == 0));
    }

    #[test]
    fn garbage_is_refused_with_a_name() {
        let mut raw = Message::Live { generation: 4 }.encode(0);
        raw.kind = 99;
        assert_eq!(Message::decode(&raw), Err(MessageError::UnknownKind));
        raw.kind = 0;
        assert_eq!(Message::decode(&raw), Err(MessageError::UnknownKind));
        let mut raw = Message::Live { generation: 4 }.encode(0);
        raw.len = 9;
        assert_eq!(Message::decode(&raw), Err(MessageError::BadLength));
        let mut raw = Message::Live { generation: 4 }.encode(0);
        raw.payload[47] = 1;
        assert_eq!(Message::decode(&raw).unwrap_err().name(), "dirty_padding");
    }

    #[test]
    fn reject_reasons_mirror_decode_error_names() {
        let errors = [
            DecodeError::TooShort,
            DecodeError::BadMagic,
            DecodeError::AbiVersion {
                found: 2,
                expected: 1,
            },
            DecodeError::BadSize,
            DecodeError::BadChecksum,
            DecodeError::BadSection {
                kind: 1,
                reason: "x",
            },
            DecodeError::MissingSection(crate::generation::SectionKind::Config),
            DecodeError::BadReference {
                what: "pool",
                index: 0,
            },
        ];
        for e in &errors {
            assert_eq!(RejectReason::from_decode(e).name(), e.name());
        }
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
            assert_eq!(RejectReason::ALL[r.index()], r);
            assert!(r.name().len() <= REASON_NAME_LEN);
            let m = Message::rejected(1, r);
            assert_eq!(m.reason_name(), Some(r.name()));
        }
        assert_eq!(RejectReason::from_code(0), None);
    }
}
