//! Client addresses in events: kept, truncated to a prefix, or replaced by a keyed hash.
//!
//! Applied by [`super::Events::emit`] to an event's `client` and its flow's source, before any
//! sink sees it, so no export (file, syslog) carries the original address when the
//! configuration says so. Server-side addresses (VIPs, backends) are never changed.
//!
//! - `truncate`: the first `ipv4_prefix` / `ipv6_prefix` bits are kept and the rest zeroed
//!   (`198.51.100.77` → `198.51.100.0` at /24). The SIEM can still group by network.
//! - `hash`: `h:` and the first 16 bytes (32 hex digits) of BLAKE3 in keyed mode over the
//!   address's bytes, the key derived from the key file's content (`blake3::derive_key`, so any
//!   file of at least 32 secret bytes works). The same client gives the same token for as long
//!   as the key stays, so events still correlate; without the key the token cannot be turned
//!   back into an address (IPv4 is small enough to enumerate, hence a secret key, not a plain
//!   hash).

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::config::{AddressMode, PrivacyConfig};
use super::Event;

/// Shortest key file accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub enum Anonymiser {
    Keep,
    Truncate { ipv4_prefix: u8, ipv6_prefix: u8 },
    Hash { key: [u8; 32] },
}

impl Anonymiser {
    /// # Errors
    /// The key file cannot be read or is shorter than [`MIN_KEY_BYTES`].
    pub fn from_config(config: &PrivacyConfig) -> Result<Self, String> {
        Ok(match config.client_addresses {
            AddressMode::Keep => Self::Keep,
            AddressMode::Truncate => Self::Truncate {
                ipv4_prefix: config.ipv4_prefix,
                ipv6_prefix: config.ipv6_prefix,
            },
            AddressMode::Hash => {
                let path = config
                    .key_file
                    .as_deref()
                    .ok_or("client_addresses: hash needs key_file")?;
                Self::with_key(&read_key(path)?)
            }
        })
    }

    /// A hashing anonymiser keyed from `secret` (at least [`MIN_KEY_BYTES`] bytes).
    #[must_use]
    pub fn with_key(secret: &[u8]) -> Self {
        Self::Hash {
            key: blake3::derive_key("switchyard events client address 2026", secret),
        }
    }

    /// The address as events show it.
    #[must_use]
    pub fn address(&self, address: IpAddr) -> String {
        match self {
            Self::Keep => address.to_string(),
            Self::Truncate {
                ipv4_prefix,
                ipv6_prefix,
            } => {
                let bits = if address.is_ipv4() {
                    *ipv4_prefix
                } else {
                    *ipv6_prefix
                };
                // The prefix was checked against the family's width by the configuration.
                IpNet::new(address, bits)
                    .map_or_else(|_| address.to_string(), |n| n.network().to_string())
            }
            Self::Hash { key } => {
                let bytes: Vec<u8> = match address {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                let hash = blake3::keyed_hash(key, &bytes);
                let mut out = String::with_capacity(34);
                out.push_str("h:");
                for b in &hash.as_bytes()[..16] {
                    out.push_str(&format!("{b:02x}"));
                }
                out
            }
        }
    }

    /// Rewrites the event's client addresses in place: the `client` and flow source fields,
    /// and wherever those addresses appear in the `message` and `reason` text.
    pub fn apply(&self, event: &mut Event) {
        if matches!(self, Self::Keep) {
            return;
        }
        let mut replaced = Vec::new();
        for text in event
            .client
            .iter_mut()
            .chain(event.flow.as_mut().map(|f| &mut f.src))
        {
            if let Ok(address) = text.parse::<IpAddr>() {
                let hidden = self.address(address);
                replaced.push((std::mem::replace(text, hidden.clone()), hidden));
            }
        }
        for (original, hidden) in &replaced {
            for text in std::iter::once(&mut event.message).chain(event.reason.as_mut()) {
                *text = replace_address(text, original, hidden);
            }
        }
    }
}

/// `text` with every whole occurrence of the address `original` replaced: not inside a longer
/// address or number (`198.51.100.7` is not touched in `198.51.100.77`).
fn replace_address(text: &str, original: &str, hidden: &str) -> String {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.';
    // A colon before an IPv6 address means a longer one; before IPv4 it is punctuation.
    let v6 = original.contains(':');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(original) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + original.len()..].chars().next();
        let whole =
            !before.is_some_and(|c| part(c) || (v6 && c == ':')) && !after.is_some_and(part);
        out.push_str(&rest[..at]);
        out.push_str(if whole { hidden } else { original });
        rest = &rest[at + original.len()..];
    }
    out.push_str(rest);
    out
}

fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let key = std::fs::read(path)
        .map_err(|e| format!("privacy.key_file {}: cannot read: {e}", path.display()))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "privacy.key_file {}: {} bytes; at least {MIN_KEY_BYTES} secret bytes are needed \
             (for example: head -c 32 /dev/urandom > FILE; chmod 600 FILE)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Flow, Kind};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn truncation_keeps_the_configured_prefix() {
        let a = Anonymiser::Truncate {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
        };
        assert_eq!(a.address(ip("198.51.100.77")), "198.51.100.0");
        assert_eq!(a.address(ip("2001:db8:1:2:3::9")), "2001:db8:1::");
        let a = Anonymiser::Truncate {
            ipv4_prefix: 0,
            ipv6_prefix: 128,
        };
        assert_eq!(a.address(ip("198.51.100.77")), "0.0.0.0");
        assert_eq!(a.address(ip("2001:db8::9")), "2001:db8::9");
        let b = Anonymiser::Truncate {
            ipv4_prefix: 13,
            ipv6_prefix: 48,
        };
        assert_eq!(b.address(ip("10.255.1.1")), "10.248.0.0");
    }

    #[test]
    fn hashing_is_keyed_stable_and_hides_the_address() {
        let a = Anonymiser::with_key(&[7; 32]);
        let b = Anonymiser::with_key(&[8; 32]);
        let x = a.address(ip("198.51.100.77"));
        assert_eq!(x, a.address(ip("198.51.100.77")));
        assert_ne!(x, a.address(ip("198.51.100.78")));
        assert_ne!(x, b.address(ip("198.51.100.77")));
        assert!(x.starts_with("h:") && x.len() == 34, "{x}");
        assert!(!x.contains("198"), "{x}");
    }

    #[test]
    fn apply_rewrites_client_and_flow_source_only() {
        let a = Anonymiser::Truncate {
            ipv4_prefix: 16,
            ipv6_prefix: 48,
        };
        let mut e = Event::new(Kind::AclDrop, "x")
            .client(ip("192.0.2.200"))
            .backend(ip("10.9.9.9"))
            .flow(Flow {
                src: ip("198.51.100.77"),
                src_port: 4000,
                dst: ip("203.0.113.10"),
                dst_port: 443,
                protocol: 6,
            });
        a.apply(&mut e);
        assert_eq!(e.client.as_deref(), Some("192.0.0.0"));
        let f = e.flow.unwrap();
        assert_eq!(f.src, "198.51.0.0");
        assert_eq!(f.dst, ip("203.0.113.10"));
        assert_eq!(e.backend, Some(ip("10.9.9.9")));
    }

    #[test]
    fn addresses_in_the_text_are_hidden_too() {
        let a = Anonymiser::Truncate {
            ipv4_prefix: 16,
            ipv6_prefix: 32,
        };
        let mut e = Event::new(
            Kind::AclDrop,
            "drop_acl: 198.51.100.7:4000 -> 203.0.113.10:443, not 198.51.100.77 nor 1198.51.100.7",
        )
        .reason("peer:198.51.100.7")
        .flow(Flow {
            src: ip("198.51.100.7"),
            src_port: 4000,
            dst: ip("203.0.113.10"),
            dst_port: 443,
            protocol: 6,
        });
        a.apply(&mut e);
        assert_eq!(
            e.message,
            "drop_acl: 198.51.0.0:4000 -> 203.0.113.10:443, not 198.51.100.77 nor 1198.51.100.7"
        );
        assert_eq!(e.reason.as_deref(), Some("peer:198.51.0.0"));
        let mut e = Event::new(Kind::AclDrop, "[2001:db8:1:2::9]:443 2001:db8:1:2::9")
            .client(ip("2001:db8:1:2::9"));
        a.apply(&mut e);
        assert_eq!(e.message, "[2001:db8::]:443 2001:db8::");
    }

    #[test]
    fn short_key_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("sy-anon-{}", std::process::id()));
        std::fs::write(&dir, b"short").unwrap();
        let e = read_key(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.contains("at least 32"), "{e}");
    }
}
