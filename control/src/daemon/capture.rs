//! Live packet capture (`switchyard-control capture`, `POST /v1/capture`) and the events of
//! the data plane's sampled drops.
//!
//! The daemon validates a capture request, creates the capture file in the shm directory
//! ([`switchyard_table::shm::capture`]: one ring per worker, the filter and bounds in its
//! header, a deadline) and sends `Capture` to the data plane. The CLI maps that file, drains
//! the rings into pcapng ([`super::pcapng`]) until the packet count, byte budget or time is
//! reached (or Ctrl-C), sets `stop`, waits for the data plane to let go and removes the file.
//! A file left by a killed CLI ends itself at its deadline on the data-plane side.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_table::shm::capture::{
    capture_id_of, capture_path_in, CaptureFile, CaptureFilter, Watch, ANY_COUNTER, MAX_SNAPLEN,
};
use switchyard_table::shm::{self, FlowTuple, Message};

use super::controller::ApiFailure;
use crate::events::{Event, Kind};
use crate::publish::Publisher;

/// Longest capture.
pub const MAX_SECONDS: u64 = 3600;
/// Most packets per worker one capture copies.
pub const MAX_COUNT: u64 = 1_000_000;
/// Most packets per second per worker.
pub const MAX_RATE: u32 = 100_000;

/// `POST /v1/capture` query parameters (and the CLI's options).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CaptureParams {
    /// Destination address (a VIP, or any address the data plane receives).
    pub vip: Option<String>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    pub proto: Option<String>,
    /// Capture dropped packets instead of received ones: a drop counter name (`drop_acl`, or
    /// `acl`) or `any`.
    pub drop: Option<String>,
    /// Packets at most (default 1000).
    pub count: Option<u64>,
    /// Seconds at most (default 10).
    pub seconds: Option<u64>,
    /// Bytes kept per packet (default and most 2048).
    pub snaplen: Option<u16>,
    /// Packets per second per worker (default 10000).
    pub rate: Option<u32>,
}

/// What the daemon started.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CaptureStarted {
    pub id: u32,
    pub path: PathBuf,
    pub workers: u32,
    pub snaplen: u16,
    pub count: u64,
    pub seconds: u64,
    /// The data plane's counter names, by index: names the drop reason of each packet.
    pub counters: Vec<String>,
}

fn bad(text: impl Into<String>) -> ApiFailure {
    ApiFailure::new(400, text, Vec::new())
}

fn proto_number(text: &str) -> Option<u8> {
    match text {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        n => n.parse().ok(),
    }
}

