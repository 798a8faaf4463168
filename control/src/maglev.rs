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
//! exactly the paper's round-robin, so unweighted tables are classic Maglev tables. Passes are
//! compared exactly, by integer cross-multiplication.
//!
//! # Building fast
//!
//! Tables are rebuilt whenever weights change, so the build is tuned; none of this changes a
//! table, which is always the one the definitions above give (the tests check it against a plain
//! transcription of them).
//!
//! - **Turn order.** Backends of equal weight share their pass after round 0 and are handled as
//!   one class: equal weights are plain round robin, and otherwise a calendar of buckets keyed by
//!   the pass orders the classes in a few additions per turn instead of a heap's `log N`
//!   comparisons.
//! - **Probing.** Which slots are taken lives in a bitset a sixteenth of the table's size (it stays
//!   in the L1 cache) with each slot's bit stored twice, at `s` and `s + M`, so `base + k·skip`
//!   needs no reduction modulo `M`. A turn tests 1, 2, 4 or 8 consecutive preferences at once,
//!   more as the table fills, and branches once per group: a branch per probe would be
//!   mispredicted about once per turn. No division per probe or per backend: reductions modulo
//!   `M` are Barrett reductions.
//! - **Endgame.** With `E` slots left a turn needs about `M/E` probes, so the last `√M` slots
//!   would cost half of all probing. For those, the backend computes for every empty slot how
//!   many steps of its preference list lead there and takes the nearest (see `Endgame`).
//!
//! For `N = 1000`, `M = 65537` this builds a table 2 to 3.7 times faster than the paper's loop
//! written plainly in C (the range is the host's load); the figures and the method are in
//! `docs/BENCHMARKS.md`.

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
    if has_duplicate_key(&sorted) {
        // Rare: sort to name the smallest shared key and its two lowest ids.
        let mut keys: Vec<(u64, u32)> = sorted.iter().map(|b| (b.key, b.id)).collect();
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|p| p[0].0 == p[1].0) {
            return Err(MaglevError::DuplicateKey {
                key: pair[0].0,
                ids: (pair[0].1, pair[1].1),
            });
        }
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

/// Whether two backends share a key: one pass over an open-addressing set, instead of a sort
/// that would cost a tenth of a build of a thousand backends.
fn has_duplicate_key(backends: &[MaglevBackend]) -> bool {
    let bits = (2 * backends.len())
        .next_power_of_two()
        .trailing_zeros()
        .max(1);
    let mask = (1usize << bits) - 1;
    // A slot holds key + 1 (0 = free); the key u64::MAX, whose + 1 is 0, is tracked apart.
    let mut set = vec![0u64; mask + 1];
    let mut max_seen = false;
    for b in backends {
        let Some(stored) = b.key.checked_add(1) else {
            if std::mem::replace(&mut max_seen, true) {
                return true;
            }
            continue;
        };
        #[allow(clippy::cast_possible_truncation)] // keeps the top `bits` (< 64) bits
        let mut at = (hash_skip(b.key) >> (64 - bits)) as usize;
        loop {
            match set[at] {
                0 => {
                    set[at] = stored;
                    break;
                }
                seen if seen == stored => return true,
                _ => at = (at + 1) & mask,
            }
        }
    }
    false
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
    let mut fill = Fill::new(backends, size);
    let mut turns = TurnOrder::new(backends, size);
    while !fill.take_turns(turns.next_batch(), table) {}
}

/// The order in which backends take turns: round 0 (every backend once, in index = id order),
/// then always the backend with the smallest pass `(2k + 1) / w`, ties to the lower index.
///
/// Backends of equal weight share their pass after round 0, so the order is kept per weight
/// class: when a class's pass comes up, all its members take a turn, in index order, and the
/// class moves on to its next pass. With equal weights that is round robin; otherwise a
/// [`Calendar`] says which class comes next.
struct TurnOrder {
    classes: WeightClasses,
    /// `None` with a single class.
    calendar: Option<Calendar>,
    /// Scratch for batches of the calendar.
    batch: Vec<u32>,
    /// Whether round 0 is still to come.
    first: bool,
}

impl TurnOrder {
    fn new(backends: &[MaglevBackend], size: u32) -> Self {
        let classes = WeightClasses::new(backends);
        let calendar = (classes.weights.len() > 1).then(|| Calendar::new(&classes, size));
        Self {
            batch: Vec::new(),
            first: true,
            classes,
            calendar,
        }
    }

