//! The policy as written: the serde model of the YAML file.
//!
//! This layer only checks shape: every mapping rejects unknown keys, required keys must be
//! there, and enumerations (`protocol`, `scheduler`, `residency`) must be one of their names.
//! Everything that needs judgement — addresses, prefixes, ranges, durations, references —
//! stays text or a wide integer here, wrapped in [`Spanned`] so that `validate` can report
//! every problem at once with the line and column of the node it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{Protocol, Residency, SchedulerKind};

/// A list of text nodes (addresses, prefixes, names).
pub type SpannedStrings = Spanned<Vec<Spanned<String>>>;

/// The whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub geoip_database: Option<Spanned<String>>,
    pub interfaces: Spanned<Vec<Spanned<RawInterface>>>,
    #[serde(default)]
    pub encap: Option<Spanned<RawEncap>>,
    #[serde(default)]
    pub backend_mtu: Option<Spanned<i64>>,
    #[serde(default)]
    pub regions: Option<NamedMap<Spanned<RawRegion>>>,
    pub services: Spanned<Vec<Spanned<RawService>>>,
    pub pools: Spanned<NamedMap<Spanned<RawPool>>>,
    #[serde(default)]
    pub acl: Option<Vec<Spanned<RawAclRule>>>,
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pub tables: Option<Spanned<RawTables>>,
    #[serde(default)]
    pub encap_source: Option<Spanned<RawEncapSource>>,
    #[serde(default)]
    pub flow_timeouts: Option<Spanned<RawFlowTimeouts>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncapSource {
    #[serde(default)]
    pub ipv4: Option<Spanned<String>>,
    #[serde(default)]
    pub ipv6: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowTimeouts {
    #[serde(default)]
    pub tcp_handshake: Option<Spanned<String>>,
    #[serde(default)]
    pub tcp_established: Option<Spanned<String>>,
    #[serde(default)]
    pub tcp_closing: Option<Spanned<String>>,
    #[serde(default)]
    pub udp: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub name: Spanned<String>,
    pub mac: Spanned<String>,
    pub addresses: SpannedStrings,
    #[serde(default)]
    pub gateway: Option<Spanned<RawGateway>>,
    #[serde(default)]
    pub encap_source: Option<Spanned<RawEncapSource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default)]
    pub ipv4: Option<Spanned<String>>,
    #[serde(default)]
    pub ipv6: Option<Spanned<String>>,
    #[serde(default)]
    pub mac: Option<Spanned<String>>,
}

/// `encap: ipip`, `encap: gue` or `encap: { gue: { port: 6081 } }`.
#[derive(Debug)]
pub enum RawEncap {
    Ipip,
    Gue { port: Option<Spanned<i64>> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGueOptions {
    #[serde(default)]
    port: Option<Spanned<i64>>,
}

const ENCAP_NAMES: &[&str] = &["ipip", "gue"];

impl<'de> Deserialize<'de> for RawEncap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EncapVisitor;

        impl<'de> Visitor<'de> for EncapVisitor {
            type Value = RawEncap;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`ipip`, `gue` or `{ gue: { port: PORT } }`")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<RawEncap, E> {
                match name {
                    "ipip" => Ok(RawEncap::Ipip),
                    "gue" => Ok(RawEncap::Gue { port: None }),
                    other => Err(E::unknown_variant(other, ENCAP_NAMES)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEncap, A::Error> {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &"one encapsulation"));
                };
                let encap = match name.as_str() {
                    "gue" => {
                        let options: Option<RawGueOptions> = map.next_value()?;
                        RawEncap::Gue {
                            port: options.and_then(|o| o.port),
                        }
                    }
                    "ipip" => {
                        let _: Option<de::IgnoredAny> = map.next_value()?;
                        RawEncap::Ipip
                    }
                    other => return Err(de::Error::unknown_variant(other, ENCAP_NAMES)),
                };
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(2, &"one encapsulation"));
                }
                Ok(encap)
            }
        }

        deserializer.deserialize_any(EncapVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    #[serde(default)]
    pub prefixes: Option<SpannedStrings>,
    #[serde(default)]
    pub geoip: Option<Spanned<RawGeoip>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    pub countries: SpannedStrings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub vip: Spanned<String>,
    pub ports: Spanned<Vec<Spanned<Scalar>>>,
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
    pub routes: Spanned<Vec<Spanned<RawRoute>>>,
    #[serde(default)]
    pub canary: Option<Spanned<RawCanary>>,
    /// The service's own ACL, after the global one.
    #[serde(default)]
    pub acl: Option<Vec<Spanned<RawAclRule>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    pub pool: Spanned<String>,
    #[serde(default)]
    pub fallback: Option<SpannedStrings>,
    #[serde(default)]
    pub residency: Option<Spanned<Residency>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub pool: Spanned<String>,
    /// A fixed share; exclusive with `steps`.
    #[serde(default)]
    pub percent: Option<Spanned<Scalar>>,
    /// A phased rollout: shares in increasing order.
    #[serde(default)]
    pub steps: Option<Spanned<Vec<Spanned<Scalar>>>>,
    #[serde(default)]
    pub step_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub rollback: Option<Spanned<RawRollback>>,
}

