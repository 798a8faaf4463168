//! Single-producer single-consumer rings of 64-byte messages in the segment.
//!
//! Indices are free-running `u64` message counts: `head` is written by the producer, `tail`
//! by the consumer, and a message lives in slot `index % capacity`. The producer writes the
//! slot, then stores `head` with Release; the consumer loads `head` with Acquire, reads and
//! validates the slot, then stores `tail` with Release (so the producer, loading `tail` with
//! Acquire, never overwrites a slot still being read).
//!
//! The consumer treats the ring as untrusted: indices that claim more than `capacity` messages,
//! a message whose `seq` is not its position, an unknown kind, a bad length, dirty padding or a
//! message travelling the wrong way are each counted under a [`RingError`] name, and the
//! consumer resynchronises (`tail = head`), dropping whatever was queued, without panicking.
//! A consumer that finds the shared `tail` differing from its own restores it (and counts
//! `bad_indices`); a producer that finds the indices inconsistent restates its own `head`, so
//! the consumer resynchronises to it and the ring heals after one refused push. A producer can
//! also [`Producer::resync`] before it counts free slots: it then takes the consumer's tail as
//! its head, so a resynchronised consumer never leaves the producer believing the ring full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::layout::{Slot, MESSAGE_SIZE};
use super::map::Mapping;
use super::message::{Direction, Message, MessageError, RawMessage};

/// Why a consumer resynchronised. Each variant has a stable counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingError {
    /// `head - tail` exceeds the capacity (or `head` is behind `tail`).
    BadIndices,
    /// A slot's `seq` is not the position it was read at (stale or torn slot).
    BadSequence,
    UnknownKind,
    BadLength,
    DirtyPadding,
    /// A message of the other direction.
    WrongDirection,
}

impl RingError {
    pub const ALL: [RingError; 6] = [
        Self::BadIndices,
        Self::BadSequence,
        Self::UnknownKind,
        Self::BadLength,
        Self::DirtyPadding,
        Self::WrongDirection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::BadIndices => "bad_indices",
            Self::BadSequence => "bad_sequence",
            Self::UnknownKind => "unknown_kind",
            Self::BadLength => "bad_length",
            Self::DirtyPadding => "dirty_padding",
            Self::WrongDirection => "wrong_direction",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::BadIndices => 0,
            Self::BadSequence => 1,
            Self::UnknownKind => 2,
            Self::BadLength => 3,
            Self::DirtyPadding => 4,
            Self::WrongDirection => 5,
        }
    }
}

impl From<MessageError> for RingError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::UnknownKind => Self::UnknownKind,
            MessageError::BadLength => Self::BadLength,
            MessageError::DirtyPadding => Self::DirtyPadding,
            MessageError::WrongDirection => Self::WrongDirection,
        }
    }
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring resynchronised: {}", self.name())
    }
}

impl std::error::Error for RingError {}

/// How often a consumer resynchronised, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingErrorCounts([u64; RingError::ALL.len()]);

impl RingErrorCounts {
    pub fn get(&self, e: RingError) -> u64 {
        self.0[e.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(name, count)` for every reason, in [`RingError::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RingError::ALL.iter().map(|&e| (e.name(), self.get(e)))
    }
}

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushError {
    /// The consumer has not made room; nothing was written.
    Full,
    /// The consumer's tail is beyond our head or more than a ring behind; nothing was written
    /// (the consumer resynchronises on its side).
    BadIndices,
    /// This ring carries the other direction.
    WrongDirection,
}

impl PushError {
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "ring_full",
            Self::BadIndices => "bad_indices",
            Self::WrongDirection => "wrong_direction",
        }
    }
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for PushError {}

/// Which ring of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RingId {
    ControlToData,
    DataToControl,
}

impl RingId {
    fn direction(self) -> Direction {
        match self {
            Self::ControlToData => Direction::ControlToData,
            Self::DataToControl => Direction::DataToControl,
        }
    }
}

struct RingView<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    slots: &'a [Slot],
}

fn view(map: &Mapping, id: RingId) -> RingView<'_> {
    let l = map.layout();
    match id {
        RingId::ControlToData => RingView {
            head: &l.control_to_data.head.value,
            tail: &l.control_to_data.tail.value,
            slots: &l.control_to_data.slots,
        },
        RingId::DataToControl => RingView {
            head: &l.data_to_control.head.value,
            tail: &l.data_to_control.tail.value,
            slots: &l.data_to_control.slots,
        },
    }
}

fn slot_index(pos: u64, capacity: usize) -> usize {
    // Capacities are powers of two no larger than 1024: the masked value always fits.
    usize::try_from(pos % capacity as u64).unwrap_or(0)
}

/// The producing end of one ring.
#[derive(Debug)]
pub(crate) struct Producer {
    map: Arc<Mapping>,
    id: RingId,
    /// Our own copy of `head`: the shared one is only ever written, never trusted back.
    head: u64,
}

impl Producer {
    /// Continues from the head a previous producer left (so the consumer's tail still matches).
    pub(crate) fn attach(map: Arc<Mapping>, id: RingId) -> Self {
        let head = view(&map, id).head.load(Ordering::Acquire);
        Self { map, id, head }
    }

    pub(crate) fn capacity(&self) -> usize {
        view(&self.map, self.id).slots.len()
    }

    /// Free slots, or 0 when the consumer's tail is unreadable.
    pub(crate) fn free(&self) -> usize {
        let v = view(&self.map, self.id);
        let used = self.head.wrapping_sub(v.tail.load(Ordering::Acquire));
        usize::try_from(used)
            .ok()
            .and_then(|u| v.slots.len().checked_sub(u))
            .unwrap_or(0)
    }