    /// The backends taking the next turns, in order; never empty before `M` turns are taken.
    fn next_batch(&mut self) -> Turns<'_> {
        if std::mem::take(&mut self.first) {
            return Turns::Every;
        }
        let Some(calendar) = &mut self.calendar else {
            return Turns::Every;
        };
        self.batch.clear();
        // Batches of a few hundred turns keep the per-batch work of `Fill` out of the way.
        calendar.take(&self.classes, &mut self.batch, 256);
        // The calendar reaches past the M-th turn (see its bound), and `Fill` asks for no more.
        assert!(!self.batch.is_empty(), "Maglev turn order ran out");
        Turns::List(&self.batch)
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
    fn members(&self, class: usize) -> &[u32] {
        &self.order[self.starts[class]..self.starts[class + 1]]
    }

    /// Sum of the backends' weights.
    fn total_weight(&self) -> u64 {
        (0..self.weights.len())
            .map(|c| self.weights[c] * (self.starts[c + 1] - self.starts[c]) as u64)
            .sum()
    }
}

/// The classes' next passes, in buckets of width `1/S`: a class whose next pass is `p` sits in
/// bucket `⌊p·S⌋`, so buckets in order hold passes in order, and only the classes within one
/// bucket need comparing (exactly, by cross-multiplication). With `S ≥ w/2` for every weight a
/// class's consecutive passes, `2/w` apart, land in different buckets; with `S` about half the
/// sum of the classes' weights there are about as many buckets as passes, so most buckets hold
/// one class or none. Turns cost a few additions each, where a heap would cost `log N`
/// comparisons.
///
/// Buckets end where the `M`-th turn is sure to have come: after every pass up to `t`, round
/// 0 and the passes `(2k + 1)/w ≤ t` have given at least `(t·W − N)/2` turns (`W` the sum of
/// all weights), which is `M` at `t = (2M + N)/W`.
struct Calendar {
    /// First class in each bucket, or [`Calendar::NONE`]; `clocks[c].link` chains the rest.
    heads: Vec<u32>,
    clocks: Vec<Clock>,
    /// Which buckets hold a class.
    occupied: Vec<u64>,
    /// Next bucket to look at.
    at: usize,
    /// Scratch: the classes of one bucket.
    due: Vec<u32>,
    /// Scratch: members of classes whose passes tie.
    tied: Vec<u32>,
}

/// A class's next pass `num / weight` and its bucket, kept without division.
#[derive(Clone, Copy)]
struct Clock {
    /// `2k + 1` when every member holds `k` slots.
    num: u64,
    weight: u64,
    /// `⌊num·S / weight⌋` and the remainder.
    bucket: u64,
    rest: u64,
    /// `2S = step·weight + step_rest`: how far the next pass is.
    step: u64,
    step_rest: u64,
    /// Next class in the same bucket.
    link: u32,
}

impl Calendar {
    const NONE: u32 = u32::MAX;

    fn new(classes: &WeightClasses, size: u32) -> Self {
        let total = u128::from(classes.total_weight());
        let scale = u128::from(classes.weights.iter().sum::<u64>().div_ceil(2));
        let backends = classes.order.len() as u128;
        let buckets = (2 * u128::from(size) + backends) * scale / total + 1;
        let buckets = usize::try_from(buckets).expect("at most 2M + 1 buckets");
        let mut calendar = Self {
            heads: vec![Self::NONE; buckets],
            occupied: vec![0; buckets.div_ceil(64)],
            clocks: Vec::with_capacity(classes.weights.len()),
            at: 0,
            due: Vec::new(),
            tied: Vec::new(),
        };
        for (class, &weight) in (0u32..).zip(&classes.weights) {
            let weight_wide = u128::from(weight);
            let narrow = |x: u128| u64::try_from(x).expect("fits: see the bounds above");
            calendar.clocks.push(Clock {
                num: 3,
                weight,
                bucket: narrow(3 * scale / weight_wide),
                rest: narrow(3 * scale % weight_wide),
                step: narrow(2 * scale / weight_wide),
                step_rest: narrow(2 * scale % weight_wide),
                link: Self::NONE,
            });
            calendar.schedule(class);
        }
        calendar
    }

