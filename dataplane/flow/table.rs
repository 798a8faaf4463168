//! Set-associative storage: a bucket is a tag line followed by its entries, contiguous.
//!
//! ```text
//! buckets[b].line     64 B: tags[8] u16 | last_seen[8] u32 | state[8] u8 | spill u32 | spare
//! buckets[b].entries  8 × { key, backend, slot }: 32 B each (IPv4), 64 B (IPv6), line-aligned
//! ```
//!
//! Keeping a bucket's lines together (rather than tag lines and entries in two arrays) puts
//! the two lines a hit reads next to each other (usually in one DRAM page): with a million
//! flows in DRAM the pipeline ran 4.5 % faster (4 of 4 alternating rounds; docs/BENCHMARKS.md).
//!
//! A lookup reads the tag line, compares the 8 tags (upper 16 bits of the hash; 0 marks an empty
//! way), and compares the full key only on a tag match, so a hit touches two cache lines and a
//! miss usually one. Expiry, eviction choice and the sweep work on the tag line alone. A hit
//! writes only the tag line (last seen); entries are written on insert and by the pipeline.
//!
//! Two choices: a flow lives in its primary bucket `b` or, when `b` was full at insert, in its
//! secondary `b ^ f(tag)`. Each tag line counts the flows spilled from it (`spill`), so lookups
//! read the secondary line only for buckets that actually overflowed; with 8-way buckets this
//! cuts the flows lost to a full bucket from ~5 % to ~1 % at 75 % load and from ~0.8 % to
//! ~0.02 % at 50 %, at the price of a second line read for the few spilled buckets. Placement
//! is still bounded: two buckets, 16 ways, no relocation.

use core::fmt;
use core::mem::size_of;
use core::ops::Range;

use super::key::{fold32, FlowKey, DEFAULT_SEED};
use super::{
    FlowCounters, FlowKeyV4, FlowKeyV6, FlowState, FlowValue, InsertLimit, InsertOutcome, NoRoom,
    Timeouts,
};

/// Ways per bucket.
pub const WAYS: usize = 8;

/// Largest bucket count (2^24 buckets = 128 Mi flows); beyond it the 32-bit hash runs out of tag.
const MAX_BUCKETS: usize = 1 << 24;

/// Bit of a raw state byte marking a flow stored in its secondary bucket.
const SECONDARY: u8 = 0x80;

/// Flood mode starts when the table holds this share of its capacity (7/8)...
pub const FLOOD_ENTER_OCCUPANCY: (usize, usize) = (7, 8);
/// ... and ends when it is back under this share (3/4) and the insert budget is at least half
/// full again. With 8-way buckets and two choices, new flows start to find both buckets full
/// past about 3/4.
pub const FLOOD_LEAVE_OCCUPANCY: (usize, usize) = (3, 4);

/// Score of a way whose live entry may not be evicted by the insert at hand.
const KEEP: i64 = i64::MAX;

/// Per-bucket metadata, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct TagLine {
    /// Hash tag per way; 0 = empty.
    tags: [u16; WAYS],
    /// Last time (ms) the flow was seen.
    last_seen: [u32; WAYS],
    /// Raw [`FlowState`] (| [`SECONDARY`]); 0 = empty.
    state: [u8; WAYS],
    /// Live flows whose primary bucket is this one but which sit in their secondary bucket.
    /// While 0, a lookup that misses here is a miss: the secondary is not read.
    spill: u32,
    _spare: [u8; 4],
}

impl TagLine {
    const EMPTY: Self = Self {
        tags: [0; WAYS],
        last_seen: [0; WAYS],
        state: [0; WAYS],
        spill: 0,
        _spare: [0; 4],
    };

    /// Bit `w` set where `tags[w] == tag`.
    #[inline(always)]
    fn matches(&self, tag: u16) -> u32 {
        let mut mask = 0;
        for (w, &t) in self.tags.iter().enumerate() {
            mask |= u32::from(t == tag) << w;
        }
        mask
    }
}

/// One stored flow. Its alignment (from `K::EntryAlign`) keeps it inside one cache line.
#[derive(Clone, Copy)]
#[repr(C)]
struct FlowEntry<K: FlowKey> {
    _align: [K::EntryAlign; 0],
    key: K,
    value: FlowValue,
}

impl<K: FlowKey> FlowEntry<K> {
    const EMPTY: Self = Self {
        _align: [],
        key: K::EMPTY,
        value: FlowValue {
            backend: 0,
            slot: 0,
        },
    };
}

/// A bucket: its tag line, then its entries, contiguous (see the module doc).
#[derive(Clone, Copy)]
#[repr(C)]
struct Bucket<K: FlowKey> {
    line: TagLine,
    entries: [FlowEntry<K>; WAYS],
}