/// `canary.rollback`: the gates of a phased canary.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    #[serde(default)]
    pub backends_down: Option<Spanned<i64>>,
    #[serde(default)]
    pub signal: Option<Spanned<RawSignalGate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignalGate {
    pub metric: Spanned<String>,
    pub max_rate: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    #[serde(default)]
    pub scheduler: Option<Spanned<SchedulerKind>>,
    #[serde(default)]
    pub maglev_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    pub load: Option<Spanned<RawLoad>>,
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default)]
    pub http: Option<Spanned<RawHttpProbe>>,
    #[serde(default)]
    pub tcp: Option<Spanned<RawTcpProbe>>,
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub rise: Option<Spanned<i64>>,
    #[serde(default)]
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpProbe {
    pub port: Spanned<i64>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub expect_status: Option<Spanned<i64>>,
    #[serde(default)]
    pub expect_model: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpProbe {
    pub port: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    pub metrics: Spanned<RawMetricsEndpoint>,
    pub signals: SpannedStrings,
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub min_weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_weight: Option<Spanned<i64>>,
    /// Signal value at which a backend counts as saturated, per metric name.
    #[serde(default)]
    pub saturation: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    #[serde(default)]
    pub smoothing: Option<Spanned<String>>,
    #[serde(default)]
    pub dead_band: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub stale_after: Option<Spanned<String>>,
    #[serde(default)]
    pub min_rebuild_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub full_at: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetricsEndpoint {
    pub port: Spanned<i64>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// `drained` or `disabled`; absent for a backend in service.
    #[serde(default)]
    pub state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAclRule {
    #[serde(default)]
    pub allow: Option<Spanned<String>>,
    #[serde(default)]
    pub deny: Option<Spanned<String>>,
    #[serde(default)]
    pub ports: Option<Spanned<Vec<Spanned<Scalar>>>>,
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub new_flows_per_source: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub icmp_per_second: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// The prefix an IPv6 client is keyed by (default 64).
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTables {
    /// Not a policy setting (the data plane's appliance settings size the connection table);
    /// read only to refuse it with a pointer to the right place.
    #[serde(default)]
    pub flows_per_worker: Option<Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    pub maglev_size: Option<Spanned<i64>>,
}

/// A scalar that may be written as a number or as text: a port (`443`) or port range
/// (`"8000-8010"`), a percentage (`5`, `0.5`, `"5%"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i128),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                Ok(i128::try_from(v).map_or_else(|_| Scalar::Text(v.to_string()), Scalar::Int))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A YAML mapping of names to definitions (`pools:`, `regions:`), in file order.
///
/// Unlike a `HashMap`, it keeps every entry — repeated names included — with the position of
/// each name, so validation can report a name defined twice at both places.
#[derive(Debug)]
pub struct NamedMap<T> {
    pub entries: Vec<(Spanned<String>, T)>,
}

impl<T> NamedMap<T> {
    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, T)> {
        self.entries.iter()
    }

    /// Number of entries, repeated names included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the mapping is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamedMapVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for NamedMapVisitor<T> {
            type Value = NamedMap<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to definitions")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NamedMap<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<Spanned<String>>()? {
                    entries.push((name, map.next_value()?));
                }
                Ok(NamedMap { entries })
            }
        }

        deserializer.deserialize_map(NamedMapVisitor(PhantomData))
    }
}