    /// Puts `class` into the bucket of its next pass, unless that is past the last bucket.
    fn schedule(&mut self, class: u32) {
        let clock = &mut self.clocks[class as usize];
        let Ok(bucket) = usize::try_from(clock.bucket) else {
            return;
        };
        if let Some(head) = self.heads.get_mut(bucket) {
            clock.link = std::mem::replace(head, class);
            self.occupied[bucket / 64] |= 1 << (bucket % 64);
        }
    }

    /// Moves `class` on to its next pass.
    fn advance(&mut self, class: u32) {
        let clock = &mut self.clocks[class as usize];
        clock.num += 2;
        // Whether the remainders carry is close to a coin toss: no branch.
        let rest = clock.rest + clock.step_rest;
        let carry = u64::from(rest >= clock.weight);
        clock.rest = rest - (clock.weight & carry.wrapping_neg());
        clock.bucket += clock.step + carry;
        self.schedule(class);
    }

    /// Appends the next turns to `turns`, bucket by bucket, until it holds at least `want`
    /// or the buckets run out.
    fn take(&mut self, classes: &WeightClasses, turns: &mut Vec<u32>, want: usize) {
        let append = |turns: &mut Vec<u32>, members: &[u32]| match members {
            [one] => turns.push(*one),
            many => turns.extend_from_slice(many),
        };
        while turns.len() < want {
            // The next occupied bucket, from the bitmap: empty buckets cost no branch each.
            let mut word = self.at / 64;
            let mut bits = match self.occupied.get(word) {
                Some(&bits) => bits & (u64::MAX << (self.at % 64)),
                None => return,
            };
            while bits == 0 {
                word += 1;
                match self.occupied.get(word) {
                    Some(&next) => bits = next,
                    None => {
                        self.at = self.heads.len();
                        return;
                    }
                }
            }
            let bucket = word * 64 + bits.trailing_zeros() as usize;
            self.occupied[word] &= !(1 << (bucket % 64));
            self.at = bucket + 1;
            let mut class = std::mem::replace(&mut self.heads[bucket], Self::NONE);
            if self.clocks[class as usize].link == Self::NONE {
                append(turns, classes.members(class as usize));
                self.advance(class);
                continue;
            }
            self.due.clear();
            while class != Self::NONE {
                self.due.push(class);
                class = self.clocks[class as usize].link;
            }
            // num < 2^26 and weight < 2^32: the cross products fit in u64.
            let clocks = &self.clocks;
            let pass = |c: u32| clocks[c as usize];
            self.due.sort_unstable_by(|&a, &b| {
                (pass(a).num * pass(b).weight).cmp(&(pass(b).num * pass(a).weight))
            });
            let mut rest = &self.due[..];
            while let Some((&first, _)) = rest.split_first() {
                let ties = rest
                    .iter()
                    .take_while(|&&c| {
                        pass(c).num * pass(first).weight == pass(first).num * pass(c).weight
                    })
                    .count();
                if ties == 1 {
                    append(turns, classes.members(first as usize));
                } else {
                    self.tied.clear();
                    for &c in &rest[..ties] {
                        self.tied.extend_from_slice(classes.members(c as usize));
                    }
                    self.tied.sort_unstable();
                    turns.extend_from_slice(&self.tied);
                }
                rest = &rest[ties..];
            }
            for i in 0..self.due.len() {
                let class = self.due[i];
                self.advance(class);
            }
        }
    }
}

/// Lanes of a [`Fill::probe`] at most.
const LANES: usize = 8;

/// Where one backend is in its preference list.
#[derive(Clone, Copy)]
struct Cursor {
    /// Next preferred slot to try.
    next: u32,
    /// The value its slots get.
    id: u32,
    /// `k·skip mod M` for `k < LANES`: where a probe's lanes are, from its base.
    offsets: [u32; LANES],
}

/// Backends taking turns, in order.
#[derive(Clone, Copy)]
enum Turns<'a> {
    /// Every backend, in index order: a round of round robin.
    Every,
    /// Backends `start..end`, a part of a round.
    Range(usize, usize),
    /// These backends.
    List(&'a [u32]),
}

impl Turns<'_> {
    fn len(self, backends: usize) -> usize {
        match self {
            Self::Every => backends,
            Self::Range(start, end) => end - start,
            Self::List(list) => list.len(),
        }
    }

    /// Turns `from..to` of these.
    fn part(self, from: usize, to: usize) -> Self {
        match self {
            Self::Every => Self::Range(from, to),
            Self::Range(start, _) => Self::Range(start + from, start + to),
            Self::List(list) => Self::List(&list[from..to]),
        }
    }
}