const _: () = {
    assert!(size_of::<TagLine>() == 64);
    assert!(core::mem::align_of::<TagLine>() == 64);
    assert!(size_of::<FlowEntry<FlowKeyV4>>() == 32);
    assert!(size_of::<FlowEntry<FlowKeyV6>>() == 64);
    // No padding: a bucket is exactly its tag line and its entries.
    assert!(size_of::<Bucket<FlowKeyV4>>() == 64 + WAYS * 32);
    assert!(size_of::<Bucket<FlowKeyV6>>() == 64 + WAYS * 64);
};

/// Token bucket in milli-tokens (1000 per insert), refilled from the caller's ms clock.
#[derive(Clone, Copy, Debug)]
struct InsertBudget {
    per_second: u64,
    cap: u64,
    tokens: u64,
    last_ms: u32,
    unlimited: bool,
}

impl InsertBudget {
    fn new(limit: InsertLimit) -> Self {
        let cap = u64::from(limit.burst) * 1000;
        Self {
            per_second: u64::from(limit.per_second),
            cap,
            tokens: cap,
            last_ms: 0,
            unlimited: limit == InsertLimit::UNLIMITED || limit.per_second == u32::MAX,
        }
    }

    #[inline]
    fn take(&mut self, now: u32) -> bool {
        if self.unlimited {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether an insert at `now` would find a token (takes none).
    #[inline]
    fn has_token(&mut self, now: u32) -> bool {
        self.unlimited || {
            self.refill(now);
            self.tokens >= 1000
        }
    }

    /// Under pressure: less than a quarter of the burst left.
    fn low(&self) -> bool {
        !self.unlimited && self.tokens < self.cap / 4
    }

    /// Recovered: at least half the burst back.
    fn recovered(&self) -> bool {
        self.unlimited || self.tokens >= self.cap / 2
    }

    #[inline]
    fn refill(&mut self, now: u32) {
        if now != self.last_ms {
            let elapsed = now.wrapping_sub(self.last_ms);
            // A clock that stepped back (elapsed "negative") refills nothing.
            if elapsed <= Timeouts::MAX_MS {
                // elapsed < 2^31 and per_second < 2^32: no overflow.
                let earned = u64::from(elapsed) * self.per_second;
                self.tokens = (self.tokens + earned.min(self.cap)).min(self.cap);
            }
            self.last_ms = now;
        }
    }
}

/// Flood-mode state of a table (see [`FlowTable::flooded`]).
#[derive(Clone, Copy, Debug, Default)]
struct Flood {
    on: bool,
    /// When flood time was last added to `flood_ms`.
    mark_ms: u32,
    /// `len` at or above which flood mode starts.
    enter_len: usize,
    /// `len` at or below which it may end.
    leave_len: usize,
}

/// A per-worker flow table for one address family (`K` = [`FlowKeyV4`] or [`FlowKeyV6`]).
pub struct FlowTable<K: FlowKey> {
    buckets: Box<[Bucket<K>]>,
    mask: usize,
    len: usize,
    timeout_ms: [u32; 8],
    budget: InsertBudget,
    sweep_cursor: usize,
    counters: FlowCounters,
    /// Seed of the bucket hash ([`FlowTable::hash`]).
    seed: u64,
    flood: Flood,
}

/// A live entry found by [`FlowTable::lookup`]: read or update its value and state.
pub struct FlowMut<'a, K: FlowKey> {
    line: &'a mut TagLine,
    way: usize,
    entry: &'a mut FlowEntry<K>,
}

impl<K: FlowKey> FlowMut<'_, K> {
    /// The flow's key.
    #[inline]
    #[must_use]
    pub fn key(&self) -> &K {
        &self.entry.key
    }

    /// The stored value.
    #[inline]
    #[must_use]
    pub fn value(&self) -> FlowValue {
        self.entry.value
    }

    /// The stored value, to re-point the flow (e.g. after a generation swap).
    #[inline]
    pub fn value_mut(&mut self) -> &mut FlowValue {
        &mut self.entry.value
    }

    /// The backend the flow is pinned to.
    #[inline]
    #[must_use]
    pub fn backend(&self) -> u32 {
        self.entry.value.backend
    }

    /// The flow's state.
    #[inline]
    #[must_use]
    pub fn state(&self) -> FlowState {
        // A way handed out by lookup is occupied, so its state byte is valid.
        FlowState::from_raw(self.line.state[self.way] & !SECONDARY).unwrap_or(FlowState::Datagram)
    }

    /// Sets the flow's state (and with it its idle timeout).
    #[inline]
    pub fn set_state(&mut self, state: FlowState) {
        let raw = &mut self.line.state[self.way];
        *raw = state as u8 | (*raw & SECONDARY);
    }

