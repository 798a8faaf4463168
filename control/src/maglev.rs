//! Weighted Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4).
//!
//! The control plane builds a table of `M` slots (`M` prime) per pool; the data plane only reads
//! `table[flow_hash % M]` and forwards to that backend id. Consistent hashing lives entirely here.
//!
//! # Guarantees
//!
//! - **Empty is detectable.** Backend ids start at 1; slot value [`EMPTY`] (0) means "no backend".
//!   A pool with no backend of nonzero weight yields a table of zeros, never a partial table.
//! - **Drained backends hold nothing.** A backend with weight 0 gets no slot, and the table is
//!   exactly the one built without that backend (draining is removal for the table's purposes).
//! - **Reachable.** Every backend with nonzero weight holds at least one slot, which is why the
//!   table must have at least as many slots as such backends.
//! - **Proportional.** Each backend's slot count is within a slot or two of `M·w/W` (W = sum of
//!   weights); see "Weighting" below.
//! - **Deterministic.** The same backends and size give the same table on every run and platform,
//!   whatever order the backends are passed in: they are sorted by `id` first, permutations come
//!   from `key` through fixed 64-bit mixers, and no randomly seeded hasher is involved.
//! - **Minimal disruption.** Removing, adding or reweighting one backend moves that backend's
//!   slots plus a small fraction of the others (the Maglev paper's property; the tests measure it).
//!   Use [`changed_slots`] to publish only the slots that differ.
//!
//! # Permutation
//!
//! Backend `i` prefers slots in the order `offset, offset + skip, offset + 2·skip, … (mod M)` with
//! `offset = h1(key) % M` and `skip = h2(key) % (M − 1) + 1`. Because `M` is prime every skip is
//! coprime with `M`, so each preference list visits every slot exactly once. `h1` is the
//! SplitMix64 finalizer and `h2` the MurmurHash3 `fmix64` finalizer, each over the key xored with
//! its own seed: two independent, well-mixed 64-bit hashes. The key must be a stable identity of
//! the backend (e.g. a hash of its address and port), not its position in a list; the id is only
//! the value written into the slots.
//!
//! # Weighting
//!
//! The paper's population loop lets every backend take one turn per round (claim its next
//! preferred empty slot). Here turns are handed out by a divisor method instead of round-robin:
//!
//! 1. every backend with nonzero weight first takes one turn, in id order (this is round 0 of the
//!    paper and guarantees reachability);
//! 2. afterwards the next turn goes to the backend with the smallest *pass* `(2k + 1) / w`, where
//!    `k` is the number of slots it already holds and `w` its weight (ties go to the lower id).
//!
//! Step 2 is the Sainte-Laguë apportionment run as a stride scheduler: turns interleave smoothly in
//! proportion to weight (the same order Katran's cumulative-weight loop produces, without scanning
//! every backend each round) and the final counts are the Sainte-Laguë apportionment of `M` slots,
//! which lies within a slot or two of the exact quota. With equal weights the turn order is
//! exactly the paper's round-robin, so unweighted tables are classic Maglev tables. The next turn
//! is taken from a binary heap, so building costs `O(M log N)` for turns plus the usual Maglev
//! probing for empty slots; comparisons are exact integer cross-multiplications.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

/// Default table size: a prime, as the paper suggests for up to a few hundred backends.
pub const DEFAULT_SIZE: u32 = 65_537;

/// Largest accepted table size: the largest prime below 2^24 (64 MiB of slots). It keeps the
/// slot arithmetic in `u32` and the pass products in `u64`, and bounds what a bad policy can ask
/// the control plane to allocate.
pub const MAX_SIZE: u32 = 16_777_213;

/// Slot value meaning "no backend". Backend ids are never 0.
pub const EMPTY: u32 = 0;

/// One backend of a pool, as the Maglev builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// Value written into the backend's slots; at least 1 (0 is [`EMPTY`]), unique in the pool.
    pub id: u32,
    /// Relative share of slots; 0 drains the backend (it gets no slot).
    pub weight: u32,
    /// Stable identity (e.g. a hash of address and port); it alone determines the permutation,
    /// so it must not change when other backends come and go. Unique in the pool.
    pub key: u64,
}

