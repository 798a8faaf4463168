//! The event bus: structured events about what the control plane did and what the data plane
//! saw, exported to a local JSON-lines file and to syslog collectors (a SIEM).
//!
//! # Emitting events (the API other modules call)
//!
//! ```
//! use switchyard_control::events::{Event, Events, Kind};
//! let events = Events::disabled(); // the daemon hands out its own: `Controller::events()`
//! events.emit(
//!     Event::new(Kind::BackendDown, "backend 192.0.2.11 of pool llama-eu is down")
//!         .pool("llama-eu")
//!         .backend("192.0.2.11".parse().unwrap())
//!         .reason("connection refused"),
//! );
//! ```
//!
//! - [`Events`] is a cheap, cloneable handle (`Send + Sync`); clone it into any thread.
//! - [`Events::emit`] never blocks and never fails: it anonymises the event's client address
//!   (if the configuration says so, [`privacy`]), then offers it to every sink's bounded queue;
//!   a full queue drops the event for that sink and counts it
//!   (`switchyard_events_dropped_total{sink=…}` in `/metrics`, written by `daemon::metrics`).
//! - An [`Event`] is a [`Kind`] (which fixes its severity and its OCSF class), a one-line
//!   message, and optional typed fields: service, pool, backend, worker, reason, a
//!   [`Flow`] 5-tuple (data-plane samples), a data-plane port and the [`Dataplane`] that
//!   reported it (link changes), and named numeric `evidence` (detections).
//! - Data-plane drop samples: `Event::new(Kind::AclDrop | Kind::RateLimitDrop |
//!   Kind::ResidencyDrop, message).flow(Flow { … }).service(name)`.
//!
//! # Sinks
//!
//! Each sink runs on its own thread behind a bounded queue ([`sink`]): a JSON-lines file, and
//! syslog over UDP or TCP (RFC 5424 messages; octet counting per RFC 6587 on TCP, reconnect with
//! backoff) carrying OCSF-shaped JSON or CEF ([`format`]). A slow or dead collector fills only
//! its own queue. Configuration: [`config`], documented in `docs/CONTROL.md` ("Events").
//!
//! Detection over the data plane's counters (new-flow spikes, sustained ACL and rate-limit
//! drops, flood mode) lives in [`detect`] and emits through the same bus.

pub mod config;
pub mod detect;
pub mod format;
pub mod privacy;
pub mod sink;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use self::config::EventsConfig;
use self::privacy::Anonymiser;
use self::sink::SinkHandle;

/// How bad an event is: the syslog severity and OCSF `severity_id` follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Notice,
    Warning,
    Error,
}

impl Severity {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// What happened. Each kind has one name (the JSON `kind`, the syslog MSGID, the CEF signature
/// id), one severity and one OCSF class ([`format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A policy generation was adopted (reload, apply, drain/enable, fleet change).
    PolicyApplied,
    /// A policy (file or `apply`) did not validate or compile; nothing changed.
    PolicyRefused,
    /// The data plane refused a generation it was sent.
    GenerationRejected,
    BackendUp,
    BackendDown,
    /// A backend's effective weight or full mark changed with its load.
    WeightChanged,
    /// A phased canary started, advanced, completed, paused or resumed.
    RolloutStep,
    /// A phased canary's gate tripped: share 0.
    RolloutRollback,
    /// The HTTP API refused a request (no or wrong token, foreign Host/Origin, bad type).
    ApiRefused,
    /// A worker's connection table entered flood mode.
    FloodEntered,
    /// A worker's connection table left flood mode.
    FloodLeft,
    /// New flows per second well above their own moving baseline.
    NewFlowSpike,
    /// ACL drops above the configured rate for the configured time.
    AclDropsSustained,
    /// Per-source rate-limit drops above the configured rate for the configured time.
    RateLimitDropsSustained,
    /// One source prefix sends a large share of the traffic, for the configured time.
    TopTalker,
    /// A sampled packet the ACL dropped (data plane).
    AclDrop,
    /// A sampled packet the per-source limit dropped (data plane).
    RateLimitDrop,
    /// A sampled packet dropped to keep a strict-residency route in its region (data plane).
    ResidencyDrop,
    /// A data-plane port's link went down (data plane, `EVENT_LINK_DOWN`).
    LinkDown,
    /// A data-plane port's link came up (data plane, `EVENT_LINK_UP`).
    LinkUp,
}

