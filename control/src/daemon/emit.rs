//! The controller's events: how a refused policy, a weight change or a rollout step becomes
//! an [`Event`] on the bus ([`crate::events`]).

use std::net::IpAddr;

use crate::events::{Event, Kind};
use crate::fleet::load::Target;
use crate::rollout::{RolloutEvent, RolloutEventKind};

/// Most error lines an event carries (a policy with hundreds of errors stays one datagram).
pub const MAX_ERROR_LINES: usize = 20;

/// `policy_refused`: the source and its errors (the first [`MAX_ERROR_LINES`]).
#[must_use]
pub fn refused_event(source: &str, errors: &[String]) -> Event {
    let mut reason = errors
        .iter()
        .take(MAX_ERROR_LINES)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if errors.len() > MAX_ERROR_LINES {
        reason.push_str(&format!("\n… and {} more", errors.len() - MAX_ERROR_LINES));
    }
    Event::new(
        Kind::PolicyRefused,
        format!("{source}: policy refused; nothing changed"),
    )
    .reason(reason)
    .evidence("errors", errors.len() as f64)
}

/// `weight_changed`: a backend's effective weight or full mark moved with its load.
#[must_use]
pub fn weight_event(
    pool: &str,
    backend: IpAddr,
    configured: u16,
    from: Target,
    to: Target,
) -> Event {
    let weight = |t: Target| t.weight.unwrap_or(u32::from(configured));
    let full = |t: Target| if t.full { " (full)" } else { "" };
    Event::new(
        Kind::WeightChanged,
        format!(
            "backend {backend} of pool {pool}: weight {}{} -> {}{}",
            weight(from),
            full(from),
            weight(to),
            full(to)
        ),
    )
    .pool(pool)
    .backend(backend)
    .reason("load")
    .evidence("weight_from", f64::from(weight(from)))
    .evidence("weight_to", f64::from(weight(to)))
    .evidence("configured_weight", f64::from(configured))
    .evidence("full", if to.full { 1.0 } else { 0.0 })
}

/// `rollout_step` or `rollout_rollback`.
#[must_use]
pub fn rollout_event(e: &RolloutEvent) -> Event {
    let kind = if e.kind == RolloutEventKind::RolledBack {
        Kind::RolloutRollback
    } else {
        Kind::RolloutStep
    };
    let mut event = Event::new(kind, e.to_string())
        .service(e.service.clone())
        .pool(e.pool.clone())
        .evidence("percent", e.percent.fraction() * 100.0)
        .evidence("step", (e.step + 1) as f64)
        .evidence("steps", e.steps as f64);
    if !e.reason.is_empty() {
        event = event.reason(e.reason.clone());
    }
    event
}
