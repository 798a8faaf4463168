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
//! ```
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
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Self::Install(_) => Direction::ControlToData,
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
        ]
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
