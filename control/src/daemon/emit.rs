//! The controller's events: how a refused policy, a weight change, a rollout step or a
//! data-plane link change becomes an [`Event`] on the bus ([`crate::events`]).

use std::net::IpAddr;

use switchyard_table::shm::message::{EVENT_LINK_DOWN, EVENT_LINK_UP};

use crate::events::{Event, Kind};
use crate::fleet::load::Target;
use crate::publish::DataplaneEvent;
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

/// `link_down` / `link_up` from the data plane's `Event` message (`a` = DPDK port id; `b` = the
/// port's link changes so far for a down, its speed in Mbps for an up, 0 or `u32::MAX`:
/// unknown), tagged with the data plane (`pid`, `epoch`) that was attached when the control
/// plane read it. `None` for another event kind (from a newer data plane) or a port id that is
/// no DPDK port id.
#[must_use]
pub fn link_event(e: &DataplaneEvent, pid: u64, epoch: u64) -> Option<Event> {
    let port = u16::try_from(e.a).ok()?;
    let event = match e.kind {
        EVENT_LINK_DOWN => Event::new(Kind::LinkDown, format!("port {port}: link down"))
            .evidence("link_changes", e.b as f64),
        EVENT_LINK_UP => match e.b {
            0 | 0xffff_ffff.. => {
                Event::new(Kind::LinkUp, format!("port {port}: link up, speed unknown"))
            }
            mbps => Event::new(
                Kind::LinkUp,
                if mbps % 1000 == 0 {
                    format!("port {port}: link up at {} Gbps", mbps / 1000)
                } else {
                    format!("port {port}: link up at {mbps} Mbps")
                },
            )
            .evidence("speed_mbps", mbps as f64),
        },
        _ => return None,
    };
    Some(event.port(port).dataplane(pid, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    fn dp(kind: u32, a: u64, b: u64) -> DataplaneEvent {
        DataplaneEvent { kind, a, b }
    }

    #[test]
    fn link_down_carries_port_changes_and_dataplane() {
        let e = link_event(&dp(EVENT_LINK_DOWN, 2, 3), 777, 4).unwrap();
        assert_eq!(e.kind, Kind::LinkDown);
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.message, "port 2: link down");
        assert_eq!(e.port, Some(2));
        let d = e.dataplane.unwrap();
        assert_eq!((d.pid, d.epoch), (777, 4));
        assert_eq!(e.evidence.get("link_changes"), Some(&3.0));
        assert!(!e.evidence.contains_key("speed_mbps"));
    }

    #[test]
    fn link_up_names_its_speed_when_known() {
        let e = link_event(&dp(EVENT_LINK_UP, 0, 10_000), 1, 1).unwrap();
        assert_eq!(e.kind, Kind::LinkUp);
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.message, "port 0: link up at 10 Gbps");
        assert_eq!(e.evidence.get("speed_mbps"), Some(&10_000.0));
        let e = link_event(&dp(EVENT_LINK_UP, 1, 2500), 1, 1).unwrap();
        assert_eq!(e.message, "port 1: link up at 2500 Mbps");
        for unknown in [0, u64::from(u32::MAX)] {
            let e = link_event(&dp(EVENT_LINK_UP, 1, unknown), 1, 1).unwrap();
            assert_eq!(e.message, "port 1: link up, speed unknown");
            assert!(e.evidence.is_empty());
            assert_eq!(e.port, Some(1));
        }
    }

    #[test]
    fn unknown_kinds_and_impossible_ports_are_not_events() {
        assert!(link_event(&dp(99, 0, 0), 1, 1).is_none());
        assert!(link_event(&dp(EVENT_LINK_DOWN, 1 << 16, 1), 1, 1).is_none());
    }
}