    /// Advances the TCP state for a client packet with `flags` (see
    /// [`FlowState::after_tcp_flags`]) and returns the new state.
    #[inline]
    pub fn on_tcp_flags(&mut self, flags: u8) -> FlowState {
        let next = self.state().after_tcp_flags(flags);
        self.set_state(next);
        next
    }

    /// When the flow was last seen (ms).
    #[inline]
    #[must_use]
    pub fn last_seen(&self) -> u32 {
        self.line.last_seen[self.way]
    }
}

impl<K: FlowKey> fmt::Debug for FlowMut<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowMut")
            .field("key", self.key())
            .field("value", &self.value())
            .field("state", &self.state())
            .field("last_seen", &self.last_seen())
            .finish()
    }
}

/// Bucket index and tag of a hash: low bits select the bucket, the upper 16 bits are the tag
/// (never 0, which marks an empty way).
#[inline(always)]
fn split(hash: u32, mask: usize) -> (usize, u16) {
    let tag = u16::try_from(hash >> 16).unwrap_or(u16::MAX).max(1);
    (hash as usize & mask, tag)
}

/// The other bucket of a flow with `tag` stored in `bucket`: `bucket` xor an offset derived from
/// the tag, so it maps primary → secondary and secondary → primary, and never to itself (the
/// table has at least two buckets). Odd multiplication keeps distinct tags on distinct offsets.
#[inline(always)]
fn alt_bucket(bucket: usize, tag: u16, mask: usize) -> usize {
    let offset = u32::from(tag).wrapping_mul(0x9E37_79B1) as usize & mask;
    bucket ^ offset.max(1)
}

#[inline(always)]
fn is_expired(now: u32, last_seen: u32, timeout_ms: u32) -> bool {
    now.wrapping_sub(last_seen) > timeout_ms
}

impl<K: FlowKey> FlowTable<K> {
    /// Bytes of one entry.
    pub const ENTRY_BYTES: usize = size_of::<FlowEntry<K>>();
    /// Bytes of one bucket: its tag line plus its 8 entries.
    pub const BUCKET_BYTES: usize = size_of::<Bucket<K>>();
    /// Bytes per flow at full capacity.
    pub const BYTES_PER_FLOW: usize = Self::BUCKET_BYTES / WAYS;

    /// Allocates a table for at least `flows` flows: the bucket count is rounded up to a power
    /// of two (at least 2, at most 2^24). All memory is allocated and written here, once; build
    /// the table on the worker's own lcore so first touch places it on the worker's NUMA node.
    ///
    /// Size it with headroom: at 75 % of capacity about 1 % of new flows find both of their
    /// buckets full and evict a live flow; at 50 %, about 0.02 % (8-way buckets, two choices).
    #[must_use]
    pub fn with_capacity(flows: usize, timeouts: Timeouts, limit: InsertLimit) -> Self {
        Self::with_seed(flows, timeouts, limit, DEFAULT_SEED)
    }

    /// [`FlowTable::with_capacity`] with a secret bucket-hash seed: callers must then pass
    /// [`FlowTable::hash`] of the key (not [`FlowKey::hash`]) to every call taking a hash. The
    /// data plane draws the seed from the OS at every start, so nobody outside can compute
    /// which bucket a 5-tuple lands in and aim a flood at the buckets of chosen flows.
    #[must_use]
    pub fn with_seed(flows: usize, timeouts: Timeouts, limit: InsertLimit, seed: u64) -> Self {
        let buckets = flows
            .div_ceil(WAYS)
            .clamp(2, MAX_BUCKETS)
            .next_power_of_two();
        Self {
            buckets: vec![
                Bucket {
                    line: TagLine::EMPTY,
                    entries: [FlowEntry::EMPTY; WAYS],
                };
                buckets
            ]
            .into_boxed_slice(),
            mask: buckets - 1,
            len: 0,
            timeout_ms: timeouts.by_state(),
            budget: InsertBudget::new(limit),
            sweep_cursor: 0,
            counters: FlowCounters::default(),
            seed,
            flood: Flood {
                enter_len: buckets * WAYS / FLOOD_ENTER_OCCUPANCY.1 * FLOOD_ENTER_OCCUPANCY.0,
                leave_len: buckets * WAYS / FLOOD_LEAVE_OCCUPANCY.1 * FLOOD_LEAVE_OCCUPANCY.0,
                ..Flood::default()
            },
        }
    }

    /// The bucket hash of `key` for this table: `fold32(key.hash_seeded(seed))`, which is
    /// [`FlowKey::hash`] for a table built with [`FlowTable::with_capacity`].
    #[inline(always)]
    #[must_use]
    pub fn hash(&self, key: &K) -> u32 {
        fold32(key.hash_seeded(self.seed))
    }

