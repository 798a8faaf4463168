//! The events file (`switchyard-control run --events FILE`): sinks, privacy and detection.
//!
//! YAML, parsed with the policy's parser budgets; unknown fields are refused and every error
//! names `FILE:LINE:COL` (shape) or the field (values). See `docs/CONTROL.md` ("Events").
//!
//! ```yaml
//! sinks:
//!   - file: { path: /var/log/switchyard/events.jsonl }          # format: json (default) | ocsf | cef
//!   - syslog: { address: 192.0.2.50:514, transport: tcp, format: ocsf }
//! privacy:
//!   client_addresses: truncate        # keep (default) | truncate | hash
//!   ipv4_prefix: 24                   # truncate: bits kept (default 24 / 48)
//!   ipv6_prefix: 48
//!   # key_file: /etc/switchyard/events.key   # hash: 32+ bytes of secret
//! detection:
//!   interval: 1s
//!   new_flow_spike: { factor: 4, min_rate: 200/s, warmup: 30s, baseline: 60s }
//!   acl_drops: { rate: 1000/s, for: 10s }   # or { enabled: false }
//!   rate_limit_drops: { rate: 1000/s, for: 10s }
//!   top_talkers: { share: 0.25, min_rate: 5000/s, for: 10s }
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fasyslog::Facility;
use serde::Deserialize;

use crate::policy::values::{parse_duration, parse_rate};

/// Largest events file accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Queue length of a sink unless `queue` says otherwise.
pub const DEFAULT_QUEUE: usize = 4096;
/// Most events a sink may queue.
pub const MAX_QUEUE: usize = 1 << 20;

/// What an exported event looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event as the bus holds it (`kind`, `severity`, `message`, fields).
    Json,
    /// OCSF-shaped JSON (classes 4001, 2004, 6003, base event); see [`super::format`].
    Ocsf,
    /// ArcSight Common Event Format.
    Cef,
}

impl Format {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ocsf => "ocsf",
            Self::Cef => "cef",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One RFC 5424 message per datagram (RFC 5426).
    Udp,
    /// RFC 5424 messages framed by octet counting (RFC 6587 §3.4.1).
    Tcp,
}

/// One sink, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    File {
        path: PathBuf,
        format: Format,
        queue: usize,
    },
    Syslog {
        address: SocketAddr,
        transport: Transport,
        format: Format,
        /// RFC 5424 facility (`local0` unless set).
        facility: Facility,
        /// HOSTNAME field; the system's host name unless set.
        hostname: Option<String>,
        queue: usize,
    },
}

/// What happens to client addresses in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressMode {
    #[default]
    Keep,
    /// Keep the first `ipv4_prefix` / `ipv6_prefix` bits, zero the rest.
    Truncate,
    /// Replace by a keyed hash (BLAKE3 keyed with the key file's secret).
    Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyConfig {
    pub client_addresses: AddressMode,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub key_file: Option<PathBuf>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            client_addresses: AddressMode::Keep,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            key_file: None,
        }
    }
}

/// New flows per second against their own moving baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeConfig {
    /// A rate above `factor ×` the baseline is a spike.
    pub factor: f64,
    /// ...and only when it is also at least this many new flows per second.
    pub min_rate: f64,
    /// No spike is reported before the baseline has learnt this long.
    pub warmup: Duration,
    /// Time constant of the baseline's exponential moving average.
    pub baseline: Duration,
}

/// A drop counter's rate held above a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct SustainedConfig {
    /// Drops per second.
    pub rate: f64,
    /// For this long without a break.
    pub sustain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectionConfig {
    /// How often counters are read and compared.
    pub interval: Duration,
    /// `None`: off.
    pub new_flow_spike: Option<SpikeConfig>,
    pub acl_drops: Option<SustainedConfig>,
    pub rate_limit_drops: Option<SustainedConfig>,
    pub top_talkers: Option<TalkerConfig>,
}