/// The filter a request asks for; `counters` are the data plane's counter names.
///
/// # Errors
/// A bad address, protocol, drop reason or bound (status 400).
pub fn filter(p: &CaptureParams, counters: &[String]) -> Result<CaptureFilter, ApiFailure> {
    let (vip, family) = match p.vip.as_deref().filter(|v| !v.is_empty()) {
        None => ([0u8; 16], 0),
        Some(v) => {
            let ip: IpAddr = v
                .parse()
                .map_err(|_| bad(format!("vip {v:?}: expected an IPv4 or IPv6 address")))?;
            FlowTuple::addr_bytes(ip)
        }
    };
    let proto = match p.proto.as_deref().filter(|v| !v.is_empty()) {
        None => 0,
        Some(t) => proto_number(t).ok_or_else(|| {
            bad(format!(
                "proto {t:?}: expected tcp, udp, icmp, icmpv6 or a number"
            ))
        })?,
    };
    let watch = match p.drop.as_deref().filter(|v| !v.is_empty()) {
        None => Watch::Received,
        Some("any") => Watch::Dropped {
            counter: ANY_COUNTER,
        },
        Some(reason) => {
            let name = if reason.starts_with("drop_") {
                reason.to_owned()
            } else {
                format!("drop_{reason}")
            };
            let index = counters.iter().position(|c| *c == name).ok_or_else(|| {
                let known: Vec<&str> = counters
                    .iter()
                    .filter(|c| c.starts_with("drop_"))
                    .map(String::as_str)
                    .collect();
                ApiFailure::new(
                    400,
                    format!("drop reason {reason:?}: not a drop counter of this data plane"),
                    known.into_iter().map(str::to_owned).collect(),
                )
            })?;
            Watch::Dropped {
                counter: u32::try_from(index).unwrap_or(ANY_COUNTER),
            }
        }
    };
    let snaplen = p.snaplen.unwrap_or(MAX_SNAPLEN);
    if snaplen == 0 || snaplen > MAX_SNAPLEN {
        return Err(bad(format!("snaplen {snaplen}: expected 1-{MAX_SNAPLEN}")));
    }
    let count = p.count.unwrap_or(1000);
    if count == 0 || count > MAX_COUNT {
        return Err(bad(format!("count {count}: expected 1-{MAX_COUNT}")));
    }
    let rate = p.rate.unwrap_or(10_000);
    if rate == 0 || rate > MAX_RATE {
        return Err(bad(format!("rate {rate}: expected 1-{MAX_RATE} packets/s")));
    }
    let seconds = p.seconds.unwrap_or(10);
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err(bad(format!("seconds {seconds}: expected 1-{MAX_SECONDS}")));
    }
    Ok(CaptureFilter {
        family,
        vip,
        port: p.port.unwrap_or(0),
        proto,
        watch,
        snaplen,
        rate,
        budget: count,
    })
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// How long after a capture's deadline the daemon removes its file if the CLI has not: by then
/// the data plane has stopped copying (it stops at the deadline) and the CLI has stopped
/// draining (it stops there too), so only a killed CLI leaves the file behind. Removing it
/// early would do no harm either: both processes keep their mappings of an unlinked file.
pub const LEFTOVER_GRACE_MS: u64 = 3_000;

/// The capture files this daemon created, until each is gone (see [`LEFTOVER_GRACE_MS`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    files: Vec<(PathBuf, u64)>,
}

impl Leftovers {
    /// The capture files of `instance` already in `dir` (a daemon that restarts takes over the
    /// ones its predecessor created): each is removed after its header's deadline, or after the
    /// grace from now if its header does not read.
    #[must_use]
    pub fn from_dir(dir: &Path, instance: &str) -> Self {
        let mut out = Self::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_str()
                .and_then(|n| capture_id_of(n, instance))
                .is_none()
            {
                continue;
            }
            let path = entry.path();
            let deadline =
                CaptureFile::open(&path).map_or_else(|_| shm::monotonic_ms(), |f| f.deadline_ms());
            out.started(path, deadline);
        }
        out
    }

    /// A capture was started: `path` ends at `deadline_ms` ([`shm::monotonic_ms`]).
    pub fn started(&mut self, path: PathBuf, deadline_ms: u64) {
        self.files.push((path, deadline_ms));
    }

    /// Removes the files whose capture ended more than the grace ago; forgets those already
    /// gone. Returns the paths it removed.
    pub fn sweep(&mut self, now_ms: u64) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        self.files.retain(|(path, deadline)| {
            if now_ms < deadline.saturating_add(LEFTOVER_GRACE_MS) {
                return path.exists();
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    removed.push(path.clone());
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a finished capture's file");
                    false
                }
            }
        });
        removed
    }
}

