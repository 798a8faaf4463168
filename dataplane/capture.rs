//! Live capture and drop samples: the data plane's side.
//!
//! **Capture** (`switchyard-control capture`). The control plane describes a capture in a file
//! ([`switchyard_table::shm::capture`]) and sends `Capture`; the main lcore opens and validates
//! it ([`CaptureDesk::start`]) and posts a [`Tap`] into every worker's [`TapSlot`]. A worker
//! looks at its slot with one load per housekeeping tick (~100 µs), never per packet, and keeps
//! the tap in its [`crate::pipeline::PipelineWorker`]. With a tap, per burst (received packets)
//! or per drop (dropped ones) it offers packets to [`Tap::offer`]: the filter (VIP, port,
//! protocol, drop counter), a token bucket (packets/s per worker) and a packet budget bound
//! what is copied — at most the snap length — into the worker's own ring. Without one the
//! per-packet path carries nothing: one branch per burst on a flag the worker already holds,
//! and one on the drop path. The main lcore ends the capture when the control plane sets
//! `stop`, at the file's deadline, or once every worker spent its budget, and sets
//! `detached` when every worker has let go of its tap.
//!
//! **Drop samples.** ACL, rate-limit, no-route and no-healthy-backend drops are sampled on the
//! drop path (a token bucket per worker, [`SAMPLES_PER_SECOND`]) into `Dropped` messages with
//! the packet's 5-tuple, handed to the main lcore through the same slot (`try_lock`, at the
//! housekeeping tick) and sent on the data→control ring, where the control plane turns them
//! into events.
//!
//! Packets are untrusted: [`flow_of`] reads at most the Ethernet header, two VLAN tags, the IP
//! header and the first four bytes of TCP/UDP, every read bounds-checked; anything it cannot
//! read simply does not match a filter that needs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_table::shm::capture::{
    capture_path_in, CaptureFile, CaptureFilter, CaptureProducer, RecordMeta, Watch, ANY_COUNTER,
};
use switchyard_table::shm::{monotonic_ms, FlowTuple, Message};

/// Drop samples per second per worker (and the bucket's burst).
pub const SAMPLES_PER_SECOND: u32 = 10;

/// Drop samples a worker keeps for the main lcore at most; more are counted as lost.
pub const SAMPLE_QUEUE: usize = 64;

/// The 5-tuple of a packet as the wire carries it (ports 0 for protocols without them), or
/// `None` when it is not IPv4/IPv6 or too short for the IP header.
#[must_use]
pub fn flow_of(data: &[u8]) -> Option<FlowTuple> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            at += 4;
            ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
        }
    }
    let l3 = at + 2;
    let mut t = FlowTuple::default();
    let l4 = match ethertype {
        0x0800 => {
            let ip = data.get(l3..l3 + 20)?;
            t.family = 4;
            t.proto = ip[9];
            t.src[..4].copy_from_slice(&ip[12..16]);
            t.dst[..4].copy_from_slice(&ip[16..20]);
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
            (!fragment).then_some(l3 + usize::from(ip[0] & 0x0f) * 4)
        }
        0x86dd => {
            let ip = data.get(l3..l3 + 40)?;
            t.family = 6;
            t.proto = ip[6];
            t.src.copy_from_slice(&ip[8..24]);
            t.dst.copy_from_slice(&ip[24..40]);
            // No extension-header walk: the first header after the fixed one.
            Some(l3 + 40)
        }
        _ => return None,
    };
    if let (Some(l4), 6 | 17) = (l4, t.proto) {
        if let Some(p) = data.get(l4..l4 + 4) {
            t.sport = u16::from_be_bytes([p[0], p[1]]);
            t.dport = u16::from_be_bytes([p[2], p[3]]);
        }
    }
    Some(t)
}

/// A token bucket in whole packets over the worker's millisecond clock.
#[derive(Debug, Clone)]
struct Bucket {
    rate: u32,
    tokens: u64,
    burst: u64,
    /// Milliseconds of refill not yet turned into tokens.
    last_ms: u32,
}

impl Bucket {
    fn new(rate: u32, now_ms: u32) -> Self {
        let burst = u64::from(rate.max(1));
        Self {
            rate: rate.max(1),
            tokens: burst,
            burst,
            last_ms: now_ms,
        }
    }