    /// Takes the indices from the segment when they no longer agree with ours: a shared `head`
    /// someone else wrote, or a consumer `tail` more than a ring behind or ahead of our head
    /// (the consumer resynchronised to a forged head). Our head moves to the consumer's tail —
    /// where it will read next — and is restated, so the ring is empty and consistent on both
    /// sides and the next push goes through (anything queued but unread alongside the forged
    /// index is dropped, as the consumer's own resync drops it). Returns whether it moved.
    pub(crate) fn resync(&mut self) -> bool {
        let v = view(&self.map, self.id);
        let cap = v.slots.len() as u64;
        let shared = v.head.load(Ordering::Acquire);
        let tail = v.tail.load(Ordering::Acquire);
        if shared == self.head && self.head.wrapping_sub(tail) <= cap {
            return false;
        }
        self.head = tail;
        v.head.store(tail, Ordering::Release);
        true
    }

    pub(crate) fn push(&mut self, msg: &Message) -> Result<(), PushError> {
        if msg.direction() != self.id.direction() {
            return Err(PushError::WrongDirection);
        }
        let v = view(&self.map, self.id);
        let cap = v.slots.len() as u64;
        if v.head.load(Ordering::Acquire) != self.head {
            // Only this producer writes `head`, so someone rewrote it. The consumer may already
            // have resynchronised its tail to the forged value (a head moved back by exactly the
            // capacity would otherwise look like a full ring to us and an empty one to it,
            // forever). Jump a whole ring ahead, past every slot the consumer could mistake for a
            // new message, and restate it: the consumer then sees too many messages, resyncs to
            // our head without replaying anything, and the next push goes through.
            self.head = self.head.wrapping_add(cap);
            v.head.store(self.head, Ordering::Release);
            return Err(PushError::BadIndices);
        }
        let used = self.head.wrapping_sub(v.tail.load(Ordering::Acquire));
        if used > cap {
            // Someone rewrote `head` or `tail`. Restate our own head so the consumer sees the
            // inconsistency and resynchronises to it; the next push then goes through.
            v.head.store(self.head, Ordering::Release);
            return Err(PushError::BadIndices);
        }
        if used == cap {
            return Err(PushError::Full);
        }
        let words: [u64; MESSAGE_SIZE / 8] = bytemuck::cast(msg.encode(self.head));
        let slot = &v.slots[slot_index(self.head, v.slots.len())];
        for (cell, w) in slot.0.iter().zip(words) {
            cell.store(w, Ordering::Relaxed);
        }
        self.head = self.head.wrapping_add(1);
        v.head.store(self.head, Ordering::Release);
        Ok(())
    }
}

/// The consuming end of one ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    map: Arc<Mapping>,
    id: RingId,
    tail: u64,
    errors: RingErrorCounts,
}

impl Consumer {
    /// Attaches past everything already queued: a restarted consumer learns current state from
    /// the header instead of replaying messages meant for its predecessor.
    pub(crate) fn attach_at_head(map: Arc<Mapping>, id: RingId) -> Self {
        let v = view(&map, id);
        let tail = v.head.load(Ordering::Acquire);
        v.tail.store(tail, Ordering::Release);
        Self {
            map,
            id,
            tail,
            errors: RingErrorCounts::default(),
        }
    }

    pub(crate) fn errors(&self) -> &RingErrorCounts {
        &self.errors
    }

    /// Messages waiting (as the producer claims them; may be garbage).
    pub(crate) fn pending(&self) -> u64 {
        view(&self.map, self.id)
            .head
            .load(Ordering::Acquire)
            .wrapping_sub(self.tail)
    }

    /// The next message, `Ok(None)` when the ring is empty, or the reason the ring was just
    /// resynchronised (already counted).
    pub(crate) fn pop(&mut self) -> Result<Option<Message>, RingError> {
        let v = view(&self.map, self.id);
        let head = v.head.load(Ordering::Acquire);
        let available = head.wrapping_sub(self.tail);
        if available == 0 {
            // Our own line is cheap to check: a tail rewritten by a third party would make the
            // producer refuse forever, so restore it.
            if v.tail.load(Ordering::Relaxed) != self.tail {
                v.tail.store(self.tail, Ordering::Release);
                self.errors.0[RingError::BadIndices.index()] += 1;
                return Err(RingError::BadIndices);
            }
            return Ok(None);
        }
        let result = if available > v.slots.len() as u64 {
            Err(RingError::BadIndices)
        } else {
            let slot = &v.slots[slot_index(self.tail, v.slots.len())];
            let mut words = [0u64; MESSAGE_SIZE / 8];
            for (w, cell) in words.iter_mut().zip(&slot.0) {
                *w = cell.load(Ordering::Relaxed);
            }
            let raw: RawMessage = bytemuck::cast(words);
            if raw.seq == self.tail {
                Message::decode(&raw)
                    .map_err(RingError::from)
                    .and_then(|m| {
                        if m.direction() == self.id.direction() {
                            Ok(m)
                        } else {
                            Err(RingError::WrongDirection)
                        }
                    })
            } else {
                Err(RingError::BadSequence)
            }
        };
        match result {
            Ok(m) => {
                self.tail = self.tail.wrapping_add(1);
                v.tail.store(self.tail, Ordering::Release);
                Ok(Some(m))
            }
            Err(e) => {
                self.errors.0[e.index()] += 1;
                self.tail = head;
                v.tail.store(head, Ordering::Release);
                Err(e)
            }
        }
    }
}
