//! The main lcore's job while workers poll: launch them, print a rate line every interval, stop
//! them on a signal or when the duration is reached, and total up.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::appliance::{Appliance, WorkerPlan};
use crate::dpdk;
use crate::stats::{Totals, TotalsBoard};

/// How a run ended, for the `RESULT` line.
#[derive(Debug, Clone, Copy)]
pub struct RunReport {
    pub workers: usize,
    pub totals: Totals,
    pub elapsed: Duration,
}

impl RunReport {
    /// Packets received (and so processed) per second, in millions.
    pub fn mpps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)] // packet counts far below 2^52
        let rx = self.totals.rx as f64;
        rx / secs / 1e6
    }

    /// The machine-readable last line of a run.
    pub fn result_line(&self, mode: &str) -> String {
        format!(
            "RESULT mode={mode} workers={} rx_pkts={} tx_pkts={} dropped={} mpps={:.3}",
            self.workers,
            self.totals.rx,
            self.totals.tx,
            self.totals.dropped,
            self.mpps()
        )
    }
}

/// A packet rate for the rate line: `12.345 Mpps` from 1 Mpps up, whole `pps` below, so a
/// trickle of test or probe traffic does not read `0.000 Mpps`.
pub fn format_rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.3} Mpps", pps / 1e6)
    } else {
        format!("{pps:.0} pps")
    }
}

/// Launches one job per worker, reports every `interval`, and stops when `stop` is set or after
/// `duration`. `make_job` builds the job that runs on the worker's lcore; `tick` runs on the main
/// lcore about every 250 µs while workers poll (the control channel lives there: this is what
/// bounds publish → live latency).
pub fn run_workers<F, J>(
    app: &Appliance,
    mode: &str,
    duration: Option<Duration>,
    interval: Duration,
    stop: &Arc<AtomicBool>,
    make_job: F,
    mut tick: impl FnMut(&TotalsBoard),
) -> Result<RunReport>
where
    F: Fn(&WorkerPlan, Arc<TotalsBoard>, Arc<AtomicBool>) -> J,
    J: FnOnce() -> i32 + Send + 'static,
{
    let counters = Arc::new(TotalsBoard::new(app.workers.len()));
    let started = Instant::now();
    let mut launched = Vec::new();
    for plan in &app.workers {
        let job = make_job(plan, Arc::clone(&counters), Arc::clone(stop));
        if let Err(e) = dpdk::launch(plan.lcore, job) {
            stop.store(true, Relaxed);
            for &l in &launched {
                dpdk::wait_lcore(l);
            }
            bail!(
                "cannot start worker {} on lcore {}: {e}",
                plan.index,
                plan.lcore.0
            );
        }
        launched.push(plan.lcore);
    }

    let mut last = Totals::default();
    let mut last_at = started;
    let nap = Duration::from_micros(250);
    while !stop.load(Relaxed) {
        dpdk::nap(nap);
        tick(&counters);
        let now = Instant::now();
        if duration.is_some_and(|d| now.duration_since(started) >= d) {
            break;
        }
        if now.duration_since(last_at) >= interval {
            let t = counters.sum();
            let secs = now.duration_since(last_at).as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = |a: u64, b: u64| format_rate(a.saturating_sub(b) as f64 / secs);
            println!(
                "{mode}: rx {} tx {} dropped {} | total rx={} tx={} dropped={}",
                rate(t.rx, last.rx),
                rate(t.tx, last.tx),
                rate(t.dropped, last.dropped),
                t.rx,
                t.tx,
                t.dropped
            );
            last = t;
            last_at = now;
        }
    }
    stop.store(true, Relaxed);
    let mut failed = Vec::new();
    for plan in &app.workers {
        let rc = dpdk::wait_lcore(plan.lcore);
        if rc != 0 {
            failed.push(format!(
                "worker {} (lcore {}) exited with {rc}",
                plan.index, plan.lcore.0
            ));
        }
    }
    let elapsed = started.elapsed();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(RunReport {
        workers: app.workers.len(),
        totals: counters.sum(),
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::format_rate;

    #[test]
    fn low_rates_read_in_pps() {
        assert_eq!(format_rate(0.0), "0 pps");
        assert_eq!(format_rate(412.4), "412 pps");
        assert_eq!(format_rate(999_999.0), "999999 pps");
        assert_eq!(format_rate(1_000_000.0), "1.000 Mpps");
        assert_eq!(format_rate(14_880_952.0), "14.881 Mpps");
    }
}