/// `detection.top_talkers`: one source prefix with at least `share` of the packets the workers
/// receive, at `min_rate` or more, for `sustain`.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkerConfig {
    pub share: f64,
    pub min_rate: f64,
    pub sustain: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            new_flow_spike: Some(SpikeConfig {
                factor: 4.0,
                min_rate: 200.0,
                warmup: Duration::from_secs(30),
                baseline: Duration::from_secs(60),
            }),
            acl_drops: Some(SustainedConfig {
                rate: 1000.0,
                sustain: Duration::from_secs(10),
            }),
            rate_limit_drops: Some(SustainedConfig {
                rate: 1000.0,
                sustain: Duration::from_secs(10),
            }),
            top_talkers: Some(TalkerConfig {
                share: 0.25,
                min_rate: 5000.0,
                sustain: Duration::from_secs(10),
            }),
        }
    }
}

/// The whole events configuration, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventsConfig {
    pub sinks: Vec<SinkConfig>,
    pub privacy: PrivacyConfig,
    pub detection: DetectionConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sinks: Vec<RawSink>,
    #[serde(default)]
    privacy: Option<RawPrivacy>,
    #[serde(default)]
    detection: Option<RawDetection>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawSink {
    File(RawFile),
    Syslog(RawSyslog),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: PathBuf,
    format: Option<Format>,
    queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    address: String,
    transport: Transport,
    format: Option<Format>,
    facility: Option<String>,
    hostname: Option<String>,
    queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    client_addresses: Option<AddressMode>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    interval: Option<String>,
    new_flow_spike: Option<RawSpike>,
    acl_drops: Option<RawSustained>,
    rate_limit_drops: Option<RawSustained>,
    top_talkers: Option<RawTalkers>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTalkers {
    enabled: Option<bool>,
    share: Option<f64>,
    min_rate: Option<String>,
    #[serde(rename = "for")]
    sustain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpike {
    /// `false`: this detector is off.
    enabled: Option<bool>,
    factor: Option<f64>,
    min_rate: Option<String>,
    warmup: Option<String>,
    baseline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSustained {
    enabled: Option<bool>,
    rate: Option<String>,
    #[serde(rename = "for")]
    sustain: Option<String>,
}

/// Syslog facility names (RFC 5424 §6.2.1) and their codes.
const FACILITIES: [(&str, Facility); 24] = [
    ("kern", Facility::KERN),
    ("user", Facility::USER),
    ("mail", Facility::MAIL),
    ("daemon", Facility::DAEMON),
    ("auth", Facility::AUTH),
    ("syslog", Facility::SYSLOG),
    ("lpr", Facility::LPR),
    ("news", Facility::NEWS),
    ("uucp", Facility::UUCP),
    ("cron", Facility::CRON),
    ("authpriv", Facility::AUTHPRIV),
    ("ftp", Facility::FTP),
    ("ntp", Facility::NTP),
    ("audit", Facility::AUDIT),
    ("alert", Facility::ALERT),
    ("clock", Facility::CLOCK),
    ("local0", Facility::LOCAL0),
    ("local1", Facility::LOCAL1),
    ("local2", Facility::LOCAL2),
    ("local3", Facility::LOCAL3),
    ("local4", Facility::LOCAL4),
    ("local5", Facility::LOCAL5),
    ("local6", Facility::LOCAL6),
    ("local7", Facility::LOCAL7),
];

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_CONFIG_BYTES),
            max_depth: 16,
            max_nodes: 10_000,
            max_aliases: 100,
            max_anchors: 100,
            max_documents: 1,
        },
        with_snippet: false,
    }
}