/// Why a table could not be built. Nothing is built when any of these is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The size is not a prime number.
    SizeNotPrime { size: u32 },
    /// The size is larger than [`MAX_SIZE`].
    SizeTooLarge { size: u32, max: u32 },
    /// More backends with nonzero weight than slots: some could get no slot.
    TooManyBackends { backends: usize, size: u32 },
    /// A backend has id 0, which is reserved for empty slots.
    ZeroId,
    /// Two backends share an id.
    DuplicateId { id: u32 },
    /// Two backends share a key, so they would share a permutation.
    DuplicateKey { key: u64, ids: (u32, u32) },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SizeNotPrime { size } => {
                write!(
                    f,
                    "Maglev table size {size} is not prime (default is {DEFAULT_SIZE})"
                )
            }
            Self::SizeTooLarge { size, max } => {
                write!(
                    f,
                    "Maglev table size {size} is larger than the maximum {max}"
                )
            }
            Self::TooManyBackends { backends, size } => write!(
                f,
                "{backends} backends with nonzero weight do not fit a Maglev table of {size} slots"
            ),
            Self::ZeroId => write!(f, "backend id 0 is reserved for empty Maglev slots"),
            Self::DuplicateId { id } => write!(f, "backend id {id} appears more than once"),
            Self::DuplicateKey { key, ids } => write!(
                f,
                "backends {} and {} share the Maglev key {key:#018x}",
                ids.0, ids.1
            ),
        }
    }
}

impl std::error::Error for MaglevError {}

/// Whether `n` is prime. Deterministic trial division by 6k ± 1 (at most ~22k divisions for a
/// `u32`), meant for validating configured table sizes, not for hot paths.
#[must_use]
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// Builds the Maglev lookup table of `size` slots for `backends`.
///
/// The result has exactly `size` entries, each a backend id or [`EMPTY`]; it is all [`EMPTY`]
/// when no backend has a nonzero weight (including an empty list), and has no [`EMPTY`] slot
/// otherwise. See the module documentation for the guarantees.
///
/// # Errors
///
/// [`MaglevError`] if `size` is not a prime no larger than [`MAX_SIZE`], if an id is 0, if ids or
/// keys repeat (weight-0 backends included), or if more backends have nonzero weight than there
/// are slots.
pub fn build(backends: &[MaglevBackend], size: u32) -> Result<Vec<u32>, MaglevError> {
    if size > MAX_SIZE {
        return Err(MaglevError::SizeTooLarge {
            size,
            max: MAX_SIZE,
        });
    }
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime { size });
    }

    let mut sorted = backends.to_vec();
    sorted.sort_unstable_by_key(|b| b.id);
    if sorted.first().is_some_and(|b| b.id == EMPTY) {
        return Err(MaglevError::ZeroId);
    }
    if let Some(pair) = sorted.windows(2).find(|p| p[0].id == p[1].id) {
        return Err(MaglevError::DuplicateId { id: pair[0].id });
    }
    let mut keys: Vec<(u64, u32)> = sorted.iter().map(|b| (b.key, b.id)).collect();
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(MaglevError::DuplicateKey {
            key: pair[0].0,
            ids: (pair[0].1, pair[1].1),
        });
    }

    sorted.retain(|b| b.weight > 0);
    if sorted.len() > size as usize {
        return Err(MaglevError::TooManyBackends {
            backends: sorted.len(),
            size,
        });
    }

    let mut table = vec![EMPTY; size as usize];
    if !sorted.is_empty() {
        populate(&sorted, &mut table, size);
    }
    Ok(table)
}

/// Slots whose value differs between `old` and `new`, as `(slot, new id)` in slot order: what a
/// publisher has to write to turn `old` into `new`. Slots past the end of `old` are all reported;
/// tables of different sizes are different tables, so a size change should publish `new` whole.
pub fn changed_slots<'a>(old: &'a [u32], new: &'a [u32]) -> impl Iterator<Item = (u32, u32)> + 'a {
    // Counting slots with a u32 range avoids a truncating cast; tables never exceed MAX_SIZE.
    (0u32..)
        .zip(new.iter().copied())
        .filter(move |&(slot, id)| old.get(slot as usize) != Some(&id))
}

/// Fills every slot of `table` (all [`EMPTY`], `size` long) from `backends` (sorted by id, all
/// with nonzero weight, no more than `size` of them).
///
/// [`TurnOrder`] says who takes the next turn; [`Fill`] finds the slot. How it finds it changes
/// as the table fills up, but never which slot it finds: the first empty one of the backend's
/// preference list after the last one it took.
fn populate(backends: &[MaglevBackend], table: &mut [u32], size: u32) {
    debug_assert!(!backends.is_empty() && backends.len() <= table.len());
    PH_T.with(|p| p.borrow_mut().clear());
    PH_T.with(|p| p.borrow_mut().push(std::time::Instant::now()));
    let mut fill = Fill::new(backends, size);
    let mut turns = TurnOrder::new(backends);
    while !fill.take_turns(turns.next_batch(), table) {}
    PH_T.with(|p| p.borrow_mut().push(std::time::Instant::now()));
}
thread_local! { pub static PH_T: std::cell::RefCell<Vec<std::time::Instant>> = const { std::cell::RefCell::new(Vec::new()) }; }