/// The table as probing fills it.
struct Fill {
    /// Two bits per slot, cleared once the slot is taken: bit `s` and bit `s + M`. Lane `k` of
    /// a probe tests bit `base + k·skip mod M`, which is below `2M` and needs no reduction.
    /// A sixteenth of the table, so probing stays in the L1 cache.
    free: Vec<u64>,
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
        let permutations = Permutations::new(size);
        let cursors: Vec<Cursor> = backends
            .iter()
            .map(|b| {
                let (offset, skip) = permutations.of(b.key);
                let mut offsets = [0; LANES];
                for k in 1..LANES {
                    // (offset + skip) mod M as a minimum, not a test the compiler might turn
                    // into a branch: whether it wraps is a coin toss.
                    let sum = offsets[k - 1] + skip;
                    offsets[k] = sum.min(sum.wrapping_sub(size));
                }
                Cursor {
                    next: offset,
                    id: b.id,
                    offsets,
                }
            })
            .collect();
        let mut fill = Self {
            free: vec![u64::MAX; (2 * size as usize).div_ceil(64)],
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
        let endgame = Endgame::threshold(self.size);
        let at = |percent: u64| {
            u32::try_from(u64::from(self.size) * percent / 100)
                .expect("a share of the size")
                .max(endgame)
        };
        // (lanes, slots still empty when the phase ends): enough lanes that a turn usually
        // ends without a mispredicted branch, not so many that it tests far more slots than
        // it needs. Tuned by measurement at N = 1000, M = 65537 (docs/BENCHMARKS.md).
        let phases = [(1, at(85)), (2, at(50)), (4, at(25)), (8, endgame)];
        if let Some(&(lanes, until)) = phases.iter().find(|&&(_, until)| until < self.left) {
            self.lanes = lanes;
            self.until = until;
        } else if self.endgame.is_none() {
            self.lanes = 0;
            self.until = 0;
            self.endgame = Some(Endgame::new(self));
        }
    }

    /// Gives each backend of `turns` its turn, in order, until the table is full. Returns
    /// whether it is.
    fn take_turns(&mut self, turns: Turns<'_>, table: &mut [u32]) -> bool {
        let total = turns.len(self.cursors.len());
        let mut at = 0;
        while at < total {
            let now = (total - at).min((self.left - self.until) as usize);
            let part = turns.part(at, at + now);
            match self.lanes {
                0 => self.arithmetic(part, table),
                1 => self.probe::<1>(part, table),
                2 => self.probe::<2>(part, table),
                4 => self.probe::<4>(part, table),
                _ => self.probe::<8>(part, table),
            }
            self.left -= u32::try_from(now).expect("no more turns than slots");
            if self.left == 0 {
                return true;
            }
            if self.left == self.until {
                self.next_phase();
            }
            at += now;
        }
        false
    }

    /// Turns by probing `L` preferences at a time.
    #[inline(never)]
    fn probe<const L: usize>(&mut self, turns: Turns<'_>, table: &mut [u32]) {
        let size = self.size;
        let free = &mut self.free[..];
        match turns {
            Turns::Every => unreachable!("split into ranges by take_turns"),
            Turns::Range(start, end) => {
                for cursor in &mut self.cursors[start..end] {
                    probe_turn::<L>(cursor, free, table, size);
                }
            }
            Turns::List(list) => {
                for &idx in list {
                    probe_turn::<L>(&mut self.cursors[idx as usize], free, table, size);
                }
            }
        }
    }

    /// Turns by [`Endgame`].
    #[inline(never)]
    fn arithmetic(&mut self, turns: Turns<'_>, table: &mut [u32]) {
        let endgame = self.endgame.as_mut().expect("the endgame has started");
        if let Turns::Range(start, end) = turns {
            endgame.prepare(start..end, &self.cursors[start..end]);
        }
        let size = self.size;
        let mut turn = |idx: usize, cursor: &mut Cursor| {
            let skip = cursor.offsets[1];
            let slot = endgame.take(idx, cursor.next, skip);
            cursor.next = advance(slot, skip, size);
            table[slot as usize] = cursor.id;
        };
        match turns {
            Turns::Every => unreachable!("split into ranges by take_turns"),
            Turns::Range(start, end) => {
                for (idx, cursor) in (start..end).zip(&mut self.cursors[start..end]) {
                    turn(idx, cursor);
                }
            }
            Turns::List(list) => {
                for &idx in list {
                    turn(idx as usize, &mut self.cursors[idx as usize]);
                }
            }
        }
    }
}