    fn take(&mut self, now_ms: u32) -> bool {
        let elapsed = now_ms.wrapping_sub(self.last_ms);
        let earned = u64::from(elapsed) * u64::from(self.rate) / 1000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// A worker's part in one capture.
#[derive(Debug)]
pub struct Tap {
    ring: CaptureProducer,
    filter: CaptureFilter,
    bucket: Option<Bucket>,
    /// Packets still to copy.
    budget: u64,
    worker: u16,
}

impl Tap {
    /// Whether this tap wants received packets (else dropped ones).
    #[must_use]
    pub fn on_receive(&self) -> bool {
        self.filter.watch == Watch::Received
    }

    /// Whether it wants a packet dropped under counter index `counter`.
    #[must_use]
    pub fn wants_drop(&self, counter: u32) -> bool {
        matches!(self.filter.watch, Watch::Dropped { counter: c } if c == ANY_COUNTER || c == counter)
    }

    /// Budget spent: nothing more will be copied.
    #[must_use]
    pub fn spent(&self) -> bool {
        self.budget == 0
    }

    fn matches(&self, data: &[u8]) -> bool {
        let f = &self.filter;
        if f.family == 0 && f.port == 0 && f.proto == 0 {
            return true;
        }
        let Some(t) = flow_of(data) else {
            return false;
        };
        (f.family == 0 || (t.family == f.family && t.dst == f.vip))
            && (f.proto == 0 || t.proto == f.proto)
            && (f.port == 0 || t.dport == f.port || t.sport == f.port)
    }

    /// Copies `data` into the ring when it matches and the bounds allow. `counter` is the drop
    /// counter's index ([`ANY_COUNTER`] for a received packet).
    pub fn offer(&mut self, data: &[u8], port: u16, counter: u32, now_ms: u32) {
        if self.budget == 0 || !self.matches(data) {
            return;
        }
        let bucket = self
            .bucket
            .get_or_insert_with(|| Bucket::new(self.filter.rate, now_ms));
        if !bucket.take(now_ms) {
            self.ring.lost_rate();
            return;
        }
        let time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let meta = RecordMeta {
            wire: u32::try_from(data.len()).unwrap_or(u32::MAX),
            time_ns,
            port,
            worker: self.worker,
            counter,
        };
        let snap = data.len().min(usize::from(self.filter.snaplen));
        if self.ring.push(&data[..snap], &meta) {
            self.budget -= 1;
        }
    }
}

/// Drop samples of one worker: the bucket and the messages not yet handed over.
#[derive(Debug)]
pub struct DropSamples {
    bucket: Bucket,
    pub queued: Vec<Message>,
    /// Samples lost because the queue was full.
    pub lost: u64,
}

impl Default for DropSamples {
    fn default() -> Self {
        Self {
            bucket: Bucket::new(SAMPLES_PER_SECOND, 0),
            queued: Vec::with_capacity(SAMPLE_QUEUE),
            lost: 0,
        }
    }
}

impl DropSamples {
    /// Samples a drop under counter index `counter` (bounded by the bucket and the queue).
    pub fn sample(&mut self, data: &[u8], counter: u32, worker: u16, now_ms: u32) {
        if !self.bucket.take(now_ms) {
            return;
        }
        let Some(flow) = flow_of(data) else {
            return;
        };
        if self.queued.len() >= SAMPLE_QUEUE {
            self.lost += 1;
            return;
        }
        self.queued.push(Message::Dropped {
            counter,
            worker,
            flow,
        });
    }
}

/// One worker's slot: taps posted by the main lcore, drop samples handed back.
#[derive(Debug, Default)]
pub struct TapSlot {
    posted: AtomicU64,
    taken: AtomicU64,
    tap: Mutex<Option<Tap>>,
    samples: Mutex<Vec<Message>>,
}

impl TapSlot {
    /// A tap change posted since `seen` (`Some(None)`: stop capturing). One load when none.
    pub fn take(&self, seen: &mut u64) -> Option<Option<Tap>> {
        let posted = self.posted.load(Ordering::Acquire);
        if posted == *seen {
            return None;
        }
        let mut slot = self.tap.try_lock().ok()?;
        let tap = slot.take();
        *seen = posted;
        self.taken.store(posted, Ordering::Release);
        Some(tap)
    }

    /// Hands drop samples to the main lcore; false (keep them) when it is busy with the slot.
    pub fn hand_samples(&self, samples: &mut Vec<Message>) -> bool {
        let Ok(mut out) = self.samples.try_lock() else {
            return false;
        };
        let room = SAMPLE_QUEUE.saturating_sub(out.len());
        let n = samples.len().min(room);
        out.extend(samples.drain(..n));
        samples.clear();
        true
    }

    fn post(&self, serial: u64, tap: Option<Tap>) {
        if let Ok(mut slot) = self.tap.lock() {
            *slot = tap;
        }
        self.posted.store(serial, Ordering::Release);
    }
}

/// The capture in progress, on the main lcore.
#[derive(Debug)]
struct Active {
    file: Arc<CaptureFile>,
    /// The stop was posted (with this serial).
    stopping: Option<u64>,
}

/// The main lcore's side: starts, watches and ends captures; collects drop samples.
#[derive(Debug, Default)]
pub struct CaptureDesk {
    serial: u64,
    active: Option<Active>,
    /// Captures refused (bad file, one already running), for the log and the counters.
    pub refused: u64,
    pub started: u64,
}

impl CaptureDesk {
    /// Starts capture `id` of `instance` in `dir` on every worker of `slots`.
    ///
    /// # Errors
    /// A capture is already running, or the file is missing or invalid.
    pub fn start(
        &mut self,
        slots: &[crossbeam_utils::CachePadded<TapSlot>],
        dir: &std::path::Path,
        instance: &str,
        id: u32,
    ) -> Result<(), String> {
        if self.active.is_some() {
            self.refused += 1;
            return Err(format!("capture {id}: another capture is running"));
        }
        let path = capture_path_in(dir, instance, id);
        let file = CaptureFile::open(&path).map_err(|e| {
            self.refused += 1;
            e.to_string()
        })?;
        let filter = file.filter();
        if (file.workers() as usize) < slots.len() {
            self.refused += 1;
            return Err(format!(
                "capture {id}: {} rings for {} workers",
                file.workers(),
                slots.len()
            ));
        }
        self.serial += 1;
        for (w, slot) in slots.iter().enumerate() {
            let worker = u32::try_from(w).unwrap_or(u32::MAX);
            let tap = file.producer(worker).map(|ring| Tap {
                ring,
                filter,
                bucket: None,
                budget: filter.budget,
                worker: u16::try_from(w).unwrap_or(u16::MAX),
            });
            slot.post(self.serial, tap);
        }
        file.set_attached(std::process::id());
        self.started += 1;
        self.active = Some(Active {
            file,
            stopping: None,
        });
        Ok(())
    }

    /// Ends the capture when asked, at its deadline or when every worker spent its budget;
    /// marks it detached once every worker let go. Call every poll.
    pub fn poll(&mut self, slots: &[crossbeam_utils::CachePadded<TapSlot>]) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.stopping.is_none() {
            let deadline = a.file.deadline_ms();
            let budget = a.file.filter().budget;
            // `matched` counts pushes tried (past the rate bound), `full` those refused.
            let spent = (0..a.file.workers()).all(|w| {
                let (full, _, matched) = a.file.ring_counts(w);
                matched.saturating_sub(full) >= budget
            });
            if a.file.stopped() || (deadline != 0 && monotonic_ms() >= deadline) || spent {
                self.serial += 1;
                for slot in slots {
                    slot.post(self.serial, None);
                }
                a.stopping = Some(self.serial);
            }
        }
        if let Some(serial) = a.stopping {
            if slots
                .iter()
                .all(|s| s.taken.load(Ordering::Acquire) >= serial)
            {
                a.file.set_detached();
                self.active = None;
            }
        }
    }

    /// The drop samples workers handed over.
    pub fn collect_samples(
        slots: &[crossbeam_utils::CachePadded<TapSlot>],
        out: &mut std::collections::VecDeque<Message>,
    ) {
        for slot in slots {
            if let Ok(mut s) = slot.samples.try_lock() {
                out.extend(s.drain(..));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]); // one VLAN tag
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 1, 0, 7]);
        ip[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    #[test]
    fn the_flow_of_a_tagged_ipv4_frame_and_nothing_from_short_ones() {
        let t = flow_of(&frame([203, 0, 113, 10], 443)).unwrap();
        assert_eq!((t.family, t.proto, t.sport, t.dport), (4, 6, 40000, 443));
        assert_eq!(&t.dst[..4], &[203, 0, 113, 10]);
        for n in 0..34 {
            assert!(flow_of(&frame([1, 2, 3, 4], 1)[..n]).is_none(), "{n}");
        }
    }

    #[test]
    fn the_bucket_allows_its_rate() {
        let mut b = Bucket::new(10, 0);
        let first = (0..100).filter(|_| b.take(0)).count();
        assert_eq!(first, 10);
        assert!(!b.take(50));
        assert!(b.take(100));
    }

    #[test]
    fn drop_samples_are_bounded_per_second() {
        let mut s = DropSamples::default();
        for _ in 0..1000 {
            s.sample(&frame([1, 2, 3, 4], 80), 3, 0, 5);
        }
        assert_eq!(s.queued.len(), SAMPLES_PER_SECOND as usize);
        assert!(matches!(
            s.queued[0],
            Message::Dropped { counter: 3, worker: 0, flow } if flow.dport == 80
        ));
    }
}