/// Starts a capture (the controller thread): creates its file and tells the data plane.
///
/// # Errors
/// No data plane (503), a bad request (400), the file or the ring refused (500, 503).
pub fn start(
    publisher: &mut Publisher,
    leftovers: &mut Leftovers,
    p: &CaptureParams,
) -> Result<CaptureStarted, ApiFailure> {
    if !publisher.dataplane_attached() {
        return Err(ApiFailure::new(
            503,
            "no data plane is running: a capture copies what its workers see",
            Vec::new(),
        ));
    }
    let counters = publisher.segment().counter_names();
    let f = filter(p, &counters)?;
    let workers = u32::try_from(publisher.segment().dataplane_status().workers)
        .unwrap_or(0)
        .max(1);
    let seconds = p.seconds.unwrap_or(10);
    let deadline = shm::monotonic_ms() + seconds * 1000;
    let base = NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ^ std::process::id().rotate_left(16)
        ^ u32::try_from(shm::monotonic_ms() & 0xffff).unwrap_or(0);
    let mut last = None;
    for attempt in 0..8u32 {
        let id = base.wrapping_add(attempt).max(1);
        let path = capture_path_in(publisher.shm_dir(), publisher.instance(), id);
        match CaptureFile::create(&path, workers, &f, deadline) {
            Ok(file) => {
                if let Err(e) = publisher.send_query(&Message::Capture { capture: id }) {
                    let _ = std::fs::remove_file(file.path());
                    return Err(ApiFailure::new(
                        503,
                        format!("the control→data ring refused the capture ({e:?})"),
                        Vec::new(),
                    ));
                }
                tracing::info!(capture = id, path = %path.display(), "live capture requested");
                leftovers.started(path.clone(), deadline);
                return Ok(CaptureStarted {
                    id,
                    path,
                    workers,
                    snaplen: f.snaplen,
                    count: f.budget,
                    seconds,
                    counters,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ApiFailure::new(
        500,
        format!(
            "cannot create a capture file: {}",
            last.map_or_else(String::new, |e| e.to_string())
        ),
        Vec::new(),
    ))
}

/// The event of a sampled drop (`Dropped` from the data plane), if its reason is one the
/// events name: ACL, per-source limit, and no route or no healthy backend (what a
/// strict-residency route that keeps a client in its region yields).
#[must_use]
pub fn drop_event(m: &Message, counters: &[String]) -> Option<Event> {
    let Message::Dropped {
        counter,
        worker,
        flow,
    } = *m
    else {
        return None;
    };
    let reason = counters.get(usize::try_from(counter).ok()?)?.clone();
    let kind = match reason.as_str() {
        "drop_acl" => Kind::AclDrop,
        "drop_rate_limited" => Kind::RateLimitDrop,
        "drop_no_route" | "drop_no_healthy_backend" => Kind::ResidencyDrop,
        _ => return None,
    };
    let src = flow.addr(&flow.src);
    let dst = flow.addr(&flow.dst);
    let text = format!(
        "{reason}: {src}:{} → {dst}:{} proto {} (sampled, worker {worker})",
        flow.sport, flow.dport, flow.proto
    );
    let mut e = Event::new(kind, text)
        .reason(reason)
        .worker(u32::from(worker));
    e = e.flow(crate::events::Flow {
        src,
        src_port: flow.sport,
        dst,
        dst_port: flow.dport,
        protocol: flow.proto,
    });
    Some(e)
}

// ---- the CLI -------------------------------------------------------------------------------

/// `switchyard-control capture`.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub api: String,
    pub token_file: PathBuf,
    pub params: CaptureParams,
    /// Stop after this many bytes written (0: no bound).
    pub max_bytes: u64,
    /// pcapng output; `-` for standard output.
    pub write: PathBuf,
}

/// What a drained capture held.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drained {
    pub packets: u64,
    pub bytes: u64,
    pub lost_full: u64,
    pub lost_rate: u64,
    pub bad: u64,
}

/// Drains `file`'s rings into `out` until `count` packets, `max_bytes` bytes, `until`, or
/// `stop`; then stops the data plane's side and waits (up to a second) for it to let go.
///
/// # Errors
/// Writing the output failed.
pub fn drain(
    file: &Arc<CaptureFile>,
    out: &mut super::pcapng::Writer<impl Write>,
    counters: &[String],
    count: u64,
    max_bytes: u64,
    until: Instant,
    stop: &AtomicBool,
) -> std::io::Result<Drained> {
    let mut rings: Vec<_> = (0..file.workers())
        .filter_map(|w| file.consumer(w))
        .collect();
    let mut d = Drained::default();
    let mut detached_at: Option<Instant> = None;
    'outer: loop {
        let mut got = false;
        for r in &mut rings {
            while let Some(rec) = r.pop() {
                got = true;
                let comment = (rec.meta.counter != ANY_COUNTER).then(|| {
                    counters
                        .get(rec.meta.counter as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("counter {}", rec.meta.counter))
                });
                let n = out.packet(
                    rec.meta.time_ns,
                    rec.meta.wire,
                    &rec.data,
                    comment.as_deref(),
                )?;
                d.packets += 1;
                d.bytes += n;
                if d.packets >= count || (max_bytes > 0 && d.bytes >= max_bytes) {
                    break 'outer;
                }
            }
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            break;
        }
        if file.detached() {
            // The data plane ended it (deadline, budget): one more pass empties the rings.
            match detached_at {
                Some(_) if !got => break,
                None => detached_at = Some(Instant::now()),
                _ => {}
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    file.stop();
    let waited = Instant::now();
    while file.attached() != 0 && !file.detached() && waited.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(2));
    }
    out.flush()?;
    for (w, r) in rings.iter().enumerate() {
        let (full, rate, _) = file.ring_counts(u32::try_from(w).unwrap_or(u32::MAX));
        d.lost_full += full;
        d.lost_rate += rate;
        d.bad += r.bad;
    }
    Ok(d)
}

/// Removes the capture file when the CLI is done with it, however it ends.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `switchyard-control capture`.
#[must_use]
pub fn run(o: &CaptureOptions) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        let _ = writeln!(std::io::stderr(), "capture: {e}");
        ExitCode::FAILURE
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            return fail(&e);
        }
    }
    let client = super::client::ApiClient::new(&o.api, Duration::from_secs(10))
        .with_token_file(&o.token_file);
    let started = match client.capture(&o.params) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let _remove = Remove(started.path.clone());
    let file = match CaptureFile::open(&started.path) {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    let until = Instant::now() + Duration::from_secs(started.seconds);
    let result = if o.write == Path::new("-") {
        let mut w = match super::pcapng::Writer::new(std::io::stdout().lock(), started.snaplen) {
            Ok(w) => w,
            Err(e) => return fail(&e),
        };
        drain(
            &file,
            &mut w,
            &started.counters,
            started.count,
            o.max_bytes,
            until,
            &stop,
        )
    } else {
        let out = match std::fs::File::create(&o.write) {
            Ok(f) => std::io::BufWriter::new(f),
            Err(e) => return fail(&format!("{}: {e}", o.write.display())),
        };
        let mut w = match super::pcapng::Writer::new(out, started.snaplen) {
            Ok(w) => w,
            Err(e) => return fail(&e),
        };
        drain(
            &file,
            &mut w,
            &started.counters,
            started.count,
            o.max_bytes,
            until,
            &stop,
        )
    };
    match result {
        Ok(d) => {
            let attached = file.attached() != 0;
            let _ = writeln!(
                std::io::stderr(),
                "{} packets captured ({} bytes written); lost: {} ring full, {} over the rate; \
                 {} bad ring slots{}",
                d.packets,
                d.bytes,
                d.lost_full,
                d.lost_rate,
                d.bad,
                if attached {
                    ""
                } else {
                    " (the data plane never took the capture: see its log)"
                }
            );
            if attached {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_capture_files_go_after_the_grace_and_gone_ones_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("sy-leftovers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let mut l = Leftovers::default();
        l.started(a.clone(), 1_000);
        l.started(b.clone(), 1_000);
        assert!(l.sweep(1_000 + LEFTOVER_GRACE_MS - 1).is_empty());
        assert!(a.exists() && b.exists());
        // The CLI removed b itself: forgotten, not reported.
        std::fs::remove_file(&b).unwrap();
        assert!(l.sweep(1_500).is_empty());
        assert_eq!(l.files.len(), 1);
        assert_eq!(l.sweep(1_000 + LEFTOVER_GRACE_MS), vec![a.clone()]);
        assert!(!a.exists());
        assert!(l.files.is_empty());
        // A restarted daemon takes over its instance's capture files (a header that does not
        // read: from now), and no other file.
        let ours = dir.join("switchyard-i1.capture-77");
        std::fs::write(&ours, b"not a capture").unwrap();
        std::fs::write(dir.join("switchyard-i1.capture-x"), b"").unwrap();
        std::fs::write(dir.join("switchyard-i2.capture-5"), b"").unwrap();
        let l = Leftovers::from_dir(&dir, "i1");
        assert_eq!(l.files.len(), 1);
        assert_eq!(l.files[0].0, ours);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn names() -> Vec<String> {
        [
            "rx",
            "drop_acl",
            "drop_rate_limited",
            "drop_no_route",
            "drop_truncated",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn dropped(counter: u32) -> Message {
        let (src, family) = FlowTuple::addr_bytes("10.1.99.7".parse().unwrap());
        let (dst, _) = FlowTuple::addr_bytes("203.0.113.10".parse().unwrap());
        Message::Dropped {
            counter,
            worker: 2,
            flow: FlowTuple {
                family,
                proto: 6,
                src,
                dst,
                sport: 41000,
                dport: 443,
            },
        }
    }

    #[test]
    fn sampled_drops_become_events_of_their_kind_with_the_five_tuple() {
        let e = drop_event(&dropped(1), &names()).unwrap();
        assert_eq!(e.kind, Kind::AclDrop);
        assert_eq!(e.reason.as_deref(), Some("drop_acl"));
        assert_eq!(e.worker, Some(2));
        let f = e.flow.unwrap();
        assert_eq!(
            (f.src.as_str(), f.src_port, f.dst_port),
            ("10.1.99.7", 41000, 443)
        );
        assert_eq!(
            drop_event(&dropped(2), &names()).unwrap().kind,
            Kind::RateLimitDrop
        );
        assert_eq!(
            drop_event(&dropped(3), &names()).unwrap().kind,
            Kind::ResidencyDrop
        );
        // Not a sampled reason, or an index the data plane does not have: no event.
        assert!(drop_event(&dropped(4), &names()).is_none());
        assert!(drop_event(&dropped(99), &names()).is_none());
    }

    #[test]
    fn a_request_becomes_a_filter_or_a_clear_refusal() {
        let p = CaptureParams {
            vip: Some("203.0.113.10".into()),
            port: Some(443),
            proto: Some("tcp".into()),
            drop: Some("acl".into()),
            ..CaptureParams::default()
        };
        let f = filter(&p, &names()).unwrap();
        assert_eq!((f.family, f.port, f.proto), (4, 443, 6));
        assert_eq!(f.watch, Watch::Dropped { counter: 1 });
        assert_eq!((f.snaplen, f.budget), (MAX_SNAPLEN, 1000));
        for bad in [
            CaptureParams {
                vip: Some("nope".into()),
                ..CaptureParams::default()
            },
            CaptureParams {
                drop: Some("bogus".into()),
                ..CaptureParams::default()
            },
            CaptureParams {
                snaplen: Some(MAX_SNAPLEN + 1),
                ..CaptureParams::default()
            },
            CaptureParams {
                count: Some(0),
                ..CaptureParams::default()
            },
            CaptureParams {
                seconds: Some(MAX_SECONDS + 1),
                ..CaptureParams::default()
            },
        ] {
            let e = filter(&bad, &names()).expect_err("refused");
            assert_eq!(e.status, 400);
        }
    }
}