/// One turn: the backend takes the first empty slot of its preference list from its cursor on
/// (there must be one), testing `L` preferences at a time.
///
/// The `L` tests do not branch; one branch asks whether any lane found an empty slot. A loop
/// that branches on every probe mispredicts its exit about once per turn, which costs as much
/// as a dozen probes.
#[inline(always)]
fn probe_turn<const L: usize>(cursor: &mut Cursor, free: &mut [u64], table: &mut [u32], size: u32) {
    let is_free = |bit: u32| u32::from(free[bit as usize / 64] >> (bit % 64) & 1 == 1);
    // The next group's base. It is 0 only when M divides L, and then the lanes already cover
    // every slot, so the first group finds one.
    let stride = if L < LANES {
        cursor.offsets[L]
    } else {
        advance(cursor.offsets[LANES - 1], cursor.offsets[1], size)
    };
    let back = size - stride;
    let mut base = cursor.next;
    let lane = loop {
        let mut found = is_free(base);
        for k in 1..L {
            found |= is_free(base + cursor.offsets[k]) << k;
        }
        if found != 0 {
            break found.trailing_zeros() as usize;
        }
        base = step(base, stride, back);
    };
    let slot = if L == 1 {
        base
    } else {
        advance(base, cursor.offsets[lane], size)
    };
    free[slot as usize / 64] &= !(1 << (slot % 64));
    let mirror = slot + size;
    free[mirror as usize / 64] &= !(1 << (mirror % 64));
    cursor.next = advance(slot, cursor.offsets[1], size);
    table[slot as usize] = cursor.id;
}

/// The last few empty slots, found by arithmetic instead of probing.
///
/// With `E` slots left a probe finds one with probability `E/M`, so a turn probes about `M/E`
/// times, and the last `√M` turns would do about half of the probing of a build. Instead, the
/// backend looks at every empty slot `s` and takes the one with the fewest steps
/// `j = (s − next)·skip⁻¹ mod M` from its cursor (`M` is prime, so `skip` has an inverse): the
/// very slot probing would have reached first.
///
/// Comparing `j` needs no reduction modulo `M`: with `c = ⌊2^64·skip⁻¹/M⌋`, the wrapping
/// product `(s − next)·c` is `2^64·j/M` to within `M`, and `2^64/M > 2M` for `M < 2^24`, so the
/// products are ordered as the `j` are (and 0 only for `j = 0`).
struct Endgame {
    /// The empty slots, in no particular order.
    empty: Vec<u32>,
    /// `⌊2^64·skip⁻¹/M⌋` per backend, 0 until first needed.
    scale: Vec<u64>,
    size: u32,
    /// Scratch for [`Endgame::prepare`].
    pending: Vec<(usize, u32, u32)>,
}

impl Endgame {
    /// Empty slots at which the endgame starts: about where a scan of the empty list (a
    /// multiplication and a comparison per slot) gets cheaper than probing (`M/E` probes).
    fn threshold(size: u32) -> u32 {
        size.isqrt()
    }

    fn new(fill: &Fill) -> Self {
        let mut empty = Vec::new();
        for (word, &bits) in (0u32..).zip(&fill.free[..(fill.size as usize).div_ceil(64)]) {
            let mut free = bits;
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
            scale: vec![0; fill.cursors.len()],
            size: fill.size,
            pending: Vec::new(),
        }
    }

    /// Sets up the scales of the backends `range` (these cursors) at once: one inversion and
    /// three multiplications each (Montgomery's trick) instead of one inversion each, which
    /// costs a dozen divisions.
    fn prepare(&mut self, range: std::ops::Range<usize>, cursors: &[Cursor]) {
        let modulus = Modulus::new(self.size);
        let mul = |a: u32, b: u32| modulus.reduce(u64::from(a) * u64::from(b));
        // prefix[i] = skip_0 · … · skip_i over the backends still without a scale.
        self.pending.clear();
        let mut product = 1;
        for (idx, cursor) in range.zip(cursors) {
            if self.scale[idx] == 0 {
                product = mul(product, cursor.offsets[1]);
                self.pending.push((idx, cursor.offsets[1], product));
            }
        }
        let mut inverse = inverse_mod(product, self.size);
        for i in (0..self.pending.len()).rev() {
            let (idx, skip, _) = self.pending[i];
            let before = if i == 0 { 1 } else { self.pending[i - 1].2 };
            self.scale[idx] = scale(mul(inverse, before), self.size);
            inverse = mul(inverse, skip);
        }
    }

