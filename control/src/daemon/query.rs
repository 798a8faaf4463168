//! Flow queries (`GET /v1/trace`, `GET /v1/flows`): asked of the data plane's workers over the
//! shared-memory rings, answered with names from the generation the workers answered from.
//!
//! `trace` asks every worker what it does with the first packet of a 5-tuple: each worker runs
//! it through its own classification, route, pool and scheduler choice on its live generation,
//! changing nothing, and reads its connection table (`dataplane/pipeline/worker/query.rs`). So
//! the answer is the data plane's, not a second implementation of it. `flows` asks each worker
//! for up to `limit` live flows of its connection table matching a VIP, port and backend filter,
//! walked a slice of buckets at a time so no worker stalls (a bounded sample, like
//! `ipvsadm -lnc`). Both need a running data plane.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_table::generation::{name_str, Generation, Scheduler, FAMILY_V6, NONE};
use switchyard_table::lpm::{lookup_v4, lookup_v6};
use switchyard_table::shm::{
    FlowTuple, Message, Sample, Traced, TRACE_CANARY, TRACE_DROP, TRACE_FALLBACK, TRACE_FORWARD,
    TRACE_HELD, TRACE_SPILL,
};
use tokio::sync::oneshot;

use crate::policy::Policy;

use super::controller::ApiFailure;

/// How long the controller waits for every worker's answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Flows per worker a `flows` request may ask for (the data plane's own cap).
pub const MAX_FLOWS_PER_WORKER: u16 = 256;

/// `GET /v1/trace?client=IP[:PORT]&vip=IP:PORT&proto=tcp|udp`.
#[derive(Debug, Clone, Deserialize)]
pub struct TraceParams {
    pub client: String,
    pub vip: String,
    #[serde(default)]
    pub proto: Option<String>,
}

/// `GET /v1/flows?vip=IP[:PORT]&backend=NAME|ADDRESS&proto=tcp|udp&limit=N`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowsParams {
    pub vip: Option<String>,
    pub backend: Option<String>,
    pub proto: Option<String>,
    pub limit: Option<u16>,
}

/// The source port a trace uses when the client gives none.
pub const DEFAULT_TRACE_PORT: u16 = 40000;

fn bad(text: impl Into<String>) -> ApiFailure {
    ApiFailure::new(400, text, Vec::new())
}

fn proto(text: Option<&str>) -> Result<u8, ApiFailure> {
    match text.unwrap_or("tcp") {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        other => Err(bad(format!("unknown protocol `{other}`: use tcp or udp"))),
    }
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`: the address and the port if given.
fn endpoint(text: &str, what: &str) -> Result<(IpAddr, Option<u16>), ApiFailure> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        bad(format!(
            "{what} `{text}` is not an address (IP, IP:PORT or [IPv6]:PORT)"
        ))
    })
}

/// The 5-tuple of a trace request.
///
/// # Errors
/// A 400 naming the bad field.
pub fn trace_tuple(p: &TraceParams) -> Result<(FlowTuple, bool), ApiFailure> {
    let (client, sport) = endpoint(&p.client, "client")?;
    let (vip, dport) = endpoint(&p.vip, "vip")?;
    let dport = dport.ok_or_else(|| bad(format!("vip `{}` needs a port (VIP:PORT)", p.vip)))?;
    if client.is_ipv4() != vip.is_ipv4() {
        return Err(bad("the client and the VIP must be of one family"));
    }
    let (src, family) = FlowTuple::addr_bytes(client);
    let (dst, _) = FlowTuple::addr_bytes(vip);
    Ok((
        FlowTuple {
            family,
            proto: proto(p.proto.as_deref())?,
            src,
            dst,
            sport: sport.unwrap_or(DEFAULT_TRACE_PORT),
            dport,
        },
        sport.is_none(),
    ))
}

/// The sample a flows request asks; `backend` resolved to a stable id by the caller.
///
/// # Errors
/// A 400 naming the bad field.
pub fn sample(p: &FlowsParams, query: u32, backend: u32) -> Result<Sample, ApiFailure> {
    let mut s = Sample {
        query,
        limit: p.limit.unwrap_or(100).clamp(1, MAX_FLOWS_PER_WORKER),
        backend,
        ..Sample::default()
    };
    if let Some(v) = &p.vip {
        let (ip, port) = endpoint(v, "vip")?;
        let (vip, family) = FlowTuple::addr_bytes(ip);
        s.vip = vip;
        s.family = family;
        s.port = port.unwrap_or(0);
    }
    if p.proto.is_some() {
        s.proto = proto(p.proto.as_deref())?;
    }
    Ok(s)
}

/// One worker's view of a traced flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerTrace {
    pub worker: u16,
    /// The backend a new flow would get on this worker ("-" when dropped).
    pub would_pick: String,
    /// The backend this worker's connection table holds for the flow, if any.
    pub holds: Option<String>,
}

/// `GET /v1/trace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceView {
    pub flow: String,
    pub generation: u64,
    /// `forward`, `drop` or `local` (answered by the appliance itself).
    pub verdict: String,
    /// The data plane's counter for the outcome (the drop reason), if any.
    pub reason: Option<String>,
    pub service: Option<String>,
    /// The client's region, if any.
    pub region: Option<String>,
    pub route: Option<String>,
    pub pool: Option<String>,
    pub scheduler: Option<String>,
    pub backend: Option<String>,
    /// Why, in the order the data plane decided.
    pub why: Vec<String>,
    pub workers: Vec<WorkerTrace>,
    /// Workers that hold the flow in their connection table.
    pub held_by: Vec<u16>,
}

/// One live flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowView {
    pub worker: u8,
    pub proto: String,
    pub client: String,
    pub vip: String,
    pub state: String,
    pub backend: String,
}