    /// Whether flood mode was on at the last evaluation ([`FlowTable::flooded`]).
    #[inline]
    #[must_use]
    pub fn in_flood(&self) -> bool {
        self.flood.on
    }

    /// The bucket-hash seed (to hash keys in phase 1, before the table is borrowed mutably).
    #[inline(always)]
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether the table is in flood mode at `now`, re-evaluated (with hysteresis) on every
    /// call; [`FlowTable::sweep`] calls it too, so flood mode ends with no traffic as well.
    ///
    /// It starts when the table holds [`FLOOD_ENTER_OCCUPANCY`] of its capacity (expired
    /// entries not yet reclaimed included) or the insert budget is down to a quarter of its
    /// burst, and ends when occupancy is at most [`FLOOD_LEAVE_OCCUPANCY`] and the budget is
    /// back to half its burst. Counted: `flow_flood_entered`, `flow_flood_left`, and the time
    /// in it, `flow_flood_milliseconds`. In flood mode [`FlowTable::admit`] refuses every new flow: the
    /// flood's own entries (provisional, half-open) expire within the handshake timeout and
    /// are not replaced, while established flows keep their entries. A table that holds 7/8 of
    /// its capacity in established flows stays in flood mode until they close or expire: size
    /// it (`flow_table` in the appliance settings) for the connections it must keep, with room.
    #[inline]
    pub fn flooded(&mut self, now: u32) -> bool {
        self.budget.refill(now);
        let f = &mut self.flood;
        if f.on {
            let elapsed = now.wrapping_sub(f.mark_ms);
            if elapsed <= Timeouts::MAX_MS {
                self.counters.flood_ms += u64::from(elapsed);
                f.mark_ms = now;
            }
            if self.len <= f.leave_len && self.budget.recovered() {
                f.on = false;
                self.counters.flood_left += 1;
            }
        } else if self.len >= f.enter_len || self.budget.low() {
            f.on = true;
            f.mark_ms = now;
            self.counters.flood_entered += 1;
        }
        f.on
    }

    /// Whether a new flow with bucket hash `hash` (a lookup just missed it) in `state` would be
    /// stored by an insert at `now`: not in flood mode ([`NoRoom::Flood`], counted
    /// `flow_flood_stateless`), a token left ([`NoRoom::Throttled`]; an empty token bucket is
    /// counted `flow_insert_throttled` in flood mode too), and a way it may take in one of its
    /// two buckets ([`NoRoom::Refused`], counted `flow_insert_refused`). Takes no token. Asked
    /// before the flow is scheduled, so a flow that will not be stored is scheduled by
    /// consistent hash only, and every later packet of it finds the same backend.
    ///
    /// # Errors
    /// Why the flow would not be stored.
    #[inline]
    pub fn admit(&mut self, hash: u32, state: FlowState, now: u32) -> Result<(), NoRoom> {
        let flood = self.flooded(now);
        let token = self.budget.has_token(now);
        if !token {
            // The cap would refuse it, whatever else does: it shows the cap engaging.
            self.counters.insert_throttled += 1;
        }
        if flood {
            self.counters.flood_stateless += 1;
            return Err(NoRoom::Flood);
        }
        if !token {
            return Err(NoRoom::Throttled);
        }
        let (b, tag) = split(hash, self.mask);
        let rank = FlowState::rank_raw(state as u8);
        let (_, score) = self.victim(b, now, rank);
        if score >= 0 {
            let (_, s_score) = self.victim(alt_bucket(b, tag, self.mask), now, rank);
            if score == KEEP && s_score == KEEP {
                self.counters.insert_refused += 1;
                return Err(NoRoom::Refused);
            }
        }
        Ok(())
    }