    /// Removes and returns the first empty slot of the preference list with this skip from
    /// `next` on, for backend `idx`.
    fn take(&mut self, idx: usize, next: u32, skip: u32) -> u32 {
        if self.scale[idx] == 0 {
            self.scale[idx] = scale(inverse_mod(skip, self.size), self.size);
        }
        let scale = self.scale[idx];
        let origin = u64::from(next).wrapping_mul(scale);
        // Products for different j differ by more than 2^64/M − 2M > 2^32, so clearing their
        // low 32 bits keeps the order, and the bits can carry the position in the list.
        let mut best = u64::MAX;
        for (at, &slot) in (0u64..).zip(&self.empty) {
            let steps = u64::from(slot).wrapping_mul(scale).wrapping_sub(origin);
            best = best.min(steps & !0xffff_ffff | at);
        }
        #[allow(clippy::cast_possible_truncation)] // the low 32 bits hold a list position
        self.empty.swap_remove((best & 0xffff_ffff) as usize)
    }
}

/// `⌊2^64·inverse/size⌋` for `inverse < size`.
fn scale(inverse: u32, size: u32) -> u64 {
    let size = u64::from(size);
    // 2^64 = q·size + r, so 2^64·inverse/size = inverse·q + inverse·r/size.
    let (q, r) = (u64::MAX / size, u64::MAX % size + 1);
    let (q, r) = if r == size { (q + 1, 0) } else { (q, r) };
    u64::from(inverse) * q + u64::from(inverse) * r / size
}

/// `a⁻¹ mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (m, a);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - i64::from(q) * t1);
    }
    debug_assert_eq!(r0, 1, "{a} has no inverse modulo {m}");
    u32::try_from(t0.rem_euclid(i64::from(m))).expect("a residue modulo a u32 fits in a u32")
}

/// [`advance`] with `back = size − skip` computed once for a loop.
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

/// The preference lists of one table size: `(offset, skip)` per key, with the reductions set up
/// once per build.
#[derive(Clone, Copy)]
struct Permutations {
    offset: Modulus,
    skip: Modulus,
}

impl Permutations {
    fn new(size: u32) -> Self {
        debug_assert!(size >= 2);
        Self {
            offset: Modulus::new(size),
            skip: Modulus::new(size - 1),
        }
    }

    /// `(offset, skip)` of the backend with this key: `offset = h1(key) mod M`,
    /// `skip = h2(key) mod (M − 1) + 1`.
    fn of(self, key: u64) -> (u32, u32) {
        (
            self.offset.reduce(hash_offset(key)),
            self.skip.reduce(hash_skip(key)) + 1,
        )
    }
}

/// `h mod m` for a fixed `m`, without a division: a 64-bit division whose quotient has ~48
/// bits is among the slowest integer instructions, and a build does two per backend.
#[derive(Clone, Copy)]
struct Modulus {
    m: u64,
    /// `⌊(2^64 − 1)/m⌋`.
    reciprocal: u64,
}

impl Modulus {
    fn new(m: u32) -> Self {
        let m = u64::from(m);
        Self {
            m,
            reciprocal: u64::MAX / m,
        }
    }

