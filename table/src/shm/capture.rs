//! Capture files: live packet capture (`switchyard-control capture`) through shared memory.
//!
//! The control plane creates `switchyard-<instance>.capture-<id>` next to the segment, writes
//! the filter into it and sends `Capture { capture: id }` on the control→data ring. The data
//! plane's main lcore opens it ([`CaptureFile::open`], which validates everything) and hands
//! each worker a [`CaptureProducer`] for its own ring; workers copy matching packets (up to the
//! snap length) into their ring; the control plane drains the rings ([`CaptureConsumer`]) into
//! a pcapng file. Either side ends it: the control plane sets `stop`, the data plane stops by
//! itself at the deadline (or the per-worker packet budget), then sets `detached`.
//!
//! Layout (little-endian 64-bit words; who writes each line in brackets):
//!
//! ```text
//! 0    header [control]   magic "SWYDCAP\x01", abi u32 @8, workers u32 @12, slots u32 @16,
//!                         slot_bytes u32 @20, size u64 @24, deadline_ms u64 @32 (CLOCK_MONOTONIC),
//!                         stop u64 @40 [control], attached u64 @48 [data: its pid],
//!                         detached u64 @56 [data: 1 once no worker writes]
//! 64   filter [control]   family u8 @64 (0: any), proto u8 @65 (0: any), watch u8 @66
//!                         (0 received, 1 dropped), port u16 @68 (0: any), snaplen u16 @70,
//!                         counter u32 @72 (dropped: the drop counter's index, u32::MAX any),
//!                         rate u32 @76 (packets/s per worker), budget u64 @80 (packets per
//!                         worker), vip [u8; 16] @88
//! 128  ring 0 ... ring workers-1, each:
//!        producer line [data]  head u64, lost_full u64, lost_rate u64, matched u64
//!        consumer line [control] tail u64
//!        slots × slot_bytes:   captured u32 @0, wire u32 @4, time_ns u64 @8 (CLOCK_REALTIME),
//!                              port u16 @16, worker u16 @18, counter u32 @20, seq u64 @24,
//!                              data @32 (captured bytes, zero-padded to 8)
//! ```
//!
//! Trust: each side validates what the other wrote. [`CaptureFile::open`] checks magic, ABI,
//! geometry against the file's size and every filter field; a producer treats a consumer tail
//! that is ahead of its head or more than a ring behind as "full" (counted, never overwriting);
//! a consumer checks the head the same way (resynchronising to it) and every slot's lengths and
//! sequence, skipping and counting a bad one ([`CaptureConsumer::bad`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::map::WordMap;

pub const CAPTURE_MAGIC: u64 = u64::from_le_bytes(*b"SWYDCAP\x01");
pub const CAPTURE_ABI_VERSION: u32 = 1;
/// Largest snap length: a slot's data room.
pub const MAX_SNAPLEN: u16 = 2048;
/// Bytes of a slot: its 32-byte header and [`MAX_SNAPLEN`] bytes of data.
pub const SLOT_BYTES: u32 = 32 + MAX_SNAPLEN as u32;
/// Slots per worker ring.
pub const SLOTS: u32 = 512;
/// `counter` of a capture of every drop reason, and of a received (not dropped) packet.
pub const ANY_COUNTER: u32 = u32::MAX;
/// Largest file [`CaptureFile::open`] maps: 64 workers' rings.
const MAX_WORDS: usize = (128 + 64 * (128 + SLOTS as usize * SLOT_BYTES as usize)) / 8;

const HEADER_WORDS: usize = 16; // header and filter lines
const RING_HEAD_WORDS: usize = 16; // producer and consumer lines
const SLOT_HEADER_WORDS: usize = 4;

/// Which packets a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Packets as received, before the pipeline touches them.
    Received,
    /// Packets at the point the pipeline drops them: one drop counter (its index in the
    /// segment's counter-name table) or any ([`ANY_COUNTER`]).
    Dropped { counter: u32 },
}

/// A capture's filter and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureFilter {
    /// 0: any; 4 or 6 with `vip`.
    pub family: u8,
    /// Destination address (IPv4 in the first four bytes).
    pub vip: [u8; 16],
    /// 0: any; else the packet's source or destination port.
    pub port: u16,
    /// 0: any IP protocol.
    pub proto: u8,
    pub watch: Watch,
    /// Bytes kept of each packet (1..=[`MAX_SNAPLEN`]).
    pub snaplen: u16,
    /// Packets per second per worker (at least 1).
    pub rate: u32,
    /// Packets per worker at most (at least 1).
    pub budget: u64,
}