/// Broad class of an event, which picks its OCSF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Something the control plane did or saw (OCSF base event, `class_uid` 0).
    Control,
    /// A refused API call (OCSF API Activity, 6003).
    Api,
    /// A packet the data plane refused (OCSF Network Activity, 4001, activity Refuse).
    Network,
    /// A detection over counters (OCSF Detection Finding, 2004).
    Finding,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::PolicyApplied,
        Kind::PolicyRefused,
        Kind::GenerationRejected,
        Kind::BackendUp,
        Kind::BackendDown,
        Kind::WeightChanged,
        Kind::RolloutStep,
        Kind::RolloutRollback,
        Kind::ApiRefused,
        Kind::FloodEntered,
        Kind::FloodLeft,
        Kind::NewFlowSpike,
        Kind::AclDropsSustained,
        Kind::RateLimitDropsSustained,
        Kind::TopTalker,
        Kind::AclDrop,
        Kind::RateLimitDrop,
        Kind::ResidencyDrop,
        Kind::LinkDown,
        Kind::LinkUp,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PolicyApplied => "policy_applied",
            Self::PolicyRefused => "policy_refused",
            Self::GenerationRejected => "generation_rejected",
            Self::BackendUp => "backend_up",
            Self::BackendDown => "backend_down",
            Self::WeightChanged => "weight_changed",
            Self::RolloutStep => "rollout_step",
            Self::RolloutRollback => "rollout_rollback",
            Self::ApiRefused => "api_refused",
            Self::FloodEntered => "flood_entered",
            Self::FloodLeft => "flood_left",
            Self::NewFlowSpike => "new_flow_spike",
            Self::AclDropsSustained => "acl_drops_sustained",
            Self::RateLimitDropsSustained => "rate_limit_drops_sustained",
            Self::TopTalker => "top_talker",
            Self::AclDrop => "acl_drop",
            Self::RateLimitDrop => "rate_limit_drop",
            Self::ResidencyDrop => "residency_drop",
            Self::LinkDown => "link_down",
            Self::LinkUp => "link_up",
        }
    }

    #[must_use]
    pub fn severity(self) -> Severity {
        match self {
            Self::PolicyApplied
            | Self::BackendUp
            | Self::WeightChanged
            | Self::RolloutStep
            | Self::FloodLeft
            | Self::LinkUp => Severity::Info,
            Self::AclDrop | Self::RateLimitDrop | Self::ResidencyDrop => Severity::Notice,
            Self::PolicyRefused
            | Self::BackendDown
            | Self::RolloutRollback
            | Self::ApiRefused
            | Self::FloodEntered
            | Self::NewFlowSpike
            | Self::AclDropsSustained
            | Self::RateLimitDropsSustained
            | Self::TopTalker
            | Self::LinkDown => Severity::Warning,
            Self::GenerationRejected => Severity::Error,
        }
    }

    #[must_use]
    pub fn class(self) -> Class {
        match self {
            Self::ApiRefused => Class::Api,
            Self::AclDrop | Self::RateLimitDrop | Self::ResidencyDrop => Class::Network,
            Self::FloodEntered
            | Self::NewFlowSpike
            | Self::AclDropsSustained
            | Self::RateLimitDropsSustained
            | Self::TopTalker => Class::Finding,
            // Link changes are a device's status, like a backend's health: neither traffic
            // (Network Activity) nor a detection; see `format` for the OCSF reasoning.
            _ => Class::Control,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packet's 5-tuple as the data plane saw it (client → VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
}

/// The data plane that reported an event: a restarted data plane has another pid and a higher
/// epoch (the segment's `DataplaneLine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    pub pid: u64,
    pub epoch: u64,
}

/// One event. Build it with [`Event::new`] and the field setters; emit it with [`Events::emit`].
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(serialize_with = "format::serialize_time")]
    pub time: SystemTime,
    pub kind: Kind,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The client or peer address (an API peer; a detection's subject); anonymised like a
    /// flow's source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowView>,
    /// The data plane's port (DPDK port id, the appliance's port order) a link event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The data plane that reported the event (data-plane events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<Dataplane>,
    /// Named figures behind the event (rates, baselines, thresholds, counts).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, f64>,
}

/// A [`Flow`] as exported: the source may be anonymised, so it is text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowView {
    pub src: String,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
}