    /// Barrett reduction: `⌊h·reciprocal/2^64⌋` is `⌊h/m⌋` or one less, so one conditional
    /// subtraction finishes the remainder.
    #[inline]
    fn reduce(self, h: u64) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the high half of a u128 product fits a u64
        let quotient = ((u128::from(h) * u128::from(self.reciprocal)) >> 64) as u64;
        let rest = h - quotient * self.m;
        // Whether the estimate was short is close to a coin toss: no branch.
        let rest = rest.min(rest.wrapping_sub(self.m));
        u32::try_from(rest).expect("a remainder modulo a u32 fits in a u32")
    }
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

    /// The module documentation transcribed as plainly as possible: each probe computes
    /// `(offset + j·skip) mod M` as the paper does, and each turn after round 0 scans every
    /// backend for the smallest pass. `build` must produce exactly this table.
    fn plain(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
        let mut live: Vec<MaglevBackend> =
            backends.iter().copied().filter(|b| b.weight > 0).collect();
        live.sort_by_key(|b| b.id);
        let mut table = vec![EMPTY; size as usize];
        if live.is_empty() {
            return table;
        }
        let m = u64::from(size);
        let lists: Vec<(u64, u64)> = live
            .iter()
            .map(|b| (hash_offset(b.key) % m, hash_skip(b.key) % (m - 1) + 1))
            .collect();
        let mut position = vec![0u64; live.len()];
        let mut held = vec![0u64; live.len()];
        for turn in 0..table.len() {
            let i = if turn < live.len() {
                turn
            } else {
                (0..live.len())
                    .min_by(|&a, &b| {
                        let pass_a = (2 * held[a] + 1) * u64::from(live[b].weight);
                        let pass_b = (2 * held[b] + 1) * u64::from(live[a].weight);
                        pass_a.cmp(&pass_b).then(a.cmp(&b))
                    })
                    .unwrap()
            };
            loop {
                let (offset, skip) = lists[i];
                let slot = usize::try_from((offset + position[i] * skip) % m).unwrap();
                position[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = live[i].id;
                    break;
                }
            }
            held[i] += 1;
        }
        table
    }

    /// FNV-1a 64 over the slots, 4 bytes each, little end first: the checksum
    /// bench/maglev_ref.c prints.
    fn fnv1a(table: &[u32]) -> u64 {
        table
            .iter()
            .flat_map(|id| id.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325, |h, byte| {
                (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// The benchmark's pool is the C reference's: both build the same table, so they do the
    /// same work. `maglev_ref 1000 65537 1` prints this checksum.
    #[test]
    fn same_table_as_the_c_reference() {
        let pool: Vec<MaglevBackend> = (1..=1000)
            .map(|id| MaglevBackend {
                id,
                weight: 1,
                key: u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            })
            .collect();
        let table = build(&pool, DEFAULT_SIZE).unwrap();
        assert_eq!(fnv1a(&table), 0xa5ad_2a37_498f_bc05);
        assert_eq!(table, plain(&pool, DEFAULT_SIZE));
    }

    #[test]
    fn barrett_and_scales_are_exact() {
        let mut x = 1u64;
        for m in [
            1u32,
            2,
            3,
            13,
            65_536,
            65_537,
            999_983,
            MAX_SIZE - 1,
            MAX_SIZE,
        ] {
            let modulus = Modulus::new(m);
            for h in [0, 1, u64::from(m) - 1, u64::from(m), u64::MAX, u64::MAX - 1] {
                assert_eq!(
                    u64::from(modulus.reduce(h)),
                    h % u64::from(m),
                    "{h} mod {m}"
                );
            }
            for _ in 0..10_000 {
                x = hash_offset(x);
                assert_eq!(
                    u64::from(modulus.reduce(x)),
                    x % u64::from(m),
                    "{x} mod {m}"
                );
            }
            if m >= 2 && is_prime(m) {
                for a in [1, 2, m / 2, m - 1].into_iter().filter(|&a| a < m) {
                    let inverse = inverse_mod(a, m);
                    assert_eq!(u64::from(a) * u64::from(inverse) % u64::from(m), 1);
                    let exact = (u128::from(inverse) << 64) / u128::from(m);
                    assert_eq!(u128::from(scale(inverse, m)), exact);
                }
            }
        }
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

    /// Pools whose weights repeat and tie (1:3 and 5:10 passes coincide), drained ones included.
    fn arb_tied_backends(max: usize) -> impl Strategy<Value = Vec<MaglevBackend>> {
        let weight = prop::sample::select(vec![0u32, 1, 2, 3, 5, 10, 30, 1_000_000, u32::MAX]);
        proptest::collection::btree_map(1u32..10_000, (weight, any::<u64>()), 0..max)
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

        /// Every shortcut of the build (weight classes, calendar, lanes, mirror bits, endgame)
        /// gives the table of the plain transcription, on sizes from 2 to a few thousand.
        #[test]
        fn prop_same_as_plain_transcription(
            backends in prop_oneof![arb_backends(40), arb_tied_backends(40)],
            size in prop::sample::select(vec![2u32, 3, 5, 7, 13, 41, 251, 1_009, 4_099]),
        ) {
            // Drain what does not fit a small table.
            let mut backends = backends;
            for b in backends.iter_mut().filter(|b| b.weight > 0).skip(size as usize) {
                b.weight = 0;
            }
            prop_assert_eq!(build(&backends, size).unwrap(), plain(&backends, size));
        }

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
