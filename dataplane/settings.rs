//! The appliance's own settings: which ports, in which role, and how big its queues and pools are.
//!
//! They come from a YAML file (`--config`, documented in `docs/APPLIANCE.md`), then command-line
//! flags override single values. Everything is validated before the EAL starts touching devices,
//! with errors that name the file, line and column or the flag.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// What a port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// Client-facing: VIP traffic arrives here; in a one-armed deployment encapsulated traffic
    /// to backends leaves here too.
    #[default]
    Uplink,
    /// Backend-facing: encapsulated traffic to backends leaves here (two-armed deployments).
    Backend,
    /// The exception path to the host kernel (a tap or virtio-user port): traffic for the host
    /// itself, such as SSH or BGP, goes here instead of being dropped.
    Kernel,
}

impl fmt::Display for PortRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uplink => "uplink",
            Self::Backend => "backend",
            Self::Kernel => "kernel",
        })
    }
}

/// One port the appliance uses, named by its DPDK device name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSetting {
    /// A vdev name (`net_pcap0`, `net_tap0`) or a PCI address (`0000:3b:00.0`), as the EAL names it.
    pub device: String,
    #[serde(default)]
    pub role: PortRole,
    /// The policy interface bound to this port (its MAC, addresses and gateway). Default: the
    /// role's name (`uplink`, `backend`); the kernel port binds none.
    #[serde(default)]
    pub interface: Option<String>,
}

impl PortSetting {
    /// The policy interface this port carries, if any.
    pub fn interface_name(&self) -> Option<String> {
        match (&self.interface, self.role) {
            (Some(name), _) => Some(name.clone()),
            (None, PortRole::Kernel) => None,
            (None, role) => Some(role.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            rx_descriptors: 1024,
            tx_descriptors: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSettings {
    /// Buffers per NUMA socket in use. `net_pcap` with `infinite_rx=1` preloads the whole capture
    /// into buffers of this pool, so it needs at least one per captured packet on top of the queues.
    pub mbufs: u32,
    /// Per-lcore cache.
    pub cache: u32,
    /// Bytes per buffer including the 128-byte headroom (2176 holds a 2048-byte frame).
    pub data_room: u16,
}

impl Default for MempoolSettings {
    fn default() -> Self {
        Self {
            mbufs: 32_767,
            cache: 256,
            data_room: 2176,
        }
    }
}

/// Each worker's connection tables. Capacities are in flows (ways); keep them about twice the
/// expected live flows per worker, since a full bucket evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowTableSettings {
    pub ipv4_flows: u32,
    pub ipv6_flows: u32,
    /// New connection-table entries per second per worker before inserts are throttled
    /// (flood resistance); packets of throttled flows are still forwarded, statelessly.
    pub insert_rate: u32,
}

impl Default for FlowTableSettings {
    fn default() -> Self {
        Self {
            ipv4_flows: 2 << 20,
            ipv6_flows: 1 << 19,
            insert_rate: 2_000_000,
        }
    }
}

/// All of the appliance's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Ports in use, in order. Empty: every port the EAL probed, all `uplink`, in port-id order.
    pub ports: Vec<PortSetting>,
    pub queues: QueueSettings,
    pub mempool: MempoolSettings,
    /// How many more times a worker retries a TX burst the queue did not take, before it drops
    /// and counts the rest.
    pub tx_retries: u32,
    /// Layer-3 MTU for every port; unset keeps the device default.
    pub mtu: Option<u16>,
    pub flow_table: FlowTableSettings,
    pub neighbour: NeighbourSettings,
    pub talkers: TalkerSettings,
}

/// Top talkers by source prefix (`dataplane/talkers.rs`): how each worker samples what it
/// receives and which prefix lengths it counts sources by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TalkerSettings {
    /// Mean packets per sample (1: every packet).
    pub sample_every: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for TalkerSettings {
    fn default() -> Self {
        let c = crate::talkers::TalkerConfig::default();
        Self {
            sample_every: c.sample_every,
            ipv4_prefix: c.ipv4_prefix,
            ipv6_prefix: c.ipv6_prefix,
        }
    }
}

impl TalkerSettings {
    /// The workers' sampler settings.
    #[must_use]
    pub fn config(&self) -> crate::talkers::TalkerConfig {
        crate::talkers::TalkerConfig {
            sample_every: self.sample_every,
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
        }
    }
}

/// Timers of gateway resolution by ARP / neighbour discovery (see `dataplane/neighbour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeighbourSettings {
    /// How long an answer keeps a gateway's MAC confirmed before it is refreshed (unicast).
    pub reachable_ms: u64,
    /// Interval between requests.
    pub retrans_ms: u64,
    /// Broadcast requests before backing off; unanswered refreshes before the MAC is withdrawn.
    pub probes: u32,
    /// Longest interval between requests for a gateway that does not answer.
    pub max_backoff_ms: u64,
    /// Gratuitous ARP / unsolicited NA for own addresses and VIPs at start (off only where
    /// outputs are compared frame for frame, as the pcap tests do).
    pub announce: bool,
}

impl Default for NeighbourSettings {
    fn default() -> Self {
        let t = crate::neighbour::Timers::default();
        Self {
            reachable_ms: t.reachable_ms,
            retrans_ms: t.retrans_ms,
            probes: t.probes,
            max_backoff_ms: t.max_backoff_ms,
            announce: true,
        }
    }
}

impl NeighbourSettings {
    /// The resolver's timers.
    #[must_use]
    pub fn timers(&self) -> crate::neighbour::Timers {
        crate::neighbour::Timers {
            reachable_ms: self.reachable_ms,
            retrans_ms: self.retrans_ms,
            probes: self.probes,
            max_backoff_ms: self.max_backoff_ms,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            queues: QueueSettings::default(),
            mempool: MempoolSettings::default(),
            tx_retries: 8,
            mtu: None,
            flow_table: FlowTableSettings::default(),
            neighbour: NeighbourSettings::default(),
            talkers: TalkerSettings::default(),
        }
    }
}

/// A settings error, ready to show an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

/// Parser budgets: an appliance settings file is tiny, so anything large is an error or an attack.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 16,
            max_nodes: 10_000,
            max_aliases: 0,
            max_anchors: 0,
        },
    }
}