/// `GET /v1/flows`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowsView {
    pub flows: Vec<FlowView>,
    /// Live flows the workers looked at.
    pub scanned: u64,
    /// Flows listed: a worker stops looking once it has `limit_per_worker`.
    pub matched: u64,
    pub workers: u32,
    pub limit_per_worker: u16,
}

#[derive(Debug)]
pub enum Reply {
    Trace(oneshot::Sender<Result<TraceView, ApiFailure>>, bool),
    Flows(oneshot::Sender<Result<FlowsView, ApiFailure>>, u16),
}

/// A query waiting for the workers.
#[derive(Debug)]
pub struct Pending {
    pub id: u32,
    pub tuple: Option<FlowTuple>,
    pub workers: u32,
    pub deadline: Instant,
    pub answers: Vec<Message>,
    pub done: BTreeMap<u32, (u64, u64)>,
    pub refused: bool,
    pub reply: Reply,
}

impl Pending {
    /// Takes a message for this query; true once every worker answered (or it was refused).
    pub fn take(&mut self, m: Message) -> bool {
        match m {
            Message::Done {
                worker,
                matched,
                scanned,
                ..
            } => {
                if scanned == u64::MAX {
                    self.refused = true;
                } else {
                    self.done.insert(worker, (matched, scanned));
                }
            }
            other => self.answers.push(other),
        }
        self.refused || self.done.len() >= self.workers as usize
    }
}

/// The id of the query a data-plane answer belongs to.
#[must_use]
pub fn answer_id(m: &Message) -> Option<u32> {
    match m {
        Message::Flow { query, .. } | Message::Done { query, .. } => Some(*query),
        Message::Traced(t) => Some(t.query),
        _ => None,
    }
}

/// Names for the indices and ids of one generation.
pub struct Names<'a> {
    pub g: &'a Generation,
    pub policy: &'a Policy,
}