    /// Number of flows the table can hold.
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Number of buckets (a power of two); the unit of [`FlowTable::sweep`] and
    /// [`FlowTable::retain_buckets`].
    #[inline]
    #[must_use]
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Occupied ways, including expired flows not yet reclaimed.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No occupied way.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table's buckets.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * Self::BUCKET_BYTES
    }

    /// This worker's counters.
    #[inline]
    #[must_use]
    pub fn counters(&self) -> &FlowCounters {
        &self.counters
    }

    /// Counts a non-SYN TCP packet that found no entry (the pipeline decides what that is).
    #[inline]
    pub fn count_non_syn_miss(&mut self) {
        self.counters.non_syn_miss += 1;
    }

    /// Replaces the idle timeouts; applies to existing flows at their next check.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeout_ms = timeouts.by_state();
    }

    /// Replaces the insert-rate cap; the new bucket starts full.
    pub fn set_insert_limit(&mut self, limit: InsertLimit) {
        self.budget = InsertBudget::new(limit);
    }

    /// Would prefetch the tag line of `hash`'s bucket, for the next packets of a burst.
    ///
    /// Currently a no-op: `core::arch::x86_64::_mm_prefetch` is a `#[target_feature(enable =
    /// "sse")]` function, and calling it from code that is not itself `#[target_feature]`
    /// requires `unsafe` even though SSE is always on for x86_64 (Rust 1.95), which this
    /// module does not use. A module that may hold `unsafe` can prefetch
    /// [`FlowTable::bucket_addr`] instead.
    #[inline(always)]
    pub fn prefetch(&self, hash: u32) {
        let _ = hash;
    }

    /// Address of `hash`'s primary tag line, for a prefetch issued by a module allowed to use
    /// `unsafe` (e.g. `rte_prefetch0` / `_mm_prefetch`). Never dereference it.
    #[inline(always)]
    #[must_use]
    pub fn bucket_addr(&self, hash: u32) -> *const u8 {
        let (b, _) = split(hash, self.mask);
        self.buckets.as_ptr().wrapping_add(b).cast()
    }

    /// Address of the entry line a hit on `hash` would read (the way whose tag matches in its
    /// primary bucket), for a prefetch issued once [`FlowTable::bucket_addr`]'s line was
    /// prefetched for the whole burst. Reads the tag line; `None` when no tag matches (a miss
    /// reads no entry). Never dereference it.
    #[inline(always)]
    pub fn entry_addr(&self, hash: u32) -> Option<*const u8> {
        let (b, tag) = split(hash, self.mask);
        let candidates = self.buckets[b].line.matches(tag);
        (candidates != 0).then(|| {
            let way = candidates.trailing_zeros() as usize;
            core::ptr::from_ref(&self.buckets[b].entries[way]).cast::<u8>()
        })
    }

    /// Safe stand-in for [`FlowTable::prefetch`]: loads one word of `hash`'s tag line and
    /// discards it (through [`core::hint::black_box`], so the load is kept). Call it for every
    /// packet of a burst before looking any of them up: the loads are independent, so the
    /// out-of-order core overlaps their cache misses. Unlike a prefetch instruction it occupies
    /// a load slot until the line arrives. On a shared 2-vCPU EPYC VM at 1 Mi flows, warming
    /// a burst of 32 first cut hit lookups by 10–35 % (`_mm_prefetch`, tried outside the
    /// project, did a few ns better).
    #[inline(always)]
    pub fn warm(&self, hash: u32) {
        let (b, _) = split(hash, self.mask);
        core::hint::black_box(self.buckets[b].line.tags[0]);
    }

    /// Second warming stage: once [`FlowTable::warm`] has been issued for a whole burst,
    /// touches the entry line of the way whose tag matches `hash` in its primary bucket (the
    /// second line a hit reads), so those misses overlap too. Reads the tag line, which the
    /// first stage brought in; does nothing when no tag matches (a miss reads no entry).
    #[inline(always)]
    pub fn warm_entry(&self, hash: u32) {
        let (b, tag) = split(hash, self.mask);
        let candidates = self.buckets[b].line.matches(tag);
        if candidates != 0 {
            let way = candidates.trailing_zeros() as usize;
            core::hint::black_box(self.buckets[b].entries[way].value.backend);
        }
    }

    #[inline(always)]
    fn timeout(&self, raw_state: u8) -> u32 {
        self.timeout_ms[usize::from(raw_state & 7)]
    }

    /// Bucket and way of `key`: the primary bucket `b`, then, only if flows spilled from `b`,
    /// the secondary.
    #[inline(always)]
    fn find(&self, b: usize, tag: u16, key: &K) -> Option<(usize, usize)> {
        let line = &self.buckets[b].line;
        let block = &self.buckets[b].entries;
        let mut candidates = line.matches(tag);
        while candidates != 0 {
            let way = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            if block[way].key == *key {
                return Some((b, way));
            }
        }
        if line.spill == 0 {
            return None;
        }
        self.find_secondary(alt_bucket(b, tag, self.mask), tag, key)
    }

    #[inline(never)]
    fn find_secondary(&self, s: usize, tag: u16, key: &K) -> Option<(usize, usize)> {
        let line = &self.buckets[s].line;
        let block = &self.buckets[s].entries;
        let mut candidates = line.matches(tag);
        while candidates != 0 {
            let way = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            if line.state[way] & SECONDARY != 0 && block[way].key == *key {
                return Some((s, way));
            }
        }
        None
    }

    /// Empties an occupied way, keeping `len` and the primary bucket's spill count right.
    #[inline]
    fn free_way(&mut self, b: usize, way: usize) {
        let line = &mut self.buckets[b].line;
        let tag = line.tags[way];
        let secondary = line.state[way] & SECONDARY != 0;
        line.tags[way] = 0;
        line.state[way] = 0;
        self.len -= 1;
        if secondary {
            let primary = alt_bucket(b, tag, self.mask);
            self.buckets[primary].line.spill -= 1;
        }
    }

    /// The way to fill in bucket `b` for a new entry of eviction rank `rank`, and its score: a
    /// free way (`i64::MIN`), else an expired one (its negative time to live), else the live
    /// way of the lowest rank, at most `rank` ([`FlowState::rank_raw`]), with the least time
    /// left (`rank << 32 | ttl`); [`KEEP`] when every way holds a live entry it may not evict.
    /// Ties go to the lowest way.
    #[inline]
    fn victim(&self, b: usize, now: u32, rank: i64) -> (usize, i64) {
        let line = &self.buckets[b].line;
        let mut victim = (0, KEEP);
        for way in 0..WAYS {
            let raw = line.state[way];
            if raw == 0 {
                return (way, i64::MIN);
            }
            let age = i64::from(now.wrapping_sub(line.last_seen[way]));
            let ttl = i64::from(self.timeout(raw)) - age;
            let their = FlowState::rank_raw(raw & !SECONDARY);
            let score = if ttl < 0 {
                ttl
            } else if their <= rank {
                their << 32 | ttl
            } else {
                KEEP
            };
            if score < victim.1 {
                victim = (way, score);
            }
        }
        victim
    }

    /// Finds the live flow `key` and marks it seen at `now`. An expired entry is reclaimed and
    /// reported as a miss.
    ///
    /// `hash` must be the same function of the key in every call on this table: normally
    /// [`FlowKey::hash`]; a per-boot secret seed (`fold32(key.hash_seeded(secret))`) makes
    /// targeted bucket flooding harder.
    #[inline]
    pub fn lookup(&mut self, key: &K, hash: u32, now: u32) -> Option<FlowMut<'_, K>> {
        self.lookup_with(key, hash, now, |_| {})
    }

    /// [`FlowTable::lookup`], calling `on_removed` with the value of the expired entry it
    /// reclaims, if any (so a caller that keeps per-backend flow counts can decrement them).
    #[inline]
    pub fn lookup_with<F: FnMut(FlowValue)>(
        &mut self,
        key: &K,
        hash: u32,
        now: u32,
        mut on_removed: F,
    ) -> Option<FlowMut<'_, K>> {
        let (b, tag) = split(hash, self.mask);
        let Some((bucket, way)) = self.find(b, tag, key) else {
            self.counters.misses += 1;
            return None;
        };
        let (raw, seen) = (
            self.buckets[bucket].line.state[way],
            self.buckets[bucket].line.last_seen[way],
        );
        if is_expired(now, seen, self.timeout(raw)) {
            on_removed(self.buckets[bucket].entries[way].value);
            self.free_way(bucket, way);
            self.counters.expired += 1;
            self.counters.misses += 1;
            return None;
        }
        let line = &mut self.buckets[bucket].line;
        line.last_seen[way] = now;
        self.counters.hits += 1;
        Some(FlowMut {
            line,
            way,
            entry: &mut self.buckets[bucket].entries[way],
        })
    }

    /// Reads the live flow `key` without marking it seen or counting a lookup (e.g. to steer
    /// an ICMP error that embeds the flow).
    #[inline]
    #[must_use]
    pub fn peek(&self, key: &K, hash: u32, now: u32) -> Option<(FlowValue, FlowState)> {
        let (b, tag) = split(hash, self.mask);
        let (bucket, way) = self.find(b, tag, key)?;
        let line = &self.buckets[bucket].line;
        let raw = line.state[way];
        if is_expired(now, line.last_seen[way], self.timeout(raw)) {
            return None;
        }
        let state = FlowState::from_raw(raw & !SECONDARY)?;
        Some((self.buckets[bucket].entries[way].value, state))
    }

    /// Stores `key → value` in `state`, seen at `now`.
    ///
    /// If `key` is live it is overwritten ([`InsertOutcome::Replaced`], no token drawn).
    /// Otherwise the flow goes to a free or expired way of its primary bucket, else of its
    /// secondary bucket (two choices keep evictions rare at high load), else it evicts a live
    /// way of the two buckets it outranks or equals ([`FlowState::rank_raw`]): provisional
    /// entries first, then half-open handshakes and closing flows, then datagram flows, and
    /// among those of the lowest rank the one with the least time left before its idle
    /// timeout (for flows in the same state, the least recently seen). A new provisional entry
    /// (a spoofed ACK) evicts only provisional ones, a SYN no established flow: when every way
    /// of both buckets is out of reach nothing is stored ([`InsertOutcome::Refused`]). Only
    /// then is a token drawn ([`InsertOutcome::Throttled`] if none). An established entry is
    /// evicted only by another established one, which the pipeline never inserts.
    #[inline]
    pub fn insert(
        &mut self,
        key: &K,
        hash: u32,
        value: FlowValue,
        state: FlowState,
        now: u32,
    ) -> InsertOutcome {
        self.insert_with(key, hash, value, state, now, |_| {})
    }

    /// [`FlowTable::insert`], calling `on_removed` with every value that leaves the table on
    /// the way: the old value of a replaced key, an expired entry reclaimed, or the evicted one.
    #[inline]
    pub fn insert_with<F: FnMut(FlowValue)>(
        &mut self,
        key: &K,
        hash: u32,
        value: FlowValue,
        state: FlowState,
        now: u32,
        mut on_removed: F,
    ) -> InsertOutcome {
        let (b, tag) = split(hash, self.mask);

        if let Some((bucket, way)) = self.find(b, tag, key) {
            let line = &mut self.buckets[bucket].line;
            let raw = line.state[way];
            if is_expired(
                now,
                line.last_seen[way],
                self.timeout_ms[usize::from(raw & 7)],
            ) {
                on_removed(self.buckets[bucket].entries[way].value);
                self.free_way(bucket, way);
                self.counters.expired += 1;
            } else {
                line.state[way] = state as u8 | (raw & SECONDARY);
                line.last_seen[way] = now;
                on_removed(self.buckets[bucket].entries[way].value);
                self.buckets[bucket].entries[way].value = value;
                self.counters.replaced += 1;
                return InsertOutcome::Replaced;
            }
        }

        let rank = FlowState::rank_raw(state as u8);
        let (mut way, score) = self.victim(b, now, rank);
        let mut bucket = b;
        if score >= 0 {
            let s = alt_bucket(b, tag, self.mask);
            let (s_way, s_score) = self.victim(s, now, rank);
            if s_score < score {
                (bucket, way) = (s, s_way);
            } else if score == KEEP {
                self.counters.insert_refused += 1;
                return InsertOutcome::Refused;
            }
        }
        if !self.budget.take(now) {
            self.counters.insert_throttled += 1;
            return InsertOutcome::Throttled;
        }
        let line = &self.buckets[bucket].line;
        let raw = line.state[way];
        let outcome = if raw == 0 {
            InsertOutcome::Inserted
        } else {
            let live = !is_expired(now, line.last_seen[way], self.timeout(raw));
            on_removed(self.buckets[bucket].entries[way].value);
            self.free_way(bucket, way);
            if live {
                self.counters.evicted += 1;
                InsertOutcome::Evicted
            } else {
                self.counters.expired += 1;
                InsertOutcome::Inserted
            }
        };
        let secondary = if bucket == b {
            0
        } else {
            self.buckets[b].line.spill += 1;
            SECONDARY
        };
        let line = &mut self.buckets[bucket].line;
        line.tags[way] = tag;
        line.state[way] = state as u8 | secondary;
        line.last_seen[way] = now;
        self.buckets[bucket].entries[way] = FlowEntry {
            _align: [],
            key: *key,
            value,
        };
        self.len += 1;
        self.counters.inserts += 1;
        if state == FlowState::TcpProvisional {
            self.counters.provisional_inserts += 1;
        }
        outcome
    }

    /// Removes `key`, returning its value if it was present (expired or not).
    pub fn remove(&mut self, key: &K, hash: u32) -> Option<FlowValue> {
        let (b, tag) = split(hash, self.mask);
        let (bucket, way) = self.find(b, tag, key)?;
        self.free_way(bucket, way);
        Some(self.buckets[bucket].entries[way].value)
    }

    /// Reclaims expired flows in the next `max_buckets` buckets (round robin over the table)
    /// and returns how many it freed. Reads only tag lines: call it with a small budget (say
    /// 16–64 buckets) from the worker loop, e.g. after each burst or when a poll comes back
    /// empty.
    pub fn sweep(&mut self, now: u32, max_buckets: usize) -> usize {
        self.sweep_with(now, max_buckets, |_| {})
    }

    /// [`FlowTable::sweep`], calling `on_removed` with the value of every flow it reclaims.
    pub fn sweep_with<F: FnMut(FlowValue)>(
        &mut self,
        now: u32,
        max_buckets: usize,
        mut on_removed: F,
    ) -> usize {
        let mut freed = 0;
        for _ in 0..max_buckets.min(self.buckets.len()) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (b + 1) & self.mask;
            for way in 0..WAYS {
                let line = &self.buckets[b].line;
                let raw = line.state[way];
                if raw != 0 && is_expired(now, line.last_seen[way], self.timeout(raw)) {
                    on_removed(self.buckets[b].entries[way].value);
                    self.free_way(b, way);
                    freed += 1;
                }
            }
        }
        self.counters.expired += freed as u64;
        self.flooded(now);
        freed
    }

    /// Calls `f` on every occupied way (expired or not) of the buckets in `buckets` (clamped to
    /// the table) and drops those for which it returns `false`; returns how many were dropped.
    ///
    /// For re-pointing flows after a table-generation swap without stalling the worker: walk
    /// the table a slice of buckets per burst. Flows can also be re-validated lazily on hit,
    /// using [`FlowValue::slot`] as a generation tag.
    pub fn retain_buckets<F>(&mut self, buckets: Range<usize>, mut f: F) -> usize
    where
        F: FnMut(&K, &mut FlowValue, FlowState) -> bool,
    {
        let end = buckets.end.min(self.buckets.len());
        let mut dropped = 0;
        for b in buckets.start.min(end)..end {
            for way in 0..WAYS {
                let Some(state) = FlowState::from_raw(self.buckets[b].line.state[way] & !SECONDARY)
                else {
                    continue;
                };
                let entry = &mut self.buckets[b].entries[way];
                if !f(&entry.key, &mut entry.value, state) {
                    self.free_way(b, way);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Calls `f` on every live (unexpired) flow of the buckets in `buckets` (clamped to the
    /// table), changing nothing: for sampling the table a slice at a time (`flows` queries).
    pub fn visit_buckets<F>(&self, buckets: Range<usize>, now: u32, mut f: F)
    where
        F: FnMut(&K, FlowValue, FlowState),
    {
        let end = buckets.end.min(self.buckets.len());
        for b in buckets.start.min(end)..end {
            let line = &self.buckets[b].line;
            for way in 0..WAYS {
                let raw = line.state[way];
                let Some(state) = FlowState::from_raw(raw & !SECONDARY) else {
                    continue;
                };
                if is_expired(now, line.last_seen[way], self.timeout(raw)) {
                    continue;
                }
                let entry = &self.buckets[b].entries[way];
                f(&entry.key, entry.value, state);
            }
        }
    }

    /// [`FlowTable::retain_buckets`] over the whole table. O(capacity): at 1 Mi flows this is
    /// milliseconds, so keep it off the per-burst path.
    pub fn retain<F>(&mut self, f: F) -> usize
    where
        F: FnMut(&K, &mut FlowValue, FlowState) -> bool,
    {
        self.retain_buckets(0..self.buckets.len(), f)
    }

    /// Calls `f` on every occupied way (expired or not), which may update the value.
    pub fn for_each_mut<F>(&mut self, mut f: F)
    where
        F: FnMut(&K, &mut FlowValue, FlowState),
    {
        self.retain(|key, value, state| {
            f(key, value, state);
            true
        });
    }

    /// Drops every flow (counters are kept).
    pub fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.line = TagLine::EMPTY;
        }
        self.len = 0;
    }

    /// Checks the structural invariants (tests only): tags and states agree, `len` counts the
    /// occupied ways, each spill count matches the secondary flows pointing at its bucket, and
    /// every stored key sits in a bucket its hash allows, is found there, and is unique.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut spill = vec![0u32; self.buckets.len()];
        let mut len = 0;
        for (b, line) in self.buckets.iter().map(|k| &k.line).enumerate() {
            for way in 0..WAYS {
                let raw = line.state[way];
                assert_eq!(raw == 0, line.tags[way] == 0, "bucket {b} way {way}");
                if raw == 0 {
                    continue;
                }
                len += 1;
                let key = &self.buckets[b].entries[way].key;
                let (primary, tag) = split(self.hash(key), self.mask);
                assert_eq!(tag, line.tags[way]);
                if raw & SECONDARY == 0 {
                    assert_eq!(primary, b);
                } else {
                    assert_eq!(alt_bucket(b, tag, self.mask), primary);
                    spill[primary] += 1;
                }
                // Reachable, and not shadowed by a duplicate of the key.
                assert_eq!(self.find(primary, tag, key), Some((b, way)), "{key:?}");
            }
        }
        assert_eq!(len, self.len);
        for (b, line) in self.buckets.iter().map(|k| &k.line).enumerate() {
            assert_eq!(line.spill, spill[b], "spill of bucket {b}");
        }
    }
}

impl<K: FlowKey> fmt::Debug for FlowTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("timeout_ms", &self.timeout_ms)
            .field("budget", &self.budget)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}