impl Settings {
    /// Reads and validates a settings file.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates settings text; `label` names the source in errors.
    pub fn parse(text: &str, label: &str) -> Result<Self, SettingsError> {
        let settings: Self = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| SettingsError(format_yaml_error(label, text, &e)))?;
        settings
            .validate()
            .map_err(|e| SettingsError(format!("{label}: {e}")))?;
        Ok(settings)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let q = &self.queues;
        for (name, v) in [
            ("queues.rx_descriptors", q.rx_descriptors),
            ("queues.tx_descriptors", q.tx_descriptors),
        ] {
            if !(64..=16_384).contains(&v) {
                return Err(SettingsError(format!(
                    "{name} is {v}; expected 64 to 16384"
                )));
            }
        }
        let m = &self.mempool;
        if m.mbufs < 1024 {
            return Err(SettingsError(format!(
                "mempool.mbufs is {}; expected at least 1024",
                m.mbufs
            )));
        }
        if m.cache > 512 {
            return Err(SettingsError(format!(
                "mempool.cache is {}; DPDK allows at most 512 per lcore",
                m.cache
            )));
        }
        if m.data_room < 256 + 128 {
            return Err(SettingsError(format!(
                "mempool.data_room is {}; expected at least 384 (128 bytes of headroom + a 256-byte frame)",
                m.data_room
            )));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=9600).contains(&mtu) {
                return Err(SettingsError(format!("mtu is {mtu}; expected 68 to 9600")));
            }
        }
        let n = &self.neighbour;
        for (name, v, lo, hi) in [
            ("neighbour.reachable_ms", n.reachable_ms, 100, 3_600_000),
            ("neighbour.retrans_ms", n.retrans_ms, 10, 60_000),
            (
                "neighbour.max_backoff_ms",
                n.max_backoff_ms,
                n.retrans_ms,
                3_600_000,
            ),
            ("neighbour.probes", u64::from(n.probes), 1, 10),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(SettingsError(format!(
                    "{name} is {v}; expected {lo} to {hi}"
                )));
            }
        }
        let t = &self.talkers;
        for (name, v, hi) in [
            ("talkers.sample_every", u64::from(t.sample_every), 65_536),
            ("talkers.ipv4_prefix", u64::from(t.ipv4_prefix), 32),
            ("talkers.ipv6_prefix", u64::from(t.ipv6_prefix), 128),
        ] {
            let lo = u64::from(name == "talkers.sample_every");
            if !(lo..=hi).contains(&v) {
                return Err(SettingsError(format!(
                    "{name} is {v}; expected {lo} to {hi}"
                )));
            }
        }
        let f = &self.flow_table;
        for (name, v) in [
            ("flow_table.ipv4_flows", f.ipv4_flows),
            ("flow_table.ipv6_flows", f.ipv6_flows),
        ] {
            if !(16..=1 << 27).contains(&v) {
                return Err(SettingsError(format!(
                    "{name} is {v}; expected 16 to 134217728"
                )));
            }
        }
        if f.insert_rate == 0 {
            return Err(SettingsError(
                "flow_table.insert_rate is 0; expected at least 1".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.device.is_empty() {
                return Err(SettingsError(format!("ports[{i}].device is empty")));
            }
            if !seen.insert(p.device.as_str()) {
                return Err(SettingsError(format!(
                    "ports[{i}]: device {} is listed twice",
                    p.device
                )));
            }
        }
        Ok(())
    }
}

