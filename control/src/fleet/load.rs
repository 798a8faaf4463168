//! Live load → effective weight, without churn.
//!
//! Each scrape gives one value per signal. A backend's **load** is the largest
//! `value / saturation` over its signals (1.0 = saturated: a queue of 5, KV-cache use of 0.8 —
//! the points the Gateway API Inference Extension uses), so the most loaded resource decides.
//! Load is smoothed by an exponential moving average with time constant `smoothing`
//! (`α = 1 − e^(−Δt/τ)`, so irregular scrape times weigh correctly), and the effective weight is
//!
//! ```text
//! effective = clamp(round(configured / (1 + load)), min_weight, max_weight)
//! ```
//!
//! An idle backend keeps its configured weight; one at saturation gets half of it; one at 10×
//! saturation a little under a tenth. A backend whose smoothed load reaches `full_at` is *full*
//! (bounded-load affinity: new flows that prefer it go to their next choice) until its load
//! drops below 90 % of `full_at`. Metrics older than `stale_after` (the server stopped answering
//! its `/metrics`, or lies with a page without the signals) are *stale*: the backend goes back
//! to its configured weight and is never full, since nothing is known about it.
//!
//! The controller publishes a new weight only when it leaves the dead band around the
//! published one, or the backend fills, empties or goes stale (see [`BackendLoad::wants`]).

use std::time::{Duration, Instant};

use crate::policy::LoadFeedback;

/// Fraction of `full_at` below which a full backend stops being full.
pub const FULL_HYSTERESIS: f64 = 0.9;

/// A backend's load from one scrape: the largest `value / saturation` over the signals it
/// reported; `None` when it reported none of them.
#[must_use]
pub fn load_of(values: &[Option<f64>], saturation: &[f64]) -> Option<f64> {
    values
        .iter()
        .zip(saturation)
        .filter_map(|(v, s)| v.map(|v| (v / s).max(0.0)))
        .filter(|l| l.is_finite())
        .reduce(f64::max)
}

/// The effective weight for `load`, before clamping: `round(configured / (1 + load))`, at least 1.
#[must_use]
pub fn weight_for(configured: u16, load: f64) -> u32 {
    let w = (f64::from(configured) / (1.0 + load.max(0.0))).round();
    // In 0..=65535 here: configured is a u16 and the divisor at least 1.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let w = w as u32;
    w.max(1)
}

/// What the tables should say about a backend right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// `None`: the configured weight (no load known, or stale).
    pub weight: Option<u32>,
    pub full: bool,
}

/// Load state of one backend.
#[derive(Debug, Clone, Default)]
pub struct BackendLoad {
    /// Raw values of the last good scrape, in signal order.
    pub values: Vec<Option<f64>>,
    /// Smoothed load.
    pub load: Option<f64>,
    /// When the last good scrape arrived.
    pub last_ok: Option<Instant>,
    /// The last scrape's error, cleared by a good one.
    pub last_error: Option<String>,
    /// What the tables say now (what was last published for it).
    pub published: Target,
}

impl BackendLoad {
    /// Folds in one scrape.
    pub fn observe(
        &mut self,
        result: Result<Vec<Option<f64>>, String>,
        cfg: &LoadFeedback,
        now: Instant,
    ) {
        let values = match result {
            Ok(values) => values,
            Err(e) => {
                self.last_error = Some(e);
                return;
            }
        };
        let Some(sample) = load_of(&values, &cfg.saturation) else {
            self.last_error = Some(format!(
                "the metrics page has none of the signals ({})",
                cfg.signals.join(", ")
            ));
            return;
        };
        self.load = Some(match (self.load, self.last_ok) {
            (Some(previous), Some(at)) if !self.stale(cfg, now) && !cfg.smoothing.is_zero() => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let alpha = 1.0 - (-dt / cfg.smoothing.as_secs_f64()).exp();
                previous + alpha * (sample - previous)
            }
            _ => sample,
        });
        self.values = values;
        self.last_ok = Some(now);
        self.last_error = None;
    }

    /// Whether the last good scrape is older than `stale_after` (or there never was one).
    #[must_use]
    pub fn stale(&self, cfg: &LoadFeedback, now: Instant) -> bool {
        self.last_ok
            .is_none_or(|at| now.saturating_duration_since(at) > cfg.stale_after)
    }

    /// Age of the last good scrape.
    #[must_use]
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_ok.map(|at| now.saturating_duration_since(at))
    }

    /// What the tables should say now, clamped as the compiler clamps.
    #[must_use]
    pub fn target(&self, cfg: &LoadFeedback, configured: u16, now: Instant) -> Target {
        match self.load {
            Some(load) if !self.stale(cfg, now) => {
                let weight = weight_for(configured, load)
                    .clamp(u32::from(cfg.min_weight), u32::from(cfg.max_weight));
                let full = cfg.full_at.is_some_and(|at| {
                    if self.published.full {
                        load >= at * FULL_HYSTERESIS
                    } else {
                        load >= at
                    }
                });
                Target {
                    weight: Some(weight),
                    full,
                }
            }
            _ => Target::default(),
        }
    }

    /// The target when it should be published: it leaves the dead band around the published
    /// weight, or fullness or staleness changed.
    #[must_use]
    pub fn wants(&self, cfg: &LoadFeedback, configured: u16, now: Instant) -> Option<Target> {
        let target = self.target(cfg, configured, now);
        if target.full != self.published.full {
            return Some(target);
        }
        let from = self.published.weight.unwrap_or(u32::from(configured));
        let to = target.weight.unwrap_or(u32::from(configured));
        if from == to {
            return None;
        }
        // Back to the configured weight (stale metrics) always; otherwise past the band.
        (target.weight.is_none() || outside_band(from, to, cfg)).then_some(target)
    }
}

