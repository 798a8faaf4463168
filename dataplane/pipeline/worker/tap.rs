//! A worker's hooks for live capture and drop samples ([`crate::capture`]): taking a tap the
//! main lcore posted, offering received and dropped packets to it, sampling policy drops.
//!
//! What this adds to the per-packet path: nothing for forwarded packets but one branch per
//! burst in the poll loop ([`PipelineWorker::taps_received`], a flag in this worker's own
//! context); on the drop path one test of the counter (a sampled reason?) and of a flag
//! (a capture of drops?), both cold: the work itself is in `#[cold]` functions.

use super::{Counter, PipelineWorker, PortIndex};
use crate::capture::{Tap, TapSlot};
use crate::pipeline::PacketBuf;
use switchyard_table::shm::capture::ANY_COUNTER;
use switchyard_table::shm::Message;

/// Drops sampled as events: ACL, per-source limit, no route for the client's region, no
/// healthy backend (a strict-residency route lists only its region's pools).
#[inline]
pub(crate) const fn sampled(counter: Counter) -> bool {
    matches!(
        counter,
        Counter::DropAcl
            | Counter::DropRateLimited
            | Counter::DropNoRoute
            | Counter::DropNoHealthyBackend
    )
}

fn index(counter: Counter) -> u32 {
    u32::try_from(counter.index()).unwrap_or(ANY_COUNTER - 1)
}

impl PipelineWorker {
    /// Takes a tap change from the main lcore (one load when there is none); call at the
    /// housekeeping tick. Also hands over the drop samples taken since the last call.
    pub fn tap_tick(&mut self, slot: &TapSlot, seen: &mut u64) {
        if let Some(tap) = slot.take(seen) {
            self.set_tap(tap);
        }
        if self.tap.as_ref().is_some_and(|t| t.spent()) {
            self.set_tap(None);
        }
        if !self.drop_samples.queued.is_empty() {
            slot.hand_samples(&mut self.drop_samples.queued);
        }
    }

    fn set_tap(&mut self, tap: Option<Tap>) {
        self.tap_received = tap.as_ref().is_some_and(Tap::on_receive);
        self.tap_drops = tap.as_ref().is_some_and(|t| !t.on_receive());
        self.tap = tap.map(Box::new);
    }

    /// Whether a capture of received packets runs: the poll loop's one branch per burst.
    #[inline]
    #[must_use]
    pub fn taps_received(&self) -> bool {
        self.tap_received
    }

    /// Offers a received burst to the capture (before the pipeline rewrites anything).
    #[cold]
    pub fn capture_received<P: PacketBuf>(&mut self, pkts: &[P], rx_port: PortIndex, now: u32) {
        if let Some(tap) = self.tap.as_mut() {
            for p in pkts {
                tap.offer(p.data(), rx_port, ANY_COUNTER, now);
            }
        }
    }

    /// A packet dropped under `counter`: sampled as an event and/or offered to a capture.
    #[cold]
    #[inline(never)]
    pub(super) fn on_drop(&mut self, data: &[u8], counter: Counter, rx_port: PortIndex, now: u32) {
        let c = index(counter);
        if sampled(counter) {
            let worker = self.tap_worker;
            self.drop_samples.sample(data, c, worker, now);
        }
        if let Some(tap) = self.tap.as_mut().filter(|t| t.wants_drop(c)) {
            tap.offer(data, rx_port, c, now);
        }
    }

    /// Drop samples waiting for the main lcore, and those lost to a full queue.
    #[must_use]
    pub fn drop_samples(&self) -> (&[Message], u64) {
        (&self.drop_samples.queued, self.drop_samples.lost)
    }
}
