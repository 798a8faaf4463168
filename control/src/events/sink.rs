//! Sinks: where events go, each on its own thread behind a bounded queue.
//!
//! [`SinkHandle::offer`] never blocks: a full queue drops the event and counts it. The thread
//! formats and writes:
//!
//! - **file**: one event per line, appended (the file is created mode 0640 if missing, and
//!   reopened after a write error);
//! - **syslog over UDP**: one RFC 5424 message per datagram (RFC 5426);
//! - **syslog over TCP**: RFC 5424 messages framed by octet counting (RFC 6587 §3.4.1,
//!   `LEN SP MSG`, so a message may hold any byte, line breaks included). Connects with a 2 s
//!   timeout and writes with a 2 s timeout; a failed connect or write drops the connection and
//!   retries the same message after a backoff that doubles from 100 ms to 10 s. Meanwhile
//!   later events wait in the queue and, once it is full, are dropped and counted: a dead or
//!   slow collector costs the control plane nothing but that sink's queue.
//!
//! RFC 5424 messages come from `fasyslog`'s formatter (PRI, VERSION 1, RFC 3339 timestamp,
//! HOSTNAME, APP-NAME `switchyard-control`, PROCID, MSGID = the event's kind, no structured
//! data, MSG = the payload). `fasyslog`'s own TCP sender frames with a trailing line break
//! (RFC 6587 §3.4.2, non-transparent) and connects without a timeout, so the transport and
//! the octet counting are ours ([`octet_counted`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fasyslog::format::SyslogContext;
use fasyslog::{Facility, SDElement};

use super::config::{Format, SinkConfig, Transport};
use super::format::render;
use super::{Event, Severity, SinkStats};

/// Connect and write timeout of a TCP collector.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait before reconnecting to a TCP collector.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// RFC 6587 §3.4.1 octet-counting frame: the message's length in bytes, a space, the message.
#[must_use]
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message);
    frame
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
}