/// Why a capture file was refused.
#[derive(Debug)]
pub enum CaptureError {
    Io(PathBuf, std::io::Error),
    Invalid(PathBuf, String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(p, e) => write!(f, "capture file {}: {e}", p.display()),
            Self::Invalid(p, what) => write!(f, "capture file {}: {what}", p.display()),
        }
    }
}

impl std::error::Error for CaptureError {}

/// `switchyard-<instance>.capture-<id>` in `dir`.
#[must_use]
pub fn capture_path_in(dir: &Path, instance: &str, id: u32) -> PathBuf {
    dir.join(format!("switchyard-{instance}.capture-{id}"))
}

/// The capture id of a file named as [`capture_path_in`] names `instance`'s, if it is one.
#[must_use]
pub fn capture_id_of(file_name: &str, instance: &str) -> Option<u32> {
    let id = file_name
        .strip_prefix("switchyard-")?
        .strip_prefix(instance)?
        .strip_prefix(".capture-")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

fn lo(w: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // the low half, by design
    let v = w as u32;
    v
}

fn hi(w: u64) -> u32 {
    lo(w >> 32)
}

fn ring_words(slots: u32, slot_bytes: u32) -> usize {
    RING_HEAD_WORDS + slots as usize * (slot_bytes as usize / 8)
}

/// A mapped capture file, shared by the producers and consumers made from it.
#[derive(Debug)]
pub struct CaptureFile {
    map: WordMap,
    path: PathBuf,
    workers: u32,
    slots: u32,
    slot_words: usize,
}

impl CaptureFile {
    /// Creates the file for `workers` rings with `filter`, stopping by itself at `deadline_ms`
    /// (CLOCK_MONOTONIC, [`super::monotonic_ms`]).
    ///
    /// # Errors
    /// Bad filter or worker count, or the file cannot be created (it must not exist).
    pub fn create(
        path: &Path,
        workers: u32,
        filter: &CaptureFilter,
        deadline_ms: u64,
    ) -> Result<Arc<Self>, CaptureError> {
        check_filter(filter).map_err(|e| CaptureError::Invalid(path.to_path_buf(), e))?;
        if workers == 0 || workers as usize > super::MAX_WORKERS {
            return Err(CaptureError::Invalid(
                path.to_path_buf(),
                format!("{workers} workers: expected 1-{}", super::MAX_WORKERS),
            ));
        }
        let words = HEADER_WORDS + workers as usize * ring_words(SLOTS, SLOT_BYTES);
        let map =
            WordMap::create(path, words).map_err(|e| CaptureError::Io(path.to_path_buf(), e))?;
        let w = map.words();
        let set = |i: usize, v: u64| w[i].store(v, Ordering::Relaxed);
        set(1, u64::from(CAPTURE_ABI_VERSION) | u64::from(workers) << 32);
        set(2, u64::from(SLOTS) | u64::from(SLOT_BYTES) << 32);
        set(3, (words * 8) as u64);
        set(4, deadline_ms);
        let (watch, counter) = match filter.watch {
            Watch::Received => (0u64, ANY_COUNTER),
            Watch::Dropped { counter } => (1, counter),
        };
        set(
            8,
            u64::from(filter.family)
                | u64::from(filter.proto) << 8
                | watch << 16
                | u64::from(filter.port) << 32
                | u64::from(filter.snaplen) << 48,
        );
        set(9, u64::from(counter) | u64::from(filter.rate) << 32);
        set(10, filter.budget);
        let mut a = [0u8; 8];
        a.copy_from_slice(&filter.vip[..8]);
        set(11, u64::from_le_bytes(a));
        a.copy_from_slice(&filter.vip[8..]);
        set(12, u64::from_le_bytes(a));
        w[0].store(CAPTURE_MAGIC, Ordering::Release);
        Ok(Arc::new(Self {
            map,
            path: path.to_path_buf(),
            workers,
            slots: SLOTS,
            slot_words: SLOT_BYTES as usize / 8,
        }))
    }

    /// Opens and validates a capture file another process made.
    ///
    /// # Errors
    /// The file is missing, not a capture file, of another ABI, of the wrong size, or its
    /// filter is out of range.
    pub fn open(path: &Path) -> Result<Arc<Self>, CaptureError> {
        let bad = |what: String| CaptureError::Invalid(path.to_path_buf(), what);
        let map =
            WordMap::open(path, MAX_WORDS).map_err(|e| CaptureError::Io(path.to_path_buf(), e))?;
        let w = map.words();
        if w.len() < HEADER_WORDS {
            return Err(bad("shorter than its header".into()));
        }
        let get = |i: usize| w[i].load(Ordering::Acquire);
        if get(0) != CAPTURE_MAGIC {
            return Err(bad("not a capture file (bad magic)".into()));
        }
        let (abi, workers) = (lo(get(1)), hi(get(1)));
        if abi != CAPTURE_ABI_VERSION {
            return Err(bad(format!(
                "ABI version {abi}, expected {CAPTURE_ABI_VERSION}"
            )));
        }
        let (slots, slot_bytes) = (lo(get(2)), hi(get(2)));
        if workers == 0
            || workers as usize > super::MAX_WORKERS
            || slots == 0
            || !slots.is_power_of_two()
            || slots > 1 << 16
            || slot_bytes < 40
            || slot_bytes % 8 != 0
            || slot_bytes > 32 + u32::from(MAX_SNAPLEN)
        {
            return Err(bad(format!(
                "geometry {workers} workers × {slots} slots × {slot_bytes} bytes"
            )));
        }
        let words = HEADER_WORDS + workers as usize * ring_words(slots, slot_bytes);
        if get(3) != (words * 8) as u64 || w.len() != words {
            return Err(bad(format!(
                "{} bytes, header says {}, geometry needs {}",
                w.len() * 8,
                get(3),
                words * 8
            )));
        }
        let file = Self {
            map,
            path: path.to_path_buf(),
            workers,
            slots,
            slot_words: slot_bytes as usize / 8,
        };
        let f = file.filter();
        check_filter(&f).map_err(bad)?;
        if usize::from(f.snaplen) + 32 > slot_bytes as usize {
            return Err(bad(format!(
                "snap length {} does not fit {slot_bytes}-byte slots",
                f.snaplen
            )));
        }
        Ok(Arc::new(file))
    }

    fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[must_use]
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// The filter as stored (validated by [`CaptureFile::open`]).
    #[must_use]
    pub fn filter(&self) -> CaptureFilter {
        let w = self.words();
        let f = w[8].load(Ordering::Relaxed);
        let counter = lo(w[9].load(Ordering::Relaxed));
        let mut vip = [0u8; 16];
        vip[..8].copy_from_slice(&w[11].load(Ordering::Relaxed).to_le_bytes());
        vip[8..].copy_from_slice(&w[12].load(Ordering::Relaxed).to_le_bytes());
        #[allow(clippy::cast_possible_truncation)] // byte and half-word fields
        CaptureFilter {
            family: f as u8,
            proto: (f >> 8) as u8,
            watch: match (f >> 16) as u8 {
                0 => Watch::Received,
                1 => Watch::Dropped { counter },
                // Refused by `check_filter` on open.
                _ => Watch::Dropped {
                    counter: u32::MAX - 1,
                },
            },
            port: (f >> 32) as u16,
            snaplen: (f >> 48) as u16,
            rate: hi(w[9].load(Ordering::Relaxed)),
            budget: w[10].load(Ordering::Relaxed),
            vip,
        }
    }

    #[must_use]
    pub fn deadline_ms(&self) -> u64 {
        self.words()[4].load(Ordering::Relaxed)
    }

    /// Asks the data plane to stop writing.
    pub fn stop(&self) {
        self.words()[5].store(1, Ordering::Release);
    }

    #[must_use]
    pub fn stopped(&self) -> bool {
        self.words()[5].load(Ordering::Acquire) != 0
    }

    /// The data plane took the capture (its pid).
    pub fn set_attached(&self, pid: u32) {
        self.words()[6].store(u64::from(pid), Ordering::Release);
    }

    #[must_use]
    pub fn attached(&self) -> u64 {
        self.words()[6].load(Ordering::Acquire)
    }

    /// No worker writes any more.
    pub fn set_detached(&self) {
        self.words()[7].store(1, Ordering::Release);
    }

    #[must_use]
    pub fn detached(&self) -> bool {
        self.words()[7].load(Ordering::Acquire) != 0
    }

    fn ring(&self, worker: u32) -> Option<&[AtomicU64]> {
        if worker >= self.workers {
            return None;
        }
        let len = RING_HEAD_WORDS + self.slots as usize * self.slot_words;
        let at = HEADER_WORDS + worker as usize * len;
        self.words().get(at..at + len)
    }

    /// Worker `worker`'s producer end.
    #[must_use]
    pub fn producer(self: &Arc<Self>, worker: u32) -> Option<CaptureProducer> {
        self.ring(worker)?;
        Some(CaptureProducer {
            file: Arc::clone(self),
            worker,
            head: 0,
        })
    }

    /// Worker `worker`'s consumer end.
    #[must_use]
    pub fn consumer(self: &Arc<Self>, worker: u32) -> Option<CaptureConsumer> {
        let ring = self.ring(worker)?;
        let tail = ring[8].load(Ordering::Acquire);
        Some(CaptureConsumer {
            file: Arc::clone(self),
            worker,
            tail,
            bad: 0,
        })
    }

    /// `(lost_full, lost_rate, matched)` of worker `worker`'s ring, as its producer wrote them.
    #[must_use]
    pub fn ring_counts(&self, worker: u32) -> (u64, u64, u64) {
        self.ring(worker).map_or((0, 0, 0), |r| {
            (
                r[1].load(Ordering::Relaxed),
                r[2].load(Ordering::Relaxed),
                r[3].load(Ordering::Relaxed),
            )
        })
    }
}

fn check_filter(f: &CaptureFilter) -> Result<(), String> {
    if !matches!(f.family, 0 | 4 | 6) {
        return Err(format!("family {}: expected 0, 4 or 6", f.family));
    }
    if f.family == 4 && f.vip[4..].iter().any(|&b| b != 0) {
        return Err("an IPv4 VIP with bytes past the fourth".into());
    }
    if f.snaplen == 0 || f.snaplen > MAX_SNAPLEN {
        return Err(format!(
            "snap length {}: expected 1-{MAX_SNAPLEN}",
            f.snaplen
        ));
    }
    if f.rate == 0 || f.budget == 0 {
        return Err("rate and packet budget must be at least 1".into());
    }
    if let Watch::Dropped { counter } = f.watch {
        if counter == u32::MAX - 1 {
            return Err("unknown watch (expected 0 received or 1 dropped)".into());
        }
    }
    Ok(())
}

/// One packet as the producer describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    /// Length on the wire.
    pub wire: u32,
    /// CLOCK_REALTIME nanoseconds.
    pub time_ns: u64,
    /// Appliance port index it arrived on.
    pub port: u16,
    pub worker: u16,
    /// The drop counter's index, or [`ANY_COUNTER`] for a received packet.
    pub counter: u32,
}