/// Reads and validates an events file.
///
/// # Errors
/// Every problem, one per line, each starting with `FILE` (and `:LINE:COL` for shape errors).
pub fn load(path: &Path) -> Result<EventsConfig, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
    parse(&text).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{file}:{e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Parses and validates the text of an events file; errors are `LINE:COL: …` or ` field: …`.
///
/// # Errors
/// Every problem found.
pub fn parse(text: &str) -> Result<EventsConfig, Vec<String>> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![format!(
            " the file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            text.len()
        )]);
    }
    let raw: RawConfig = if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        RawConfig {
            sinks: Vec::new(),
            privacy: None,
            detection: None,
        }
    } else {
        serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
            let e = e.without_snippet();
            let at = e
                .location()
                .filter(|l| l.line() != 0)
                .map_or_else(String::new, |l| format!("{}:{}:", l.line(), l.column()));
            vec![format!(
                "{at} {}",
                e.to_string().lines().next().unwrap_or("")
            )]
        })?
    };
    let mut errors = Vec::new();
    let sinks = raw
        .sinks
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| {
            sink(s)
                .map_err(|e| errors.push(format!(" sinks[{i}]: {e}")))
                .ok()
        })
        .collect();
    let privacy = raw
        .privacy
        .map(|p| privacy(p).map_err(|e| errors.push(format!(" privacy: {e}"))))
        .transpose()
        .ok()
        .flatten()
        .unwrap_or_default();
    let detection = raw
        .detection
        .map(|d| detection(d, &mut errors))
        .unwrap_or_default();
    if errors.is_empty() {
        Ok(EventsConfig {
            sinks,
            privacy,
            detection,
        })
    } else {
        Err(errors)
    }
}

fn queue(q: Option<usize>) -> Result<usize, String> {
    match q.unwrap_or(DEFAULT_QUEUE) {
        0 => Err("queue: must be at least 1".into()),
        n if n > MAX_QUEUE => Err(format!("queue: {n} is above the limit of {MAX_QUEUE}")),
        n => Ok(n),
    }
}

fn sink(raw: RawSink) -> Result<SinkConfig, String> {
    match raw {
        RawSink::File(f) => {
            if f.path.as_os_str().is_empty() {
                return Err("file.path: empty".into());
            }
            Ok(SinkConfig::File {
                path: f.path,
                format: f.format.unwrap_or(Format::Json),
                queue: queue(f.queue)?,
            })
        }
        RawSink::Syslog(s) => {
            let address = s
                .address
                .to_socket_addrs()
                .map_err(|e| format!("syslog.address `{}`: {e} (expected HOST:PORT)", s.address))?
                .next()
                .ok_or_else(|| format!("syslog.address `{}` resolves to nothing", s.address))?;
            let facility = match s.facility.as_deref() {
                None => Facility::LOCAL0,
                Some(name) => FACILITIES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| {
                        format!("syslog.facility `{name}`: expected one of kern, user, daemon, auth, local0 … local7")
                    })?,
            };
            if let Some(h) = &s.hostname {
                // RFC 5424 §6.2.4: 1*255 PRINTUSASCII.
                if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| (33..=126).contains(&b)) {
                    return Err(format!(
                        "syslog.hostname `{h}`: 1 to 255 printable ASCII characters without spaces"
                    ));
                }
            }
            Ok(SinkConfig::Syslog {
                address,
                transport: s.transport,
                format: s.format.unwrap_or(Format::Ocsf),
                facility,
                hostname: s.hostname,
                queue: queue(s.queue)?,
            })
        }
    }
}

fn privacy(raw: RawPrivacy) -> Result<PrivacyConfig, String> {
    let mode = raw.client_addresses.unwrap_or_default();
    let ipv4_prefix = raw.ipv4_prefix.unwrap_or(24);
    let ipv6_prefix = raw.ipv6_prefix.unwrap_or(48);
    if ipv4_prefix > 32 {
        return Err(format!("ipv4_prefix: {ipv4_prefix} is above 32"));
    }
    if ipv6_prefix > 128 {
        return Err(format!("ipv6_prefix: {ipv6_prefix} is above 128"));
    }
    match (mode, &raw.key_file) {
        (AddressMode::Hash, None) => {
            return Err(
                "client_addresses: hash needs key_file (a file of 32 or more secret bytes)".into(),
            )
        }
        (AddressMode::Keep | AddressMode::Truncate, Some(_)) => {
            return Err("key_file: only used with client_addresses: hash".into())
        }
        _ => {}
    }
    if mode != AddressMode::Truncate && (raw.ipv4_prefix.is_some() || raw.ipv6_prefix.is_some()) {
        return Err("ipv4_prefix / ipv6_prefix: only used with client_addresses: truncate".into());
    }
    Ok(PrivacyConfig {
        client_addresses: mode,
        ipv4_prefix,
        ipv6_prefix,
        key_file: raw.key_file,
    })
}

