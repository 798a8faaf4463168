//! The per-worker connection (flow) table.
//!
//! Each pinned worker owns one [`FlowTable`] per address family ([`FlowKeyV4`], [`FlowKeyV6`]):
//! nothing in it is shared, so there are no locks and no atomics. The first packet of a flow (a
//! TCP SYN, a UDP flow's first datagram) goes through the scheduler and is inserted; later
//! packets find the entry and reuse its backend, so a flow keeps its backend across table
//! generation swaps unless the pipeline re-points it.
//!
//! Guarantees:
//! - **Bounded memory, no allocation after construction.** [`FlowTable::with_capacity`] allocates
//!   (and touches) every bucket once; capacity is a power-of-two number of 8-way buckets.
//! - **O(1) worst case.** A key can only live in the 8 ways of its primary bucket or, if that was
//!   full when it was inserted, of its secondary bucket: a lookup reads the primary's 64-byte tag
//!   line and, on a tag match, one entry; the secondary line is read only for the few buckets
//!   that overflowed. Nothing is ever relocated. When all 16 candidate ways are live, an entry
//!   the new one outranks is evicted — provisional first, then handshakes and closing flows,
//!   then datagram flows, each the one closest to its idle timeout — and an established TCP
//!   flow is never pushed out by a new flow: the insert is refused instead
//!   ([`InsertOutcome::Refused`], see [`FlowTable::insert`]).
//! - **Flood mode** ([`FlowTable::flooded`]): past [`FLOOD_ENTER_OCCUPANCY`] of capacity, or
//!   with the insert budget below a quarter of its burst, the table stores no new flow until
//!   occupancy is back under [`FLOOD_LEAVE_OCCUPANCY`] and the budget above half its burst; the
//!   pipeline then forwards new flows statelessly by consistent hash.
//! - **Idle timeouts by protocol and TCP state** ([`Timeouts`]). Expired entries are misses; they
//!   are reclaimed when a lookup or insert meets them and by the bounded [`FlowTable::sweep`].
//! - **Flood cap.** Inserts draw from a token bucket ([`InsertLimit`]); when it is empty,
//!   [`FlowTable::insert`] returns [`InsertOutcome::Throttled`] and the caller forwards the packet
//!   statelessly.
//!
//! Time is the caller's coarse monotonic clock in **milliseconds**, as a wrapping `u32`
//! (`now`). Ages are computed with wrapping subtraction, so the wrap every 49.7 days is harmless
//! as long as every entry is looked at (by traffic or [`FlowTable::sweep`]) less than 49 days
//! after it was last seen — the sweep visits the whole table in far less than that.
//!
//! The bucket hash is computed by the caller once per packet and passed in. It is keyed: a
//! table built by [`FlowTable::with_seed`] takes `fold32(key.hash_seeded(seed))`
//! ([`FlowTable::hash`]), with a seed the data plane draws from the OS at every start, so a
//! sender cannot aim packets at chosen buckets. The scheduler and the encapsulation use the
//! public, fixed [`FlowKey::hash`] instead, which must be the same on every node and every
//! start (Maglev consistency); [`FlowTable::with_capacity`] uses that one ([`DEFAULT_SEED`]).

mod key;
mod table;
#[cfg(test)]
mod tests;

pub use key::{
    fold32, hash_words, mix64, Align32, Align64, FlowKey, FlowKeyV4, FlowKeyV6, DEFAULT_SEED,
};
pub use table::{FlowMut, FlowTable, FLOOD_ENTER_OCCUPANCY, FLOOD_LEAVE_OCCUPANCY, WAYS};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// TCP header flag bits, as in the 13th byte of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
}

/// What the pipeline stores per flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowValue {
    /// The backend chosen by the scheduler (backend ids start at 1).
    pub backend: u32,
    /// Free for the pipeline: e.g. the table generation or pool index the backend was chosen
    /// from, so a hit can be re-validated cheaply after a generation swap.
    pub slot: u32,
}