/// The order in which backends take turns: round 0 (every backend once, in index = id order),
/// then always the backend with the smallest pass `(2k + 1) / w`, ties to the lower index.
///
/// Backends of equal weight share their pass after round 0, so the heap holds one entry per
/// weight class: when a class's pass comes up, all its members take a turn, in index order,
/// and its pass moves on. Classes whose passes tie are popped together and their members
/// interleaved in index order. With equal weights this is round robin.
struct TurnOrder {
    classes: WeightClasses,
    passes: BinaryHeap<Pass>,
    /// Backends whose turn comes next, in index order; round 0 to begin with.
    batch: Vec<u32>,
    /// Whether `batch` is still round 0.
    first: bool,
    /// Scratch for the classes popped together.
    tied: Vec<Pass>,
}

impl TurnOrder {
    fn new(backends: &[MaglevBackend]) -> Self {
        let classes = WeightClasses::new(backends);
        let passes = (0u32..)
            .zip(&classes.weights)
            .map(|(class, &weight)| Pass {
                num: 3,
                weight,
                class,
            })
            .collect();
        Self {
            batch: (0u32..).take(backends.len()).collect(),
            first: true,
            classes,
            passes,
            tied: Vec::new(),
        }
    }

    /// The backends taking the next turns, in order.
    fn next_batch(&mut self) -> &[u32] {
        if std::mem::take(&mut self.first) {
            return &self.batch;
        }
        let first = self
            .passes
            .pop()
            .expect("one pass per class, always pushed back");
        self.tied.clear();
        self.tied.push(first);
        while let Some(&next) = self.passes.peek().filter(|p| **p == first) {
            self.tied.push(next);
            self.passes.pop();
        }
        self.passes.extend(self.tied.iter().map(|p| Pass {
            num: p.num + 2,
            ..*p
        }));
        if let [only] = self.tied[..] {
            return self.classes.members(only.class);
        }
        self.batch.clear();
        for pass in &self.tied {
            self.batch
                .extend_from_slice(self.classes.members(pass.class));
        }
        self.batch.sort_unstable();
        &self.batch
    }
}

/// The backends grouped by weight.
struct WeightClasses {
    /// Weight of each class, ascending.
    weights: Vec<u64>,
    /// Backend indices ordered by (weight, index): each class is a contiguous run.
    order: Vec<u32>,
    /// Start of each class's run in `order`, plus the end of the last one.
    starts: Vec<usize>,
}

impl WeightClasses {
    fn new(backends: &[MaglevBackend]) -> Self {
        let mut order: Vec<u32> = (0u32..).take(backends.len()).collect();
        // Stable, so each run stays in index order.
        order.sort_by_key(|&idx| backends[idx as usize].weight);
        let mut weights = Vec::new();
        let mut starts = Vec::new();
        for (at, &idx) in order.iter().enumerate() {
            let weight = u64::from(backends[idx as usize].weight);
            if weights.last() != Some(&weight) {
                weights.push(weight);
                starts.push(at);
            }
        }
        starts.push(order.len());
        Self {
            weights,
            order,
            starts,
        }
    }

    /// The members of `class`, in index order.
    fn members(&self, class: u32) -> &[u32] {
        let class = class as usize;
        &self.order[self.starts[class]..self.starts[class + 1]]
    }
}

/// A weight class's next pass; the heap hands out the smallest.
#[derive(Clone, Copy)]
struct Pass {
    /// Numerator: `2k + 1` when every member of the class holds `k` slots.
    num: u64,
    /// Denominator: the class's weight (nonzero).
    weight: u64,
    /// Index into [`WeightClasses::weights`].
    class: u32,
}

impl Ord for Pass {
    /// `BinaryHeap` pops the greatest element, so the greatest `Pass` is the smallest fraction.
    /// Classes with equal passes compare equal; [`TurnOrder`] pops them together.
    fn cmp(&self, other: &Self) -> Ordering {
        // num <= 2·MAX_SIZE + 3 < 2^25 and weight < 2^32, so the products fit in u64.
        let this = self.num * other.weight;
        let that = other.num * self.weight;
        that.cmp(&this)
    }
}