fn off<T>(raw: Option<T>, enabled: impl Fn(&T) -> Option<bool>) -> Option<Option<T>> {
    match raw {
        None => None,
        Some(t) if enabled(&t) == Some(false) => Some(None),
        Some(t) => Some(Some(t)),
    }
}

fn detection(raw: RawDetection, errors: &mut Vec<String>) -> DetectionConfig {
    let defaults = DetectionConfig::default();
    let mut field = |name: &str, r: Result<Duration, String>| {
        r.map_err(|e| errors.push(format!(" detection.{name}: {e}")))
            .ok()
    };
    let interval = raw
        .interval
        .map_or(Some(defaults.interval), |t| {
            field("interval", parse_duration(&t))
        })
        .unwrap_or(defaults.interval);
    let mut out = DetectionConfig {
        interval,
        ..defaults.clone()
    };
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(60) {
        errors.push(" detection.interval: expected 100ms to 60s".into());
    }
    match off(raw.new_flow_spike, |s| s.enabled) {
        None => {}
        Some(None) => out.new_flow_spike = None,
        Some(Some(s)) => {
            let d = defaults
                .new_flow_spike
                .clone()
                .unwrap_or_else(|| unreachable!());
            let mut err = |e: String| errors.push(format!(" detection.new_flow_spike.{e}"));
            let factor = s.factor.unwrap_or(d.factor);
            if !(factor.is_finite() && factor > 1.0) {
                err(format!("factor: {factor}: expected a number above 1"));
            }
            let min_rate = match s.min_rate.as_deref().map(parse_rate) {
                None => d.min_rate,
                Some(Ok(r)) => f64::from(r),
                Some(Err(e)) => {
                    err(format!("min_rate: {e}"));
                    d.min_rate
                }
            };
            let mut dur = |name: &str, v: Option<String>, default: Duration| match v
                .as_deref()
                .map(parse_duration)
            {
                None => default,
                Some(Ok(x)) if !x.is_zero() => x,
                Some(Ok(_)) => {
                    err(format!("{name}: must be more than 0"));
                    default
                }
                Some(Err(e)) => {
                    err(format!("{name}: {e}"));
                    default
                }
            };
            let warmup = dur("warmup", s.warmup, d.warmup);
            let baseline = dur("baseline", s.baseline, d.baseline);
            out.new_flow_spike = Some(SpikeConfig {
                factor,
                min_rate,
                warmup,
                baseline,
            });
        }
    }
    for (name, raw, slot) in [
        ("acl_drops", raw.acl_drops, &mut out.acl_drops),
        (
            "rate_limit_drops",
            raw.rate_limit_drops,
            &mut out.rate_limit_drops,
        ),
    ] {
        match off(raw, |s| s.enabled) {
            None => {}
            Some(None) => *slot = None,
            Some(Some(s)) => {
                let (Some(rate), Some(sustain)) = (s.rate, s.sustain) else {
                    errors.push(format!(
                        " detection.{name}: needs `rate` and `for` (or `enabled: false`)"
                    ));
                    continue;
                };
                let rate = parse_rate(&rate)
                    .map_err(|e| errors.push(format!(" detection.{name}.rate: {e}")))
                    .ok();
                let sustain = parse_duration(&sustain)
                    .map_err(|e| errors.push(format!(" detection.{name}.for: {e}")))
                    .ok();
                if let (Some(rate), Some(sustain)) = (rate, sustain) {
                    *slot = Some(SustainedConfig {
                        rate: f64::from(rate),
                        sustain,
                    });
                }
            }
        }
    }
    match off(raw.top_talkers, |t| t.enabled) {
        None => {}
        Some(None) => out.top_talkers = None,
        Some(Some(t)) => {
            let d = defaults.top_talkers.unwrap_or_else(|| unreachable!());
            let share = t.share.unwrap_or(d.share);
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                errors.push(format!(
                    " detection.top_talkers.share: {share}: expected a fraction above 0, at most 1"
                ));
            }
            let min_rate = match t.min_rate.as_deref().map(parse_rate) {
                None => d.min_rate,
                Some(Ok(r)) => f64::from(r),
                Some(Err(e)) => {
                    errors.push(format!(" detection.top_talkers.min_rate: {e}"));
                    d.min_rate
                }
            };
            let sustain = match t.sustain.as_deref().map(parse_duration) {
                None => d.sustain,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    errors.push(format!(" detection.top_talkers.for: {e}"));
                    d.sustain
                }
            };
            out.top_talkers = Some(TalkerConfig {
                share,
                min_rate,
                sustain,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = parse(
            "sinks:\n  - file: { path: /tmp/x.jsonl }\n  - syslog: { address: 127.0.0.1:5514, transport: tcp, format: cef, facility: local3 }\nprivacy:\n  client_addresses: truncate\n  ipv4_prefix: 16\ndetection:\n  interval: 500ms\n  new_flow_spike: { factor: 3, min_rate: 50/s, warmup: 2s, baseline: 10s }\n  acl_drops: { enabled: false }\n  rate_limit_drops: { rate: 10/s, for: 3s }\n  top_talkers: { share: 0.5, min_rate: 100/s, for: 2s }\n",
        )
        .unwrap();
        let t = c.detection.top_talkers.clone().unwrap();
        assert_eq!(
            (t.share, t.min_rate, t.sustain),
            (0.5, 100.0, Duration::from_secs(2))
        );
        for bad in [
            "share: 0",
            "share: 1.5",
            "share: .nan",
            "min_rate: fast",
            "for: soon",
        ] {
            let e = parse(&format!("detection:\n  top_talkers: {{ {bad} }}\n")).unwrap_err();
            assert!(e[0].contains("detection.top_talkers."), "{bad}: {e:?}");
        }
        let off = parse("detection:\n  top_talkers: { enabled: false }\n").unwrap();
        assert!(off.detection.top_talkers.is_none());
        assert_eq!(c.sinks.len(), 2);
        assert!(matches!(
            c.sinks[1],
            SinkConfig::Syslog {
                transport: Transport::Tcp,
                format: Format::Cef,
                facility: Facility::LOCAL3,
                ..
            }
        ));
        assert_eq!(c.privacy.ipv4_prefix, 16);
        assert_eq!(c.privacy.ipv6_prefix, 48);
        assert_eq!(c.detection.interval, Duration::from_millis(500));
        assert!(c.detection.acl_drops.is_none());
        let r = c.detection.rate_limit_drops.unwrap();
        assert_eq!((r.rate, r.sustain), (10.0, Duration::from_secs(3)));
        let s = c.detection.new_flow_spike.unwrap();
        assert_eq!((s.factor, s.min_rate), (3.0, 50.0));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_where() {
        let e = parse("sinks:\n  - file: { path: /tmp/x, colour: red }\n").unwrap_err();
        assert!(e[0].starts_with("2:"), "{e:?}");
        assert!(e[0].contains("colour"), "{e:?}");
        let e = parse("privacy: { client_addresses: hash }\n").unwrap_err();
        assert!(e[0].contains("key_file"), "{e:?}");
        let e = parse(
            "sinks:\n  - syslog: { address: nowhere, transport: udp }\ndetection: { interval: 5ms, acl_drops: { rate: fast, for: 1s } }\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("sinks[0]: syslog.address"), "{e:?}");
        let e =
            parse("sinks:\n  - syslog: { address: 127.0.0.1:1, transport: sctp }\n").unwrap_err();
        assert!(e[0].starts_with("2:"), "{e:?}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("# nothing\n").unwrap(), EventsConfig::default());
    }
}