/// The bus's end of one sink.
#[derive(Debug)]
pub struct SinkHandle {
    name: &'static str,
    target: String,
    queue: SyncSender<Arc<Event>>,
    counters: Arc<Counters>,
    /// Set when the bus goes away: a thread retrying a dead collector gives up.
    closed: Arc<AtomicBool>,
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl SinkHandle {
    /// Starts the sink's thread.
    ///
    /// # Errors
    /// The file cannot be opened, or the UDP socket cannot be made.
    pub fn spawn(config: &SinkConfig) -> Result<Self, String> {
        let (name, target, capacity, writer): (_, _, _, Box<dyn Writer>) = match config {
            SinkConfig::File {
                path,
                format,
                queue,
            } => (
                "file",
                path.display().to_string(),
                *queue,
                Box::new(FileWriter::open(path.clone(), *format)?),
            ),
            SinkConfig::Syslog {
                address,
                transport,
                format,
                facility,
                hostname,
                queue,
            } => {
                let syslog = Syslog::new(*format, *facility, hostname.as_deref());
                match transport {
                    Transport::Udp => (
                        "syslog-udp",
                        address.to_string(),
                        *queue,
                        Box::new(UdpWriter::new(*address, syslog)?),
                    ),
                    Transport::Tcp => (
                        "syslog-tcp",
                        address.to_string(),
                        *queue,
                        Box::new(TcpWriter::new(*address, syslog)),
                    ),
                }
            }
        };
        let (tx, rx) = mpsc::sync_channel(capacity);
        let counters = Arc::new(Counters::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (c, stop) = (Arc::clone(&counters), Arc::clone(&closed));
        std::thread::Builder::new()
            .name(format!("events-{name}"))
            .spawn(move || run(&rx, writer, &c, &stop))
            .map_err(|e| format!("events: cannot start the {name} sink's thread: {e}"))?;
        Ok(Self {
            name,
            target,
            queue: tx,
            counters,
            closed,
        })
    }

    /// Queues the event, or drops and counts it when the queue is full.
    pub fn offer(&self, event: &Arc<Event>) {
        // Counted before the send so the thread never sees `queued` go below zero.
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(Arc::clone(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[must_use]
    pub fn stats(&self) -> SinkStats {
        let c = &self.counters;
        SinkStats {
            sink: self.name.to_owned(),
            target: self.target.clone(),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
        }
    }

    /// Waits until the queue is empty or `deadline` passes.
    pub fn flush(&self, deadline: Instant) {
        while self.counters.queued.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

trait Writer: Send {
    /// Writes one event; `Err` when it is lost. `closed` tells a retrying writer to give up.
    fn write(&mut self, event: &Event, closed: &AtomicBool) -> io::Result<()>;
}

fn run(rx: &Receiver<Arc<Event>>, mut writer: Box<dyn Writer>, c: &Counters, closed: &AtomicBool) {
    while let Ok(event) = rx.recv() {
        match writer.write(&event, closed) {
            Ok(()) => c.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
        };
        c.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

struct FileWriter {
    path: PathBuf,
    format: Format,
    file: Option<File>,
}

impl FileWriter {
    fn open(path: PathBuf, format: Format) -> Result<Self, String> {
        let file = Self::open_file(&path)
            .map_err(|e| format!("events: cannot open {}: {e}", path.display()))?;
        Ok(Self {
            path,
            format,
            file: Some(file),
        })
    }

    fn open_file(path: &PathBuf) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    }
}

impl Writer for FileWriter {
    fn write(&mut self, event: &Event, _closed: &AtomicBool) -> io::Result<()> {
        let mut line = render(event, self.format).into_bytes();
        line.push(b'\n');
        if self.file.is_none() {
            self.file = Some(Self::open_file(&self.path)?);
        }
        let result = self.file.as_mut().map_or(Ok(()), |f| f.write_all(&line));
        if result.is_err() {
            self.file = None;
        }
        result
    }
}

/// RFC 5424 message building shared by the UDP and TCP writers.
struct Syslog {
    format: Format,
    context: SyslogContext,
}

impl Syslog {
    fn new(format: Format, facility: Facility, hostname: Option<&str>) -> Self {
        let mut context = SyslogContext::new();
        context
            .facility(facility)
            .appname("switchyard-control")
            .procid(std::process::id().to_string());
        if let Some(h) = hostname {
            context.hostname(h);
        }
        Self { format, context }
    }

    fn message(&self, event: &Event) -> Vec<u8> {
        let severity = match event.severity {
            Severity::Info => fasyslog::Severity::INFORMATIONAL,
            Severity::Notice => fasyslog::Severity::NOTICE,
            Severity::Warning => fasyslog::Severity::WARNING,
            Severity::Error => fasyslog::Severity::ERROR,
        };
        let payload = render(event, self.format);
        self.context
            .format_rfc5424(
                severity,
                Some(event.kind.as_str()),
                Vec::<SDElement>::new(),
                Some(payload),
            )
            .to_string()
            .into_bytes()
    }
}

struct UdpWriter {
    socket: UdpSocket,
    syslog: Syslog,
}

impl UdpWriter {
    fn new(address: SocketAddr, syslog: Syslog) -> Result<Self, String> {
        let local: SocketAddr = if address.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|e| format!("{e}"))?;
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.connect(address).map(|()| s))
            .map_err(|e| format!("events: syslog to {address} over UDP: {e}"))?;
        Ok(Self { socket, syslog })
    }
}

impl Writer for UdpWriter {
    fn write(&mut self, event: &Event, _closed: &AtomicBool) -> io::Result<()> {
        self.socket.send(&self.syslog.message(event)).map(|_| ())
    }
}

struct TcpWriter {
    address: SocketAddr,
    syslog: Syslog,
    stream: Option<TcpStream>,
    backoff: Duration,
    next_attempt: Instant,
}

impl TcpWriter {
    fn new(address: SocketAddr, syslog: Syslog) -> Self {
        Self {
            address,
            syslog,
            stream: None,
            backoff: BACKOFF_MIN,
            next_attempt: Instant::now(),
        }
    }

    fn try_send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.address, TCP_TIMEOUT)?;
            s.set_write_timeout(Some(TCP_TIMEOUT))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        match self.stream.as_mut() {
            Some(s) => s.write_all(frame),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Writer for TcpWriter {
    fn write(&mut self, event: &Event, closed: &AtomicBool) -> io::Result<()> {
        let frame = octet_counted(&self.syslog.message(event));
        loop {
            let wait = self.next_attempt.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                // Sleep in slices so a closed bus is noticed.
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                if closed.load(Ordering::Relaxed) {
                    return Err(io::ErrorKind::NotConnected.into());
                }
                continue;
            }
            match self.try_send(&frame) {
                Ok(()) => {
                    self.backoff = BACKOFF_MIN;
                    return Ok(());
                }
                Err(e) => {
                    // A partial write leaves the stream mid-frame: start a new connection.
                    self.stream = None;
                    tracing::debug!("events: syslog to {} over TCP: {e}", self.address);
                    self.next_attempt = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    if closed.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(
            octet_counted(b"<14>1 - - - - - - hi"),
            b"20 <14>1 - - - - - - hi"
        );
        let text = "é\nx"; // 4 bytes, a line break inside
        assert_eq!(octet_counted(text.as_bytes()), "4 é\nx".as_bytes());
        assert_eq!(octet_counted(b""), b"0 ");
    }

    #[test]
    fn rfc5424_header_fields() {
        let s = Syslog::new(Format::Json, Facility::LOCAL0, Some("lb-1"));
        let m = String::from_utf8(s.message(&Event::new(Kind::BackendDown, "down"))).unwrap();
        // local0 (16) × 8 + warning (4) = 132.
        assert!(m.starts_with("<132>1 "), "{m}");
        let fields: Vec<&str> = m.splitn(8, ' ').collect();
        assert_eq!(fields[2], "lb-1");
        assert_eq!(fields[3], "switchyard-control");
        assert_eq!(fields[4], std::process::id().to_string());
        assert_eq!(fields[5], "backend_down");
        assert_eq!(fields[6], "-");
        assert!(fields[7].starts_with("{\"time\":"), "{m}");
    }

    #[test]
    fn tcp_frames_arrive_octet_counted_and_a_dead_collector_drops_not_blocks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let sink = SinkHandle::spawn(&SinkConfig::Syslog {
            address,
            transport: Transport::Tcp,
            format: Format::Cef,
            facility: Facility::LOCAL0,
            hostname: None,
            queue: 4,
        })
        .unwrap();
        let e = Arc::new(Event::new(Kind::PolicyApplied, "line one\nline two"));
        sink.offer(&e);
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let frame = loop {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "collector closed early");
            buf.extend_from_slice(&chunk[..n]);
            let Some(sp) = buf.iter().position(|b| *b == b' ') else {
                continue;
            };
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() >= sp + 1 + len {
                assert_eq!(buf.len(), sp + 1 + len, "exactly one frame");
                break String::from_utf8(buf[sp + 1..].to_vec()).unwrap();
            }
        };
        assert!(frame.contains("CEF:0|Switchyard|switchyard|"), "{frame}");
        assert!(frame.contains("line one line two"), "{frame}");
        // The collector dies: nothing blocks the caller, the queue overflows and is counted.
        drop(conn);
        drop(listener);
        let start = Instant::now();
        for _ in 0..100 {
            sink.offer(&e);
        }
        assert!(start.elapsed() < Duration::from_millis(100));
        let s = sink.stats();
        assert!(s.dropped >= 90, "{s:?}");
        // The first writes after the peer closed may still be accepted by the kernel.
        assert!(s.sent <= 3, "{s:?}");
        // Every event is accounted for (the thread counts `sent` just before it lowers
        // `queued`, so a reading in between sees one twice).
        let total = s.sent + s.dropped + s.failed + s.queued;
        assert!((101..=102).contains(&total), "{s:?}");
    }
}