impl PartialOrd for Pass {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pass {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pass {}

/// Lanes of a [`Fill::probe`] at most.
const LANES: usize = 4;

/// Where one backend is in its preference list.
#[derive(Clone, Copy)]
struct Cursor {
    /// Next preferred slot to try.
    next: u32,
    /// The value its slots get.
    id: u32,
    /// `(k + 1)·skip mod M` for `k < LANES`: the offsets of a probe's lanes.
    skips: [u32; LANES],
}

/// The table as probing fills it.
struct Fill {
    /// One bit per slot, set once the slot is taken: a 32nd of the table, so probing stays in
    /// the L1 cache.
    taken: Vec<u64>,
    cursors: Vec<Cursor>,
    size: u32,
    /// Slots still empty.
    left: u32,
    /// Lanes per probe in the current phase; 0 once the endgame has started.
    lanes: usize,
    /// Slots left at which the current phase ends.
    until: u32,
    endgame: Option<Endgame>,
}

impl Fill {
    fn new(backends: &[MaglevBackend], size: u32) -> Self {
        let cursors = backends
            .iter()
            .map(|b| {
                let (offset, skip) = permutation(b.key, size);
                let mut skips = [skip; LANES];
                for k in 1..LANES {
                    skips[k] = advance(skips[k - 1], skip, size);
                }
                Cursor {
                    next: offset,
                    id: b.id,
                    skips,
                }
            })
            .collect();
        let mut fill = Self {
            taken: vec![0; (size as usize).div_ceil(64)],
            cursors,
            size,
            left: size,
            lanes: 0,
            until: size,
            endgame: None,
        };
        fill.next_phase();
        fill
    }

    /// Moves on to the next phase once the current one is over (`left == until`).
    fn next_phase(&mut self) {
        let f: Vec<f64> = std::env::var("PH")
            .ok()
            .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
            .unwrap_or(vec![0.5, 0.125, 0.03]);
        let l: Vec<usize> = std::env::var("LN")
            .ok()
            .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
            .unwrap_or(vec![2, 4, 4, 4]);
        let endgame = Endgame::threshold(self.size);
        let at = |x: f64| ((f64::from(self.size) * x) as u32).max(endgame);
        let phases = [
            (l[0], at(f[0])),
            (l[1], at(f[1])),
            (l[2], at(f[2])),
            (l[3], endgame),
        ];
        PH_T.with(|p| p.borrow_mut().push(std::time::Instant::now()));
        if let Some(&(lanes, until)) = phases.iter().find(|&&(_, until)| until < self.left) {
            self.lanes = lanes;
            self.until = until;
        } else if self.endgame.is_none() {
            self.lanes = 0;
            self.until = 0;
            self.endgame = Some(Endgame::new(self));
        }
    }

    /// Gives each backend of `batch` its turn, in order, until the table is full. Returns
    /// whether it is.
    fn take_turns(&mut self, mut batch: &[u32], table: &mut [u32]) -> bool {
        while !batch.is_empty() {
            let now = batch.len().min((self.left - self.until) as usize);
            let (these, rest) = batch.split_at(now);
            match self.lanes {
                0 => self.arithmetic(these, table),
                1 => self.probe::<1>(these, table),
                2 => self.probe::<2>(these, table),
                _ => self.probe::<4>(these, table),
            }
            self.left -= u32::try_from(now).expect("no more turns than slots");
            if self.left == 0 {
                return true;
            }
            if self.left == self.until {
                self.next_phase();
            }
            batch = rest;
        }
        false
    }

    /// Turns of `batch` by probing `L` preferences at a time.
    ///
    /// The `L` probes are tested without branching, then one branch asks whether any was
    /// empty: a loop that branches on every probe mispredicts its exit about once per turn,
    /// which costs more than a few extra probes.
    #[inline(never)]
    fn probe<const L: usize>(&mut self, batch: &[u32], table: &mut [u32]) {
        let size = self.size;
        let taken = &mut self.taken[..];
        for &idx in batch {
            let cursor = &mut self.cursors[idx as usize];
            let slot = first_empty::<L>(taken, cursor.next, &cursor.skips, size);
            taken[slot as usize / 64] |= 1 << (slot % 64);
            cursor.next = advance(slot, cursor.skips[0], size);
            table[slot as usize] = cursor.id;
        }
    }

