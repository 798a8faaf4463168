//! Rise/fall hysteresis over probe results: the state of one backend's health check.
//!
//! A backend starts `up` (as Envoy and HAProxy do by default): a restarted control plane must not
//! pull a working fleet out of the tables while its first probes run, and a backend the policy
//! just added takes traffic at once. `fall` failures in a row take it down; `rise` successes in a
//! row bring it back. Only those transitions change the tables.

use std::time::Instant;

use serde::Serialize;

/// What the health check says of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

impl Health {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// The last probe and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    pub at: Instant,
    /// `ok`, or why it failed (`timeout`, `connection refused`, `status 503 (expected 200)`,
    /// `model llama missing (...)`).
    pub result: String,
    pub ok: bool,
}

/// A change of state, with what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    /// The last probe's result and the run that tripped the threshold
    /// (`timeout (3 failures in a row, fall 3)`).
    pub reason: String,
}

/// Health-check state of one backend.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    pub state: Health,
    /// When `state` last changed (or when checking started).
    pub since: Instant,
    pub last: Option<ProbeRecord>,
    /// Why the last transition happened; empty before any.
    pub reason: String,
    successes: u32,
    failures: u32,
}

impl BackendHealth {
    /// A backend just put under check: up, no probe yet.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self::starting(Health::Up, now)
    }

    /// A backend whose state is already known (e.g. down in the live generation).
    #[must_use]
    pub fn starting(state: Health, now: Instant) -> Self {
        Self {
            state,
            since: now,
            last: None,
            reason: String::new(),
            successes: 0,
            failures: 0,
        }
    }

    /// Folds in one probe result (`Err` carries the failure's text); returns the transition
    /// when `rise` successes or `fall` failures in a row change the state.
    pub fn observe(
        &mut self,
        result: Result<(), String>,
        rise: u32,
        fall: u32,
        now: Instant,
    ) -> Option<Transition> {
        let ok = result.is_ok();
        let text = result.err().unwrap_or_else(|| "ok".to_owned());
        self.last = Some(ProbeRecord {
            at: now,
            result: text.clone(),
            ok,
        });
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let (to, run) = match self.state {
            Health::Up if self.failures >= fall => (
                Health::Down,
                format!(
                    "{} failure{} in a row, fall {fall}",
                    self.failures,
                    plural(self.failures)
                ),
            ),
            Health::Down if self.successes >= rise => (
                Health::Up,
                format!(
                    "{} success{} in a row, rise {rise}",
                    self.successes,
                    if self.successes == 1 { "" } else { "es" }
                ),
            ),
            _ => return None,
        };
        let transition = Transition {
            from: self.state,
            to,
            reason: format!("{text} ({run})"),
        };
        self.state = to;
        self.since = now;
        self.reason.clone_from(&transition.reason);
        Some(transition)
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_falls_after_fall_failures_and_rises_after_rise_successes() {
        let t = Instant::now();
        let mut h = BackendHealth::new(t);
        assert_eq!(h.observe(Err("timeout".into()), 2, 3, t), None);
        assert_eq!(h.observe(Err("timeout".into()), 2, 3, t), None);
        let down = h.observe(Err("timeout".into()), 2, 3, t).unwrap();
        assert_eq!((down.from, down.to), (Health::Up, Health::Down));
        assert_eq!(down.reason, "timeout (3 failures in a row, fall 3)");
        assert_eq!(h.observe(Ok(()), 2, 3, t), None);
        let up = h.observe(Ok(()), 2, 3, t).unwrap();
        assert_eq!(up.to, Health::Up);
        assert_eq!(up.reason, "ok (2 successes in a row, rise 2)");
    }

    #[test]
    fn health_a_success_resets_the_failure_run() {
        let t = Instant::now();
        let mut h = BackendHealth::new(t);
        for _ in 0..10 {
            assert_eq!(h.observe(Err("refused".into()), 1, 2, t), None);
            assert_eq!(h.observe(Ok(()), 1, 2, t), None);
        }
        assert_eq!(h.state, Health::Up);
        assert!(h.last.as_ref().unwrap().ok);
    }
}
