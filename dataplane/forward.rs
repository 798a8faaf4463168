//! Forward mode: packets move RX → TX between paired ports (0↔1, 2↔3, …) with no processing.
//!
//! It is the benchmark baseline that the pipeline is measured against, and the smallest thing that
//! proves the appliance owns its cores and queues. A port without a partner (the last of an odd
//! count) sends back out of itself.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::appliance::WorkerPlan;
use crate::dpdk::{Burst, PortId, QueueId};
use crate::stats::{Totals, WorkerTotals};

/// The port at position `index` sends to the port at `index ^ 1`, or to itself when that
/// does not exist.
pub fn peer(index: usize, ports: usize) -> usize {
    let p = index ^ 1;
    if p < ports {
        p
    } else {
        index
    }
}

/// A worker's forwarding routes: (RX port, RX queue, TX port), and its own TX queue index.
#[derive(Debug, Clone)]
pub struct ForwardWorker {
    routes: Vec<(PortId, QueueId, PortId)>,
    tx_queue: QueueId,
    tx_retries: u32,
}

impl ForwardWorker {
    /// `ports` is the appliance's port ids in configured order.
    pub fn new(plan: &WorkerPlan, ports: &[PortId], tx_retries: u32) -> Self {
        let routes = plan
            .rx
            .iter()
            .map(|&(port, queue)| {
                let pos = ports.iter().position(|&p| p == port).unwrap_or(0);
                (port, queue, ports[peer(pos, ports.len())])
            })
            .collect();
        Self {
            routes,
            tx_queue: plan.tx_queue,
            tx_retries,
        }
    }

    /// Polls until `stop` is set; publishes totals to `counters` once per round of queues.
    pub fn run(&self, counters: &WorkerTotals, stop: &AtomicBool) -> i32 {
        let mut burst = Burst::new();
        let mut t = Totals::default();
        while !stop.load(Relaxed) {
            for &(rx_port, rx_queue, tx_port) in &self.routes {
                let n = burst.rx(rx_port, rx_queue);
                if n == 0 {
                    continue;
                }
                let (sent, dropped) = burst.tx(tx_port, self.tx_queue, self.tx_retries);
                t.rx += n as u64;
                t.tx += sent as u64;
                t.dropped += dropped as u64;
            }
            counters.publish(&t);
        }
        counters.publish(&t);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::peer;

    #[test]
    fn ports_pair_up() {
        assert_eq!(peer(0, 2), 1);
        assert_eq!(peer(1, 2), 0);
        assert_eq!(peer(2, 3), 2);
        assert_eq!(peer(0, 1), 0);
        assert_eq!(peer(3, 4), 2);
    }
}