impl Event {
    /// An event of `kind` happening now, with its kind's severity.
    #[must_use]
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            time: SystemTime::now(),
            kind,
            severity: kind.severity(),
            message: message.into(),
            service: None,
            pool: None,
            backend: None,
            worker: None,
            client: None,
            reason: None,
            flow: None,
            port: None,
            dataplane: None,
            evidence: BTreeMap::new(),
        }
    }

    #[must_use]
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    #[must_use]
    pub fn pool(mut self, name: impl Into<String>) -> Self {
        self.pool = Some(name.into());
        self
    }

    #[must_use]
    pub fn backend(mut self, address: IpAddr) -> Self {
        self.backend = Some(address);
        self
    }

    #[must_use]
    pub fn worker(mut self, worker: u32) -> Self {
        self.worker = Some(worker);
        self
    }

    /// The client (or API peer) the event is about; anonymised on emit when configured.
    #[must_use]
    pub fn client(mut self, address: IpAddr) -> Self {
        self.client = Some(address.to_string());
        self
    }

    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The packet's 5-tuple; its source is anonymised on emit when configured.
    #[must_use]
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flow = Some(FlowView {
            src: flow.src.to_string(),
            src_port: flow.src_port,
            dst: flow.dst,
            dst_port: flow.dst_port,
            protocol: flow.protocol,
        });
        self
    }

    /// The data-plane port the event is about.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The data plane (pid, epoch) that reported the event.
    #[must_use]
    pub fn dataplane(mut self, pid: u64, epoch: u64) -> Self {
        self.dataplane = Some(Dataplane { pid, epoch });
        self
    }

    #[must_use]
    pub fn evidence(mut self, name: &str, value: f64) -> Self {
        self.evidence.insert(name.to_owned(), value);
        self
    }

    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// Counts of one sink, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    /// `file`, `syslog-udp`, `syslog-tcp`.
    pub sink: String,
    /// Where it writes (`/var/log/…`, `127.0.0.1:514`).
    pub target: String,
    /// Events written or sent.
    pub sent: u64,
    /// Events dropped because the sink's queue was full.
    pub dropped: u64,
    /// Events lost to write or send errors (a dead collector, a full disk).
    pub failed: u64,
    /// Events waiting in the queue.
    pub queued: u64,
}

#[derive(Debug)]
struct Bus {
    anonymiser: Anonymiser,
    sinks: Vec<SinkHandle>,
    emitted: [AtomicU64; Kind::ALL.len()],
}

/// The handle every part of the control plane emits through; see the module documentation.
#[derive(Debug, Clone)]
pub struct Events {
    bus: Option<Arc<Bus>>,
}

impl Events {
    /// A bus with no sinks: `emit` does nothing.
    #[must_use]
    pub fn disabled() -> Self {
        Self { bus: None }
    }

    /// Starts one thread per configured sink.
    ///
    /// # Errors
    /// A sink could not start (the file cannot be opened, an address does not resolve) or the
    /// anonymisation key cannot be read.
    pub fn start(config: &EventsConfig) -> Result<Self, String> {
        let anonymiser = Anonymiser::from_config(&config.privacy)?;
        let sinks = config
            .sinks
            .iter()
            .map(SinkHandle::spawn)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            bus: Some(Arc::new(Bus {
                anonymiser,
                sinks,
                emitted: std::array::from_fn(|_| AtomicU64::new(0)),
            })),
        })
    }

    /// Whether any sink is configured.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| !b.sinks.is_empty())
    }

    /// Anonymises and queues the event on every sink; never blocks (see the module doc).
    pub fn emit(&self, mut event: Event) {
        let Some(bus) = &self.bus else { return };
        if let Some(i) = Kind::ALL.iter().position(|k| *k == event.kind) {
            bus.emitted[i].fetch_add(1, Ordering::Relaxed);
        }
        bus.anonymiser.apply(&mut event);
        let event = Arc::new(event);
        for sink in &bus.sinks {
            sink.offer(&event);
        }
    }

    /// Events emitted so far, by kind (before any sink dropped them).
    #[must_use]
    pub fn emitted(&self) -> Vec<(Kind, u64)> {
        let Some(bus) = &self.bus else {
            return Vec::new();
        };
        Kind::ALL
            .iter()
            .zip(&bus.emitted)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Per-sink counts.
    #[must_use]
    pub fn stats(&self) -> Vec<SinkStats> {
        self.bus
            .as_ref()
            .map(|b| b.sinks.iter().map(SinkHandle::stats).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for the sinks to write what is queued (at daemon stop).
    pub fn flush(&self, timeout: Duration) {
        let Some(bus) = &self.bus else { return };
        let deadline = std::time::Instant::now() + timeout;
        for sink in &bus.sinks {
            sink.flush(deadline);
        }
    }
}