/// Lifecycle of a flow; selects its idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// TCP: SYN seen, handshake not yet completed by the client's ACK.
    TcpHandshake = 1,
    /// TCP: the client acknowledged the handshake, or a provisional flow proved itself.
    TcpEstablished = 2,
    /// TCP: FIN or RST seen from the client.
    TcpClosing = 3,
    /// UDP or any other non-TCP protocol.
    Datagram = 4,
    /// TCP: picked up mid-stream — the first packet seen was not a SYN (a flow this worker lost
    /// to a restart, an eviction or an RSS change; or a spoofed ACK). It lives as long as a
    /// handshake (`tcp_handshake_ms`) and is evicted before anything else; the flow's next
    /// packet without SYN, FIN or RST promotes it to [`FlowState::TcpEstablished`]. A spoofed
    /// ACK flood from random sources sends one packet per 5-tuple, so its entries never
    /// outlive or push out real connections.
    TcpProvisional = 5,
}

impl FlowState {
    /// Raw tag-line encoding; 0 means an empty way.
    #[inline(always)]
    pub(crate) const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::TcpHandshake),
            2 => Some(Self::TcpEstablished),
            3 => Some(Self::TcpClosing),
            4 => Some(Self::Datagram),
            5 => Some(Self::TcpProvisional),
            _ => None,
        }
    }

    /// State for a new flow whose first packet has protocol `proto` and, for TCP, `flags`.
    ///
    /// A TCP flow created from a packet other than a SYN (picked up mid-stream, e.g. after a
    /// restart) starts provisional; from a FIN or RST, closing.
    #[inline]
    #[must_use]
    pub const fn initial(proto: u8, flags: u8) -> Self {
        if proto != PROTO_TCP {
            Self::Datagram
        } else if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            Self::TcpClosing
        } else if flags & tcp_flags::SYN != 0 {
            Self::TcpHandshake
        } else {
            Self::TcpProvisional
        }
    }

    /// Eviction rank: a new flow may push out only a live entry of a rank no higher than its
    /// own, lowest rank first. Provisional 0; handshake and closing 1; datagram 2; established 3
    /// (the pipeline never inserts an established flow, so a new flow never evicts one).
    #[inline(always)]
    pub(crate) const fn rank_raw(raw: u8) -> i64 {
        match raw {
            5 => 0,
            1 | 3 => 1,
            4 => 2,
            _ => 3,
        }
    }

    /// The state after a client packet with TCP `flags`: handshake → established on an ACK
    /// without SYN; provisional → established on any packet without SYN (the flow's second
    /// packet: it proved itself), → handshake on a SYN; any state → closing on FIN or RST;
    /// closing → handshake on a bare SYN (the client reuses the 5-tuple; the pipeline may want
    /// to reschedule). `Datagram` never moves.
    #[inline]
    #[must_use]
    pub const fn after_tcp_flags(self, flags: u8) -> Self {
        const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
        if matches!(self, Self::Datagram) {
            return self;
        }
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            return Self::TcpClosing;
        }
        match self {
            Self::TcpHandshake if flags & SYN_ACK == tcp_flags::ACK => Self::TcpEstablished,
            Self::TcpProvisional if flags & tcp_flags::SYN == 0 => Self::TcpEstablished,
            Self::TcpProvisional => Self::TcpHandshake,
            Self::TcpClosing if flags & SYN_ACK == tcp_flags::SYN => Self::TcpHandshake,
            other => other,
        }
    }
}

/// Idle timeouts in milliseconds, by flow state.
///
/// Values above [`Timeouts::MAX_MS`] (about 24.8 days) are clamped, so that ages stay unambiguous
/// on the wrapping clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// [`FlowState::TcpHandshake`] and [`FlowState::TcpProvisional`]; default 5 s.
    pub tcp_handshake_ms: u32,
    /// [`FlowState::TcpEstablished`]; default 900 s (inference streams are long and bursty).
    pub tcp_established_ms: u32,
    /// [`FlowState::TcpClosing`]; default 10 s.
    pub tcp_closing_ms: u32,
    /// [`FlowState::Datagram`] (UDP and other protocols); default 30 s.
    pub udp_ms: u32,
}

impl Timeouts {
    /// Largest accepted timeout: half the clock's range.
    pub const MAX_MS: u32 = i32::MAX.unsigned_abs();

    /// Timeout per raw state byte (index 0 = empty way, never consulted).
    pub(crate) const fn by_state(&self) -> [u32; 8] {
        const fn clamp(ms: u32) -> u32 {
            if ms > Timeouts::MAX_MS {
                Timeouts::MAX_MS
            } else {
                ms
            }
        }
        [
            0,
            clamp(self.tcp_handshake_ms),
            clamp(self.tcp_established_ms),
            clamp(self.tcp_closing_ms),
            clamp(self.udp_ms),
            clamp(self.tcp_handshake_ms),
            0,
            0,
        ]
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_handshake_ms: 5_000,
            tcp_established_ms: 900_000,
            tcp_closing_ms: 10_000,
            udp_ms: 30_000,
        }
    }
}

