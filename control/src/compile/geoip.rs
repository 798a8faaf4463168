//! GeoIP country networks for the geo LPM, read from a MaxMind-format database (GeoLite2 /
//! GeoIP2 Country, or anything with `country.iso_code` in its records).
//!
//! Every network of the database is visited once (IPv4 through `0.0.0.0/0`, IPv6 through `::/0`
//! skipping the IPv4 subtree `::/96` and the aliases of it, which the IPv4 pass covered) and
//! kept when its `country.iso_code` is listed by a region. Records are decoded once per distinct
//! record, not once per network. Networks inside an explicit region prefix are dropped (explicit
//! prefixes beat GeoIP), and sibling networks of the same region are merged into their parent, so
//! a country's many adjacent blocks cost few LPM entries and groups.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use maxminddb::{PathElement, Reader, WithinOptions};

use super::CompileError;

/// GeoIP prefixes in the form the LPM builder takes: (address in host order, length, value).
#[derive(Debug, Default)]
pub(super) struct GeoPrefixes {
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
}

/// Reads the networks of the database at `path` whose country is a key of `countries` (value:
/// the LPM value of its region), leaving out those inside any of `explicit`.
pub(super) fn read(
    path: &Path,
    countries: &BTreeMap<[u8; 2], u32>,
    explicit: &[IpNet],
) -> Result<GeoPrefixes, CompileError> {
    let fail = |message: String| CompileError::GeoIp {
        path: path.to_owned(),
        message,
    };
    let reader = Reader::open_readfile(path).map_err(|e| fail(e.to_string()))?;

    let explicit_v4 = Explicit::new(explicit, 32);
    let explicit_v6 = Explicit::new(explicit, 128);
    let mut v4 = Family::new(32);
    let mut v6 = Family::new(128);
    // Value per record offset: many networks share one record.
    let mut values: HashMap<usize, Option<u32>> = HashMap::new();

    let mut roots = vec!["0.0.0.0/0"];
    if reader.metadata().ip_version == 6 {
        roots.push("::/0");
    }
    let iso_code = [PathElement::Key("country"), PathElement::Key("iso_code")];
    for root in roots {
        let cidr = root.parse().map_err(|e| fail(format!("{root}: {e}")))?;
        let networks = reader
            .within(cidr, WithinOptions::default())
            .map_err(|e| fail(e.to_string()))?;
        for item in networks {
            let item = item.map_err(|e| fail(e.to_string()))?;
            let Some(offset) = item.offset() else {
                continue;
            };
            let value = match values.get(&offset) {
                Some(&v) => v,
                None => {
                    let code: Option<&str> = item
                        .decode_path(&iso_code)
                        .map_err(|e| fail(e.to_string()))?;
                    let v = code
                        .and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok())
                        .and_then(|c| countries.get(&c).copied());
                    values.insert(offset, v);
                    v
                }
            };
            let Some(value) = value else {
                continue;
            };
            let net = item.network().map_err(|e| fail(e.to_string()))?;
            let len = net.prefix();
            match net.ip() {
                IpAddr::V4(a) => {
                    let addr = u128::from(u32::from(a));
                    if !explicit_v4.covers(addr, len) {
                        v4.insert(addr, len, value);
                    }
                }
                IpAddr::V6(a) => {
                    let addr = u128::from(a);
                    // The IPv4 subtree, already read as IPv4.
                    if len >= 96 && addr >> 32 == 0 {
                        continue;
                    }
                    if !explicit_v6.covers(addr, len) {
                        v6.insert(addr, len, value);
                    }
                }
            }
        }
    }

    Ok(GeoPrefixes {
        v4: v4
            .merged()
            .into_iter()
            // A 32-bit family holds 32-bit addresses.
            .map(|(a, l, v)| (u32::try_from(a).unwrap_or(0), l, v))
            .collect(),
        v6: v6.merged(),
    })
}