/// `FILE:LINE:COL: MESSAGE`, as policy errors read: the position once, then what was
/// expected, with a "did you mean" for a misspelt key or value.
fn format_yaml_error(label: &str, src: &str, e: &serde_saphyr::Error) -> String {
    let e = e.without_snippet();
    let message = describe(e);
    match e.location().filter(|l| l.line() != 0) {
        Some(loc) => {
            if let Some((line, column)) = tab_position(src, &message) {
                return format!(
                    "{label}:{line}:{column}: a tab in the indentation; YAML indents with spaces only"
                );
            }
            format!("{label}:{}:{}: {message}", loc.line(), loc.column())
        }
        None => format!("{label}: {message}"),
    }
}

/// The YAML library reports a tab in indentation at the end of the line before it; point at
/// the tab itself.
fn tab_position(src: &str, message: &str) -> Option<(u64, u64)> {
    if !message.to_ascii_lowercase().contains("tab") {
        return None;
    }
    src.lines().enumerate().find_map(|(i, line)| {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let column = line[..indent].find('\t')?;
        Some((u64::try_from(i + 1).ok()?, u64::try_from(column + 1).ok()?))
    })
}

fn describe(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};
    match e {
        Error::AliasError { error, .. } => describe(error),
        Error::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown field `{field}`{}; expected one of: {}",
            did_you_mean(field, expected),
            expected.join(", ")
        ),
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value `{variant}`{}; expected one of: {}",
            did_you_mean(variant, expected),
            expected.join(", ")
        ),
        Error::Budget { .. } => {
            "settings exceed the parser budget (anchors and aliases are not accepted, nesting \
             at most 16 deep, at most 10000 nodes)"
                .to_owned()
        }
        // Quoted settings text may hold control characters: keep them out of the terminal.
        other => UserMessageFormatter
            .format_message(other)
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect(),
    }
}

/// ` (did you mean `x`?)` when one candidate is within a third of the name's length in edits.
fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn full_file_parses() {
        let s = Settings::parse(
            "ports:\n  - { device: net_tap0, role: uplink }\n  - { device: net_tap1, role: kernel }\n\
             queues: { rx_descriptors: 512, tx_descriptors: 2048 }\nmempool: { mbufs: 8191 }\n\
             tx_retries: 2\nmtu: 9000\n",
            "a.yaml",
        )
        .unwrap();
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[1].role, PortRole::Kernel);
        assert_eq!(s.queues.rx_descriptors, 512);
        assert_eq!(s.mempool.mbufs, 8191);
        assert_eq!(s.mempool.cache, 256);
        assert_eq!(s.mtu, Some(9000));
    }

    #[test]
    fn unknown_field_names_file_line_column() {
        let e = Settings::parse("queues:\n  rx_descriptor: 512\n", "s.yaml").unwrap_err();
        assert!(e.0.starts_with("s.yaml:2:3: "), "{e}");
        assert!(e.0.contains("rx_descriptor"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Settings::parse("queues: { rx_descriptors: 8 }\n", "s.yaml").unwrap_err();
        assert_eq!(
            e.0,
            "s.yaml: queues.rx_descriptors is 8; expected 64 to 16384"
        );
        let e = Settings::parse("ports: [{device: a}, {device: a}]\n", "s.yaml").unwrap_err();
        assert_eq!(e.0, "s.yaml: ports[1]: device a is listed twice");
        let e = Settings::parse("ports: [{device: a, role: spine}]\n", "s.yaml").unwrap_err();
        assert!(e.0.starts_with("s.yaml:1:"), "{e}");
    }

    #[test]
    fn shape_errors_read_like_policy_errors() {
        let e = Settings::parse(
            "ports:\n  - { device: net_pcap0, role: uplnk }\n",
            "badapp.yaml",
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "badapp.yaml:2:32: unknown value `uplnk` (did you mean `uplink`?); expected one of: uplink, backend, kernel"
        );
        let e = Settings::parse("queues:\n  rx_descriptor: 512\n", "s.yaml").unwrap_err();
        assert_eq!(
            e.0,
            "s.yaml:2:3: unknown field `rx_descriptor` (did you mean `rx_descriptors`?); expected one of: rx_descriptors, tx_descriptors"
        );
        let e = Settings::parse("tx_retries: many\n", "s.yaml").unwrap_err();
        assert!(e.0.starts_with("s.yaml:1:13: "), "{e}");
        assert_eq!(
            e.0.matches("line").count(),
            0,
            "the position is said once: {e}"
        );
    }

    #[test]
    fn a_tab_is_reported_on_its_own_line() {
        let e = Settings::parse(
            "queues:\n  rx_descriptors: 512\n\ttx_descriptors: 512\n",
            "s.yaml",
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "s.yaml:3:1: a tab in the indentation; YAML indents with spaces only"
        );
    }

    #[test]
    fn aliases_are_refused() {
        let e = Settings::parse("a: &x 1\nb: *x\n", "s.yaml").unwrap_err();
        assert!(e.0.starts_with("s.yaml"), "{e}");
    }
}