/// Token bucket on inserts, per worker: `per_second` sustained, up to `burst` at once.
///
/// A bucket starts full. `per_second == u32::MAX` ([`InsertLimit::UNLIMITED`]) disables it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertLimit {
    /// Sustained inserts per second; default 2 000 000.
    pub per_second: u32,
    /// Bucket depth; default 200 000 (100 ms at the default rate).
    pub burst: u32,
}

impl InsertLimit {
    /// No cap on inserts.
    pub const UNLIMITED: Self = Self {
        per_second: u32::MAX,
        burst: u32::MAX,
    };
}

impl Default for InsertLimit {
    fn default() -> Self {
        Self {
            per_second: 2_000_000,
            burst: 200_000,
        }
    }
}

/// Result of [`FlowTable::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored in a free way (or one whose flow had expired).
    Inserted,
    /// The key was already live; its value and state were overwritten. Draws no token.
    Replaced,
    /// The bucket was full of live flows; the one closest to its timeout was evicted.
    Evicted,
    /// The insert budget is exhausted; nothing was stored. Forward statelessly.
    Throttled,
    /// Both candidate buckets hold only live entries the new flow may not evict (established
    /// flows, or entries of a higher rank); nothing was stored. Forward statelessly.
    Refused,
}

/// Why [`FlowTable::admit`] will not store a new flow now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// The table is in flood mode ([`FlowTable::flooded`]).
    Flood,
    /// The insert budget is exhausted (counted `flow_insert_throttled`).
    Throttled,
    /// No way the flow may take (counted `flow_insert_refused`).
    Refused,
}

/// Flow-table counters of one worker. Plain integers: the worker is their only writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing (or only an expired entry).
    pub misses: u64,
    /// New entries stored (`Inserted` + `Evicted` outcomes).
    pub inserts: u64,
    /// Inserts that overwrote a live entry with the same key.
    pub replaced: u64,
    /// Live entries pushed out of a full bucket.
    pub evicted: u64,
    /// Entries reclaimed after their idle timeout (by lookup, insert or sweep).
    pub expired: u64,
    /// Inserts refused by the insert-rate cap.
    pub insert_throttled: u64,
    /// Non-SYN TCP packets with no entry: the broken-flow signal. Counted by the pipeline
    /// ([`FlowTable::count_non_syn_miss`]).
    pub non_syn_miss: u64,
    /// New entries stored as [`FlowState::TcpProvisional`].
    pub provisional_inserts: u64,
    /// New flows refused because their two buckets held only entries they may not evict.
    pub insert_refused: u64,
    /// Times the table entered flood mode.
    pub flood_entered: u64,
    /// Times the table left flood mode.
    pub flood_left: u64,
    /// Milliseconds spent in flood mode (up to the last evaluation).
    pub flood_ms: u64,
    /// New flows not stored because the table was in flood mode.
    pub flood_stateless: u64,
}

impl FlowCounters {
    /// Counter names, in [`FlowCounters::iter`] order (Prometheus-ready).
    pub const NAMES: [&'static str; 14] = [
        "flow_hits",
        "flow_misses",
        "flow_inserts",
        "flow_replaced",
        "flow_evicted",
        "flow_expired",
        "flow_insert_throttled",
        "flow_non_syn_miss",
        "flow_provisional_inserts",
        "flow_insert_refused",
        "flow_flood_entered",
        "flow_flood_left",
        "flow_flood_milliseconds",
        "flow_flood_stateless",
    ];

    /// Values in [`FlowCounters::NAMES`] order.
    #[must_use]
    pub const fn values(&self) -> [u64; 14] {
        [
            self.hits,
            self.misses,
            self.inserts,
            self.replaced,
            self.evicted,
            self.expired,
            self.insert_throttled,
            self.non_syn_miss,
            self.provisional_inserts,
            self.insert_refused,
            self.flood_entered,
            self.flood_left,
            self.flood_ms,
            self.flood_stateless,
        ]
    }

    /// `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        Self::NAMES.into_iter().zip(self.values())
    }
}