fn outside_band(from: u32, to: u32, cfg: &LoadFeedback) -> bool {
    let band = f64::from(from) * cfg.dead_band.fraction();
    (f64::from(to) - f64::from(from)).abs() > band
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Percent;

    fn cfg() -> LoadFeedback {
        LoadFeedback {
            metrics_port: 8000,
            metrics_path: "/metrics".into(),
            signals: vec![
                "vllm:num_requests_waiting".into(),
                "vllm:kv_cache_usage_perc".into(),
            ],
            saturation: vec![5.0, 0.8],
            interval: Duration::from_millis(100),
            min_weight: 1,
            max_weight: u16::MAX,
            smoothing: Duration::ZERO,
            dead_band: Percent::from_basis_points(1000).unwrap(),
            stale_after: Duration::from_secs(1),
            min_rebuild_interval: Duration::from_millis(500),
            full_at: Some(1.0),
        }
    }

    #[test]
    fn load_is_the_most_saturated_signal() {
        assert_eq!(load_of(&[Some(10.0), Some(0.2)], &[5.0, 0.8]), Some(2.0));
        assert_eq!(load_of(&[Some(0.0), Some(0.4)], &[5.0, 0.8]), Some(0.5));
        assert_eq!(load_of(&[None, Some(0.4)], &[5.0, 0.8]), Some(0.5));
        assert_eq!(load_of(&[None, None], &[5.0, 0.8]), None);
    }

    #[test]
    fn load_weights_for_0_10_50_waiting() {
        // The documented proportions: 100 : 33 : 9.
        let w: Vec<u32> = [0.0, 10.0, 50.0]
            .iter()
            .map(|q| weight_for(100, q / 5.0))
            .collect();
        assert_eq!(w, vec![100, 33, 9]);
    }

    #[test]
    fn load_dead_band_suppresses_noise_and_passes_real_change() {
        let c = cfg();
        let t = Instant::now();
        let mut b = BackendLoad::default();
        b.observe(Ok(vec![Some(0.0), Some(0.0)]), &c, t);
        let first = b.wants(&c, 100, t);
        // Load known and equal to the configured weight: nothing to publish.
        assert_eq!(first, None);
        b.published = b.target(&c, 100, t);
        b.observe(Ok(vec![Some(0.5), Some(0.0)]), &c, t); // 100 / 1.1 = 91: inside 10 %
        assert_eq!(b.wants(&c, 100, t), None);
        b.observe(Ok(vec![Some(5.0), Some(0.0)]), &c, t); // saturated: 50, and full
        let want = b.wants(&c, 100, t).unwrap();
        assert_eq!(
            want,
            Target {
                weight: Some(50),
                full: true
            }
        );
    }

    #[test]
    fn load_stale_metrics_restore_the_configured_weight() {
        let c = cfg();
        let t = Instant::now();
        let mut b = BackendLoad::default();
        b.observe(Ok(vec![Some(50.0), None]), &c, t);
        b.published = b.target(&c, 100, t);
        assert_eq!(b.published.weight, Some(9));
        let later = t + Duration::from_secs(2);
        b.observe(Err("timeout".into()), &c, later);
        assert!(b.stale(&c, later));
        assert_eq!(b.wants(&c, 100, later), Some(Target::default()));
    }

    #[test]
    fn load_smoothing_follows_the_time_constant() {
        let mut c = cfg();
        c.smoothing = Duration::from_secs(1);
        let t = Instant::now();
        let mut b = BackendLoad::default();
        b.observe(Ok(vec![Some(0.0), None]), &c, t);
        b.observe(Ok(vec![Some(5.0), None]), &c, t + Duration::from_secs(1));
        let l = b.load.unwrap();
        assert!((l - (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{l}");
    }

    #[test]
    fn load_full_has_hysteresis() {
        let c = cfg();
        let t = Instant::now();
        let mut b = BackendLoad::default();
        b.observe(Ok(vec![Some(5.0), None]), &c, t);
        b.published = b.target(&c, 100, t);
        assert!(b.published.full);
        b.observe(Ok(vec![Some(4.7), None]), &c, t); // 0.94 ≥ 0.9: still full
        assert!(b.target(&c, 100, t).full);
        b.observe(Ok(vec![Some(4.0), None]), &c, t); // 0.8 < 0.9: no longer
        assert!(!b.target(&c, 100, t).full);
    }
}