    /// Turns of `batch` by [`Endgame`].
    #[inline(never)]
    fn arithmetic(&mut self, batch: &[u32], table: &mut [u32]) {
        let endgame = self.endgame.as_mut().expect("the endgame has started");
        for &idx in batch {
            let cursor = &mut self.cursors[idx as usize];
            let slot = endgame.take(idx as usize, cursor.next, cursor.skips[0]);
            cursor.next = advance(slot, cursor.skips[0], self.size);
            table[slot as usize] = cursor.id;
        }
    }
}

/// The first slot from `next` on of the preference list with these skips that `taken` does
/// not have; there must be one.
#[inline(always)]
fn first_empty<const L: usize>(taken: &[u64], next: u32, skips: &[u32; LANES], size: u32) -> u32 {
    let is_empty = |slot: u32| taken[slot as usize / 64] & 1 << (slot % 64) == 0;
    if L == 1 {
        let (skip, back) = (skips[0], size - skips[0]);
        let mut slot = next;
        while !is_empty(slot) {
            slot = step(slot, skip, back);
        }
        return slot;
    }
    let mut lanes = [next; L];
    for k in 1..L {
        lanes[k] = advance(next, skips[k - 1], size);
    }
    let (stride, back) = (skips[L - 1], size - skips[L - 1]);
    loop {
        let mut empty = 0u32;
        for (k, &slot) in lanes.iter().enumerate() {
            empty |= u32::from(is_empty(slot)) << k;
        }
        if empty != 0 {
            return lanes[empty.trailing_zeros() as usize];
        }
        for slot in &mut lanes {
            *slot = step(*slot, stride, back);
        }
    }
}

/// The last few empty slots, found by arithmetic instead of probing.
///
/// With `E` slots left a probe finds one with probability `E/M`, so a turn probes about `M/E`
/// times, and the last `√M` turns would do about half of the probing of a build. Instead, for
/// each empty slot `s` the number of steps `j` with `next + j·skip ≡ s (mod M)` is
/// `j = (s − next)·skip⁻¹ mod M` (`M` is prime, so `skip` has an inverse), and the backend takes
/// the empty slot with the smallest `j`: the very slot probing would have reached first.
struct Endgame {
    /// The empty slots, in no particular order.
    empty: Vec<u32>,
    /// `skip⁻¹ mod M` per backend, 0 until first needed.
    inverse: Vec<u32>,
    size: u32,
    /// `⌊(2^64 − 1)/M⌋`, for reducing products modulo `M` without a division.
    reciprocal: u64,
}

impl Endgame {
    /// Empty slots at which the endgame starts: about where a scan of the empty list (a
    /// multiplication and a reduction per slot) gets cheaper than probing (`M/E` probes).
    fn threshold(size: u32) -> u32 {
        let f: f64 = std::env::var("EG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        ((f64::from(size.isqrt()) * f) as u32).min(size)
    }

    fn new(fill: &Fill) -> Self {
        let mut empty = Vec::new();
        for (word, &bits) in (0u32..).zip(&fill.taken) {
            let mut free = !bits;
            while free != 0 {
                let slot = word * 64 + free.trailing_zeros();
                if slot >= fill.size {
                    break;
                }
                empty.push(slot);
                free &= free - 1;
            }
        }
        Self {
            empty,
            inverse: vec![0; fill.cursors.len()],
            size: fill.size,
            reciprocal: u64::MAX / u64::from(fill.size),
        }
    }

    /// Removes and returns the first empty slot of the preference list with this skip from
    /// `next` on, for backend `idx`.
    fn take(&mut self, idx: usize, next: u32, skip: u32) -> u32 {
        let size = self.size;
        if self.inverse[idx] == 0 {
            self.inverse[idx] = inverse_mod(skip, size);
        }
        let inverse = u64::from(self.inverse[idx]);
        let mut best = (u64::MAX, 0);
        for (at, &slot) in self.empty.iter().enumerate() {
            let distance = if slot >= next {
                slot - next
            } else {
                slot + size - next
            };
            let steps = self.reduce(u64::from(distance) * inverse);
            if steps < best.0 {
                best = (steps, at);
            }
        }
        self.empty.swap_remove(best.1)
    }

    /// `x mod M` for `x < M²` (Barrett reduction: the quotient estimate is at most one short).
    #[inline]
    fn reduce(&self, x: u64) -> u64 {
        let size = u64::from(self.size);
        #[allow(clippy::cast_possible_truncation)] // the high half of a u128 product fits a u64
        let quotient = ((u128::from(x) * u128::from(self.reciprocal)) >> 64) as u64;
        let rest = x - quotient * size;
        if rest >= size {
            rest - size
        } else {
            rest
        }
    }
}

/// `a⁻¹ mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    debug_assert_eq!(r0, 1, "{a} has no inverse modulo {m}");
    u32::try_from(t0.rem_euclid(i64::from(m))).expect("a residue modulo a u32 fits in a u32")
}

#[inline(always)]
fn step(slot: u32, skip: u32, back: u32) -> u32 {
    match slot.checked_sub(back) {
        Some(wrapped) => wrapped,
        None => slot + skip,
    }
}

/// `(slot + skip) mod size` for `slot < size`, `skip < size`, `size <= MAX_SIZE < 2^31`: no
/// division and no overflow.
#[inline]
fn advance(slot: u32, skip: u32, size: u32) -> u32 {
    match slot.checked_sub(size - skip) {
        Some(wrapped) => wrapped,
        None => slot + skip,
    }
}

/// `(offset, skip)` of the preference list of the backend with this `key` in a table of `size`
/// slots (`size` prime, so at least 2).
fn permutation(key: u64, size: u32) -> (u32, u32) {
    debug_assert!(size >= 2);
    let offset = reduce(hash_offset(key), size);
    let skip = reduce(hash_skip(key), size - 1) + 1;
    (offset, skip)
}

/// `h mod m` as a `u32`.
fn reduce(h: u64, m: u32) -> u32 {
    u32::try_from(h % u64::from(m)).expect("a remainder modulo a u32 fits in a u32")
}

/// Seeds that make the two hashes of one key independent; arbitrary fixed odd constants.
const OFFSET_SEED: u64 = 0x5157_4c59_4152_4431; // "SWYARD1" + 1
const SKIP_SEED: u64 = 0x6d61_676c_6576_5f32; // "maglev_2"

/// First Maglev hash: the SplitMix64 finalizer (Steele, Lea, Flood; the constants of Java's
/// `SplittableRandom`).
fn hash_offset(key: u64) -> u64 {
    let mut z = (key ^ OFFSET_SEED).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Second Maglev hash: MurmurHash3's `fmix64` finalizer, a different mixer from the first.
fn hash_skip(key: u64) -> u64 {
    let mut z = key ^ SKIP_SEED;
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A backend with a key derived from its id the way a compiler might (hash of the address).
    fn backend(id: u32, weight: u32) -> MaglevBackend {
        MaglevBackend {
            id,
            weight,
            key: u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678,
        }
    }

    fn equal(n: u32) -> Vec<MaglevBackend> {
        (1..=n).map(|id| backend(id, 1)).collect()
    }

    /// Slot counts per id (index = id).
    fn counts(table: &[u32], max_id: u32) -> Vec<usize> {
        let mut c = vec![0usize; max_id as usize + 1];
        for &id in table {
            c[id as usize] += 1;
        }
        c
    }

    /// Slots that moved although neither their old nor their new owner is `changed`.
    fn moved_off_unaffected(old: &[u32], new: &[u32], changed: u32) -> usize {
        old.iter()
            .zip(new)
            .filter(|&(&o, &n)| o != n && o != changed && n != changed)
            .count()
    }

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(DEFAULT_SIZE));
        assert!(is_prime(655_373));
        assert!(is_prime(MAX_SIZE));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(65_536));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65_537 * 3));
        assert!(!is_prime(65_521 * 65_519)); // product of two primes near 2^16
                                             // Nothing between MAX_SIZE and 2^24 is prime: MAX_SIZE is the largest prime below 2^24.
        assert!((MAX_SIZE + 1..1 << 24).all(|n| !is_prime(n)));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            build(&equal(3), 65_536),
            Err(MaglevError::SizeNotPrime { size: 65_536 })
        );
        assert_eq!(build(&[], 1), Err(MaglevError::SizeNotPrime { size: 1 }));
        assert_eq!(
            build(&equal(3), 4_294_967_291),
            Err(MaglevError::SizeTooLarge {
                size: 4_294_967_291,
                max: MAX_SIZE
            })
        );
        assert_eq!(
            build(&[backend(0, 1), backend(1, 1)], 7),
            Err(MaglevError::ZeroId)
        );
        assert_eq!(
            build(&[backend(2, 1), backend(1, 1), backend(2, 0)], 7),
            Err(MaglevError::DuplicateId { id: 2 })
        );
        let twin = MaglevBackend {
            id: 9,
            ..backend(4, 1)
        };
        assert_eq!(
            build(&[backend(4, 1), twin], 7),
            Err(MaglevError::DuplicateKey {
                key: backend(4, 1).key,
                ids: (4, 9)
            })
        );
        assert_eq!(
            build(&equal(8), 7),
            Err(MaglevError::TooManyBackends {
                backends: 8,
                size: 7
            })
        );
        // Drained backends do not count against the size.
        let mut eight = equal(8);
        eight[0].weight = 0;
        assert!(build(&eight, 7).is_ok());
        // Errors render as operator-readable messages.
        assert!(MaglevError::SizeNotPrime { size: 10 }
            .to_string()
            .contains("not prime"));
    }

    #[test]
    fn empty_pool_is_all_empty() {
        assert_eq!(build(&[], DEFAULT_SIZE).unwrap(), vec![EMPTY; 65_537]);
        let drained: Vec<_> = (1..=5).map(|id| backend(id, 0)).collect();
        assert_eq!(build(&drained, 13).unwrap(), vec![EMPTY; 13]);
    }

    #[test]
    fn single_backend_fills_the_table() {
        let table = build(&[backend(7, 3)], DEFAULT_SIZE).unwrap();
        assert!(table.iter().all(|&id| id == 7));
        assert_eq!(build(&[backend(1, 1)], 2).unwrap(), [1, 1]);
        // As many backends as slots: one slot each.
        let mut full = build(&equal(13), 13).unwrap();
        full.sort_unstable();
        assert_eq!(full, (1..=13).collect::<Vec<_>>());
    }

    #[test]
    fn deterministic_and_order_independent() {
        let backends: Vec<_> = (1..=50).map(|id| backend(id, id % 7 + 1)).collect();
        let a = build(&backends, DEFAULT_SIZE).unwrap();
        let b = build(&backends, DEFAULT_SIZE).unwrap();
        assert_eq!(a, b);
        let mut reversed = backends.clone();
        reversed.reverse();
        assert_eq!(build(&reversed, DEFAULT_SIZE).unwrap(), a);
        assert!(a.iter().all(|&id| id != EMPTY));
    }

    /// Pins the permutation hashes and the turn order: a table built today must be the table
    /// built by every later version, or an upgrade of the control plane would move connections.
    #[test]
    fn golden_table() {
        let table = build(&[backend(1, 1), backend(2, 2), backend(3, 1)], 13).unwrap();
        // Computed by an independent Python transcription of this module.
        assert_eq!(table, [2, 1, 2, 1, 3, 1, 2, 2, 2, 2, 2, 3, 3]);
        // Published test vectors: SplitMix64's first output for seed 0, and fmix64(1).
        assert_eq!(hash_offset(OFFSET_SEED), 0xe220_a839_7b1d_cdaf);
        assert_eq!(hash_skip(SKIP_SEED ^ 1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(hash_offset(0), 0x0856_6cba_f958_44b2);
        assert_eq!(hash_skip(0), 0x540f_514d_78da_49df);
    }

    #[test]
    fn equal_weights_are_classic_maglev() {
        let n = 100;
        let table = build(&equal(n), DEFAULT_SIZE).unwrap();
        let c = counts(&table, n);
        let (min, max) = (c[1..].iter().min().unwrap(), c[1..].iter().max().unwrap());
        assert!(max - min <= 1, "counts range {min}..={max}");
        // The first M mod N backends (in id order) get the extra slot, as in the paper's loop.
        let extra = (DEFAULT_SIZE % n) as usize;
        assert!(c[1..=extra].iter().all(|&k| k == *max));
    }

    #[test]
    fn weight_shares_within_one_percent() {
        let weights = [1, 2, 3, 5, 8, 13, 21, 34, 55, 100];
        let backends: Vec<_> = (1u32..)
            .zip(weights)
            .map(|(id, w)| backend(id, w))
            .collect();
        let table = build(&backends, DEFAULT_SIZE).unwrap();
        let c = counts(&table, 10);
        let total: u32 = weights.iter().sum();
        for b in &backends {
            let target = f64::from(DEFAULT_SIZE) * f64::from(b.weight) / f64::from(total);
            let got = c[b.id as usize] as f64;
            let err = (got - target).abs() / target;
            assert!(
                err < 0.01,
                "backend {} weight {}: {got} slots, target {target:.1}",
                b.id,
                b.weight
            );
            // The apportionment is tighter than the 1% asked for: within two slots.
            assert!((got - target).abs() <= 2.0, "{got} vs {target:.1}");
        }
    }

    #[test]
    fn tiny_weights_still_get_a_slot() {
        let mut backends = equal(20);
        for b in &mut backends {
            b.weight = 1_000_000;
        }
        backends.push(backend(21, 1));
        let c = counts(&build(&backends, 101).unwrap(), 21);
        assert_eq!(c[21], 1);
    }

    #[test]
    fn drained_backend_holds_no_slot_and_equals_removal() {
        let mut backends: Vec<_> = (1..=10).map(|id| backend(id, id)).collect();
        backends[3].weight = 0;
        let drained = build(&backends, DEFAULT_SIZE).unwrap();
        assert!(!drained.contains(&4));
        assert!(!drained.contains(&EMPTY));
        backends.remove(3);
        assert_eq!(build(&backends, DEFAULT_SIZE).unwrap(), drained);
    }

    #[test]
    fn removal_moves_few_slots_off_unaffected_backends() {
        let m = DEFAULT_SIZE;
        let backends = equal(100);
        let before = build(&backends, m).unwrap();
        let mut worst = 0;
        let mut sum = 0;
        for removed in [1, 37, 64, 100] {
            let rest: Vec<_> = backends
                .iter()
                .copied()
                .filter(|b| b.id != removed)
                .collect();
            let after = build(&rest, m).unwrap();
            // Every slot of the removed backend moves, and nothing else is left empty.
            assert!(!after.contains(&removed) && !after.contains(&EMPTY));
            let moved = moved_off_unaffected(&before, &after, removed);
            worst = worst.max(moved);
            sum += moved;
        }
        eprintln!(
            "maglev removal, N=100 M={m}: worst {worst} slots ({:.3}% of M) moved off unaffected \
             backends, mean {:.3}%",
            100.0 * worst as f64 / f64::from(m),
            100.0 * sum as f64 / 4.0 / f64::from(m)
        );
        assert!(worst * 50 < m as usize, "{worst} slots moved (>= 2% of M)");
    }

    #[test]
    fn addition_moves_few_slots_off_unaffected_backends() {
        let m = DEFAULT_SIZE;
        let before = build(&equal(100), m).unwrap();
        let after = build(&equal(101), m).unwrap();
        let moved = moved_off_unaffected(&before, &after, 101);
        eprintln!(
            "maglev addition, N=100->101 M={m}: {moved} slots ({:.3}% of M) moved between \
             unaffected backends",
            100.0 * moved as f64 / f64::from(m)
        );
        assert!(moved * 50 < m as usize);
    }

    #[test]
    fn reweighting_changes_a_bounded_number_of_slots() {
        let m = DEFAULT_SIZE;
        let n = 100;
        let mut backends: Vec<_> = (1..=n).map(|id| backend(id, 100)).collect();
        let before = build(&backends, m).unwrap();
        backends[41].weight = 150; // id 42: +50%
        let after = build(&backends, m).unwrap();
        let changed = changed_slots(&before, &after).count();
        // Ideal: id 42 gains 150/10050 − 100/10000 of the table.
        let ideal = f64::from(m) * (150.0 / 10_050.0 - 100.0 / 10_000.0);
        let moved = moved_off_unaffected(&before, &after, 42);
        eprintln!(
            "maglev reweight 100->150 of one of N=100, M={m}: {changed} slots changed \
             (ideal {ideal:.0}), {moved} ({:.3}% of M) between unaffected backends",
            100.0 * moved as f64 / f64::from(m)
        );
        let c = counts(&after, n);
        assert!((c[42] as f64 - f64::from(m) * 150.0 / 10_050.0).abs() <= 2.0);
        assert!(moved * 50 < m as usize);
        assert!((changed as f64) < ideal + 0.02 * f64::from(m));
    }

    #[test]
    fn changed_slots_reports_only_differences() {
        let old = [1, 2, 3, 4];
        let new = [1, 5, 3, 6, 7];
        assert_eq!(
            changed_slots(&old, &new).collect::<Vec<_>>(),
            [(1, 5), (3, 6), (4, 7)]
        );
        assert_eq!(changed_slots(&old, &old).count(), 0);
    }

    fn arb_backends(max: usize) -> impl Strategy<Value = Vec<MaglevBackend>> {
        proptest::collection::btree_map(1u32..10_000, (0u32..1_000, any::<u64>()), 0..max)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(id, (weight, key))| MaglevBackend { id, weight, key })
                    .collect()
            })
            .prop_filter("keys must be unique", |v: &Vec<MaglevBackend>| {
                let mut keys: Vec<u64> = v.iter().map(|b| b.key).collect();
                keys.sort_unstable();
                keys.windows(2).all(|p| p[0] != p[1])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_table_is_sound(
            backends in arb_backends(40),
            size in prop::sample::select(vec![41u32, 251, 1_009, 4_099]),
            seed in any::<u64>(),
        ) {
            let table = build(&backends, size).unwrap();
            prop_assert_eq!(table.len(), size as usize);
            // Order independence: a shuffled input gives the same table.
            let mut shuffled = backends.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = hash_offset(s);
                shuffled.swap(i, usize::try_from(s % (i as u64 + 1)).unwrap());
            }
            prop_assert_eq!(&build(&shuffled, size).unwrap(), &table);

            let live: Vec<_> = backends.iter().filter(|b| b.weight > 0).collect();
            if live.is_empty() {
                prop_assert!(table.iter().all(|&id| id == EMPTY));
                return Ok(());
            }
            let total: u64 = live.iter().map(|b| u64::from(b.weight)).sum();
            let max_id = backends.iter().map(|b| b.id).max().unwrap();
            let c = counts(&table, max_id);
            prop_assert_eq!(c[EMPTY as usize], 0);
            for b in &backends {
                let got = c[b.id as usize] as f64;
                if b.weight == 0 {
                    prop_assert_eq!(got, 0.0);
                    continue;
                }
                prop_assert!(got >= 1.0);
                let target = f64::from(size) * f64::from(b.weight) / total as f64;
                // Sainte-Laguë stays close to the quota; the forced first slot adds at most one.
                prop_assert!(
                    (got - target).abs() <= 3.0 + 0.01 * target,
                    "id {} w {}: {} slots, target {:.2}", b.id, b.weight, got, target
                );
            }
        }
    }
}