/// Mask of the top `len` of `width` bits, right-aligned in a `u128`.
fn mask(len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(len))) >> (128 - u32::from(width))
    }
}

/// Explicit region prefixes of one family, for "is this network inside one of them".
struct Explicit {
    width: u8,
    by_len: BTreeMap<u8, HashSet<u128>>,
}

impl Explicit {
    fn new(prefixes: &[IpNet], width: u8) -> Self {
        let mut by_len: BTreeMap<u8, HashSet<u128>> = BTreeMap::new();
        for p in prefixes {
            let addr = match (p, width) {
                (IpNet::V4(n), 32) => u128::from(u32::from(n.network())),
                (IpNet::V6(n), 128) => u128::from(n.network()),
                _ => continue,
            };
            by_len.entry(p.prefix_len()).or_default().insert(addr);
        }
        Self { width, by_len }
    }

    /// Whether the network `addr/len` lies inside an explicit prefix.
    fn covers(&self, addr: u128, len: u8) -> bool {
        self.by_len
            .range(..=len)
            .any(|(&l, set)| set.contains(&(addr & mask(l, self.width))))
    }
}

/// GeoIP networks of one family, keyed by (length, address).
struct Family {
    width: u8,
    nets: BTreeMap<(u8, u128), u32>,
}

impl Family {
    fn new(width: u8) -> Self {
        Self {
            width,
            nets: BTreeMap::new(),
        }
    }

    fn insert(&mut self, addr: u128, len: u8, value: u32) {
        self.nets.insert((len, addr & mask(len, self.width)), value);
    }

    /// The networks with every pair of sibling networks of one value replaced by their parent,
    /// repeatedly; sorted by (length, address). Exact, because database networks never
    /// overlap: a merged parent covers exactly its two children.
    fn merged(mut self) -> Vec<(u128, u8, u32)> {
        for len in (1..=self.width).rev() {
            let bit = 1u128 << (self.width - len);
            let left: Vec<(u128, u32)> = self
                .nets
                .range((len, 0)..=(len, u128::MAX))
                .filter(|(&(_, a), _)| a & bit == 0)
                .map(|(&(_, a), &v)| (a, v))
                .collect();
            for (a, v) in left {
                let parent = (len - 1, a);
                if self.nets.get(&(len, a | bit)) == Some(&v) && !self.nets.contains_key(&parent) {
                    self.nets.remove(&(len, a));
                    self.nets.remove(&(len, a | bit));
                    self.nets.insert(parent, v);
                }
            }
        }
        self.nets
            .into_iter()
            .map(|((len, addr), v)| (addr, len, v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_of_one_value_merge_up() {
        let mut f = Family::new(32);
        // 10.40.0.0/16 + 10.41.0.0/16 → 10.40.0.0/15; with 10.42.0.0/15 → 10.40.0.0/14.
        f.insert(0x0a28_0000, 16, 1);
        f.insert(0x0a29_0000, 16, 1);
        f.insert(0x0a2a_0000, 15, 1);
        // Different value: stays.
        f.insert(0x0a2c_0000, 14, 2);
        // A lone network.
        f.insert(0x0b00_0000, 24, 1);
        assert_eq!(
            f.merged(),
            vec![
                (0x0a28_0000, 14, 1),
                (0x0a2c_0000, 14, 2),
                (0x0b00_0000, 24, 1)
            ]
        );
    }

    #[test]
    fn explicit_prefixes_cover_their_subnets_only() {
        let e = Explicit::new(
            &[
                "10.1.0.0/16".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            32,
        );
        assert!(e.covers(0x0a01_0500, 24));
        assert!(e.covers(0x0a01_0000, 16));
        assert!(!e.covers(0x0a00_0000, 8)); // contains the explicit prefix, not inside it
        assert!(!e.covers(0x0a02_0000, 16));
        assert_eq!(mask(0, 128), 0);
        assert_eq!(mask(128, 128), u128::MAX);
        assert_eq!(mask(8, 32), 0xff00_0000);
    }
}