/// A worker's end of its ring: the only writer of its producer line and slots.
#[derive(Debug)]
pub struct CaptureProducer {
    file: Arc<CaptureFile>,
    worker: u32,
    head: u64,
}

impl CaptureProducer {
    #[must_use]
    pub fn file(&self) -> &Arc<CaptureFile> {
        &self.file
    }

    fn ring(&self) -> &[AtomicU64] {
        // The index was checked when the producer was made.
        self.file.ring(self.worker).unwrap_or(&[])
    }

    /// Counts a packet the rate bound left out.
    pub fn lost_rate(&self) {
        if let Some(w) = self.ring().get(2) {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Copies `data` (already cut to the snap length by the caller, at most the slot's room)
    /// into the next slot. False when the ring is full (counted) — or the consumer's tail is
    /// not believable, which is treated the same, so nothing unread is overwritten.
    pub fn push(&mut self, data: &[u8], meta: &RecordMeta) -> bool {
        let slots = u64::from(self.file.slots);
        let slot_words = self.file.slot_words;
        let ring = self.file.ring(self.worker).unwrap_or(&[]);
        if ring.len() < RING_HEAD_WORDS {
            return false;
        }
        ring[3].fetch_add(1, Ordering::Relaxed);
        let tail = ring[8].load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used >= slots {
            ring[1].fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let room = (slot_words - SLOT_HEADER_WORDS) * 8;
        let data = &data[..data.len().min(room)];
        #[allow(clippy::cast_possible_truncation)] // the ring mask keeps it below `slots`
        let at = RING_HEAD_WORDS + (self.head % slots) as usize * slot_words;
        let slot = &ring[at..at + slot_words];
        slot[0].store(
            data.len() as u64 | u64::from(meta.wire) << 32,
            Ordering::Relaxed,
        );
        slot[1].store(meta.time_ns, Ordering::Relaxed);
        slot[2].store(
            u64::from(meta.port) | u64::from(meta.worker) << 16 | u64::from(meta.counter) << 32,
            Ordering::Relaxed,
        );
        slot[3].store(self.head, Ordering::Relaxed);
        for (word, chunk) in slot[SLOT_HEADER_WORDS..].iter().zip(data.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        self.head += 1;
        ring[0].store(self.head, Ordering::Release);
        true
    }
}

/// One captured packet as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub meta: RecordMeta,
    pub data: Vec<u8>,
}

/// The control plane's end of one worker's ring.
#[derive(Debug)]
pub struct CaptureConsumer {
    file: Arc<CaptureFile>,
    worker: u32,
    tail: u64,
    /// Slots or heads refused (bad lengths, sequence, an impossible head).
    pub bad: u64,
}

impl CaptureConsumer {
    /// The next valid record, or `None` when the ring is empty. Bad slots and an impossible
    /// head are skipped and counted in [`CaptureConsumer::bad`].
    pub fn pop(&mut self) -> Option<Record> {
        let slots = u64::from(self.file.slots);
        let slot_words = self.file.slot_words;
        let snaplen = u64::from(self.file.filter().snaplen);
        let ring = self.file.ring(self.worker)?;
        loop {
            let head = ring[0].load(Ordering::Acquire);
            if head == self.tail {
                return None;
            }
            if head.wrapping_sub(self.tail) > slots {
                // A head behind the tail or more than a ring ahead: start again from it.
                self.bad += 1;
                self.tail = head;
                ring[8].store(self.tail, Ordering::Release);
                return None;
            }
            #[allow(clippy::cast_possible_truncation)] // below `slots`
            let at = RING_HEAD_WORDS + (self.tail % slots) as usize * slot_words;
            let slot = &ring[at..at + slot_words];
            let lens = slot[0].load(Ordering::Relaxed);
            let (captured, wire) = (u64::from(lo(lens)), u64::from(hi(lens)));
            let info = slot[2].load(Ordering::Relaxed);
            let seq = slot[3].load(Ordering::Relaxed);
            let room = ((slot_words - SLOT_HEADER_WORDS) * 8) as u64;
            let record = (captured <= snaplen.min(room)
                && captured <= wire
                && wire <= 65_535 + 64
                && seq == self.tail)
                .then(|| {
                    let mut data = Vec::with_capacity(usize::try_from(captured).unwrap_or(0));
                    for word in &slot[SLOT_HEADER_WORDS..] {
                        data.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
                        if data.len() as u64 >= captured {
                            break;
                        }
                    }
                    data.truncate(usize::try_from(captured).unwrap_or(0));
                    #[allow(clippy::cast_possible_truncation)] // half-word fields
                    Record {
                        meta: RecordMeta {
                            wire: lo(lens >> 32),
                            time_ns: slot[1].load(Ordering::Relaxed),
                            port: info as u16,
                            worker: (info >> 16) as u16,
                            counter: hi(info),
                        },
                        data,
                    }
                });
            self.tail += 1;
            ring[8].store(self.tail, Ordering::Release);
            match record {
                Some(r) => return Some(r),
                None => self.bad += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sy-cap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn filter() -> CaptureFilter {
        let mut vip = [0u8; 16];
        vip[..4].copy_from_slice(&[203, 0, 113, 10]);
        CaptureFilter {
            family: 4,
            vip,
            port: 443,
            proto: 6,
            watch: Watch::Dropped { counter: 7 },
            snaplen: 96,
            rate: 1000,
            budget: 10,
        }
    }

    #[test]
    fn packets_go_through_a_ring_in_order_cut_to_the_snap_length() {
        let d = dir("order");
        let path = capture_path_in(&d.0, "t", 1);
        let made = CaptureFile::create(&path, 2, &filter(), 5).unwrap();
        let opened = CaptureFile::open(&path).unwrap();
        assert_eq!(opened.filter(), filter());
        assert_eq!(opened.deadline_ms(), 5);
        let mut p = opened.producer(1).unwrap();
        let mut c = made.consumer(1).unwrap();
        assert!(opened.producer(2).is_none());
        for i in 0..3u8 {
            let meta = RecordMeta {
                wire: 60,
                time_ns: 1000 + u64::from(i),
                port: 1,
                worker: 1,
                counter: 7,
            };
            assert!(p.push(&[i; 13], &meta));
        }
        for i in 0..3u8 {
            let r = c.pop().unwrap();
            assert_eq!(r.data, vec![i; 13]);
            assert_eq!(r.meta.time_ns, 1000 + u64::from(i));
            assert_eq!(r.meta.counter, 7);
        }
        assert!(c.pop().is_none());
        assert!(made.consumer(0).unwrap().pop().is_none());
        assert_eq!(c.bad, 0);
    }

    #[test]
    fn a_full_ring_refuses_and_counts() {
        let d = dir("full");
        let path = capture_path_in(&d.0, "t", 2);
        let f = CaptureFile::create(&path, 1, &filter(), 0).unwrap();
        let mut p = f.producer(0).unwrap();
        let meta = RecordMeta::default();
        for _ in 0..SLOTS {
            assert!(p.push(&[1], &RecordMeta { wire: 1, ..meta }));
        }
        assert!(!p.push(&[1], &RecordMeta { wire: 1, ..meta }));
        assert_eq!(f.ring_counts(0).0, 1);
    }

    #[test]
    fn hostile_contents_are_refused_and_counted() {
        let d = dir("hostile");
        let path = capture_path_in(&d.0, "t", 3);
        let f = CaptureFile::create(&path, 1, &filter(), 0).unwrap();
        let ring = f.ring(0).unwrap();
        let mut p = f.producer(0).unwrap();
        let mut c = f.consumer(0).unwrap();
        let meta = RecordMeta {
            wire: 40,
            ..RecordMeta::default()
        };
        // A slot whose captured length exceeds the snap length, then one with a wrong sequence,
        // then a good one: the first two are skipped and counted.
        assert!(p.push(&[1; 40], &meta));
        assert!(p.push(&[2; 40], &meta));
        assert!(p.push(&[3; 40], &meta));
        let slot = |i: usize| RING_HEAD_WORDS + i * (SLOT_BYTES as usize / 8);
        ring[slot(0)].store(500 | 600 << 32, Ordering::Relaxed);
        ring[slot(1) + 3].store(99, Ordering::Relaxed);
        assert_eq!(c.pop().unwrap().data, vec![3; 40]);
        assert_eq!(c.bad, 2);
        // A head far beyond the tail: resynchronised, counted, nothing read.
        ring[0].store(1 << 40, Ordering::Relaxed);
        assert!(c.pop().is_none());
        assert_eq!(c.bad, 3);
        // A forged tail ahead of the producer's head: the producer treats the ring as full.
        ring[8].store(1 << 50, Ordering::Relaxed);
        assert!(!p.push(&[4; 4], &meta));
    }

    #[test]
    fn a_damaged_header_or_filter_is_refused_on_open() {
        let d = dir("open");
        for (i, (word, value)) in [
            (0usize, 0u64),                                                 // magic
            (1, u64::from(CAPTURE_ABI_VERSION + 1) | 1 << 32),              // ABI
            (2, 100 | u64::from(SLOT_BYTES) << 32),                         // slots not 2^n
            (3, 8),                                                         // size
            (8, 4 | 6 << 8 | 2 << 16 | 443 << 32 | 96 << 48),               // watch 2
            (8, 4 | 6 << 8 | 443 << 32 | u64::from(MAX_SNAPLEN + 1) << 48), // snap length
            (10, 0),                                                        // budget
        ]
        .into_iter()
        .enumerate()
        {
            let path = capture_path_in(&d.0, "t", u32::try_from(i).unwrap());
            let f = CaptureFile::create(&path, 1, &filter(), 0).unwrap();
            f.words()[word].store(value, Ordering::Relaxed);
            let e = CaptureFile::open(&path).expect_err("refused");
            assert!(matches!(e, CaptureError::Invalid(..)), "{word}: {e}");
        }
        let short = d.0.join("short");
        std::fs::write(&short, [0u8; 24]).unwrap();
        assert!(CaptureFile::open(&short).is_err());
        assert!(CaptureFile::open(&d.0.join("missing")).is_err());
    }
}