impl Names<'_> {
    fn backend(&self, id: u32) -> String {
        if id == 0 {
            return "-".into();
        }
        let index = self.g.backend_by_id.get(id as usize).copied().unwrap_or(0) as usize;
        let Some(b) = index.checked_sub(1).and_then(|i| self.g.backends.get(i)) else {
            return format!("backend id {id} (not in generation {})", self.g.generation);
        };
        let address = if b.family == FAMILY_V6 {
            IpAddr::from(b.address)
        } else {
            IpAddr::from([b.address[0], b.address[1], b.address[2], b.address[3]])
        };
        let pool = self.pool(b.pool);
        let name = self
            .policy
            .pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.backends.iter().find(|x| x.address == address))
            .and_then(|x| x.name.clone());
        match name {
            Some(n) => format!("{address} ({n})"),
            None => address.to_string(),
        }
    }

    fn pool(&self, index: u32) -> String {
        self.g
            .pools
            .get(index as usize)
            .map_or_else(|| format!("pool {index}"), |p| name_str(&p.name).to_owned())
    }

    fn region(&self, index: u32) -> String {
        self.g.regions.get(index as usize).map_or_else(
            || format!("region {index}"),
            |r| name_str(&r.name).to_owned(),
        )
    }

    fn client_region(&self, t: &FlowTuple) -> Option<u32> {
        let v = if t.family == 6 {
            lookup_v6(&self.g.geo_lpm_v6, u128::from_be_bytes(t.src))
        } else {
            lookup_v4(
                &self.g.geo_lpm_v4,
                u32::from_be_bytes([t.src[0], t.src[1], t.src[2], t.src[3]]),
            )
        };
        v.checked_sub(1)
    }
}

/// The protocol's name as the API takes it (TCP or UDP: the only ones a flow query carries).
fn proto_name(proto: u8) -> &'static str {
    if proto == 6 {
        "tcp"
    } else {
        "udp"
    }
}

fn describe(t: &FlowTuple) -> String {
    let p = proto_name(t.proto);
    let src = SocketAddr::new(t.addr(&t.src), t.sport);
    let dst = SocketAddr::new(t.addr(&t.dst), t.dport);
    format!("{p} {src} → {dst}")
}

/// The trace answer from the workers' `Traced` messages. `counter_names` is the data plane's
/// counter-name table; `names` the generation the first worker answered from, if the control
/// plane still has it.
#[must_use]
pub fn trace_view(
    tuple: &FlowTuple,
    default_port: bool,
    traced: &[Traced],
    names: Option<&Names<'_>>,
    counter_names: &[String],
) -> TraceView {
    let first = traced.first().copied().unwrap_or_default();
    let counter = |i: u32| counter_names.get(i as usize).cloned();
    let verdict = match first.outcome {
        TRACE_FORWARD => "forward",
        TRACE_DROP => "drop",
        _ => "local",
    };
    let mut view = TraceView {
        flow: describe(tuple),
        generation: first.generation,
        verdict: verdict.into(),
        reason: (first.counter != u32::MAX)
            .then(|| counter(first.counter))
            .flatten(),
        service: None,
        region: None,
        route: None,
        pool: None,
        scheduler: None,
        backend: None,
        why: Vec::new(),
        workers: Vec::new(),
        held_by: Vec::new(),
    };
    if default_port {
        view.why.push(format!(
            "no client port given: traced from port {DEFAULT_TRACE_PORT} (a consistent-hash \
             pool's choice depends on it)"
        ));
    }
    let Some(n) = names else {
        view.why.push(format!(
            "generation {} is no longer the control plane's: names unavailable",
            first.generation
        ));
        return view;
    };
    let region = n.client_region(tuple);
    view.region = region.map(|r| n.region(r));
    view.why.push(match &view.region {
        Some(r) => format!("client {} is in region {r}", tuple.addr(&tuple.src)),
        None => format!("client {} is in no region", tuple.addr(&tuple.src)),
    });
    if let Some(svc) = n.g.services.get(first.service as usize) {
        view.service = Some(name_str(&svc.name).to_owned());
        view.why.push(format!(
            "the ACL allows it; {} is service {}",
            describe_dst(tuple),
            name_str(&svc.name)
        ));
        let route_index = (svc.first_route as usize).saturating_add(first.route as usize);
        if let Some(r) =
            n.g.routes
                .get(route_index)
                .filter(|_| first.route != u32::MAX)
        {
            let from = if r.region == NONE {
                "every client".to_owned()
            } else {
                n.region(r.region)
            };
            let pools: Vec<String> = r.pools[..(r.pool_count as usize).min(r.pools.len())]
                .iter()
                .map(|&p| n.pool(p))
                .collect();
            let mut text = format!(
                "route {} (from {from}): {}",
                first.route + 1,
                pools.join(" → ")
            );
            if r.canary_pool != NONE {
                text.push_str(&format!(
                    ", canary {} {:.1} %",
                    n.pool(r.canary_pool),
                    f64::from(r.canary_per_million) / 10_000.0
                ));
            }
            if r.strict != 0 {
                text.push_str(", residency strict");
            }
            view.route = Some(text.clone());
            view.why.push(text);
        } else if first.outcome == TRACE_DROP {
            view.why.push("no route takes this client's region".into());
        }
    }
    if first.backend != 0 {
        view.pool = Some(n.pool(first.pool));
        let sched =
            n.g.pools
                .get(first.pool as usize)
                .map(|p| Scheduler::name_of(p.scheduler));
        view.scheduler = sched.map(str::to_owned);
        if first.flags & TRACE_CANARY != 0 {
            view.why
                .push("the flow hash falls in the canary share".into());
        }
        if first.flags & TRACE_FALLBACK != 0 {
            view.why
                .push("the route's first pool has no healthy backend: fallback".into());
        }
        view.why.push(format!(
            "pool {} ({}) picks {}",
            n.pool(first.pool),
            sched.unwrap_or("?"),
            n.backend(first.backend)
        ));
        if first.flags & TRACE_SPILL != 0 {
            view.why
                .push("its preferred backend is full: bounded-load spill".into());
        }
        view.backend = Some(n.backend(first.backend));
    }
    if let Some(r) = &view.reason {
        if first.outcome == TRACE_DROP {
            view.why.push(format!("dropped: {r}"));
        }
    }
    for t in traced {
        let holds = (t.flags & TRACE_HELD != 0).then(|| n.backend(t.held));
        if holds.is_some() {
            view.held_by.push(t.worker);
        }
        view.workers.push(WorkerTrace {
            worker: t.worker,
            would_pick: if t.backend == 0 {
                "-".into()
            } else {
                n.backend(t.backend)
            },
            holds,
        });
    }
    if let Some(h) = traced.iter().find(|t| t.flags & TRACE_HELD != 0) {
        let held = n.backend(h.held);
        view.why.push(format!(
            "worker {}'s connection table holds the flow on {held}: its packets go there",
            h.worker
        ));
        view.backend = Some(held);
    }
    view
}

fn describe_dst(t: &FlowTuple) -> String {
    let p = proto_name(t.proto);
    format!("{} port {}/{p}", t.addr(&t.dst), t.dport)
}

fn state_name(s: u8) -> &'static str {
    match s {
        1 => "syn",
        2 => "established",
        3 => "closing",
        4 => "datagram",
        5 => "provisional",
        _ => "?",
    }
}

/// The flows answer.
#[must_use]
pub fn flows_view(p: &Pending, limit: u16, names: Option<&Names<'_>>) -> FlowsView {
    let mut flows: Vec<FlowView> = p
        .answers
        .iter()
        .filter_map(|m| match *m {
            Message::Flow {
                worker,
                state,
                flow,
                backend,
                ..
            } => Some(FlowView {
                worker,
                proto: proto_name(flow.proto).into(),
                client: SocketAddr::new(flow.addr(&flow.src), flow.sport).to_string(),
                vip: SocketAddr::new(flow.addr(&flow.dst), flow.dport).to_string(),
                state: state_name(state).into(),
                backend: names.map_or_else(|| format!("id {backend}"), |n| n.backend(backend)),
            }),
            _ => None,
        })
        .collect();
    flows.sort_by(|a, b| (&a.backend, &a.vip, &a.client).cmp(&(&b.backend, &b.vip, &b.client)));
    FlowsView {
        flows,
        scanned: p.done.values().map(|d| d.1).sum(),
        matched: p.done.values().map(|d| d.0).sum(),
        workers: p.workers,
        limit_per_worker: limit,
    }
}
