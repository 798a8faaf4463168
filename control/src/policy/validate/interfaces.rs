//! `interfaces:` and `encap:`, and whether backends can be reached through the interfaces.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::super::error::Position;
use super::super::model::{Encap, EncapSource, Gateway, Interface, MacAddr, DEFAULT_GUE_PORT};
use super::super::raw::{RawEncap, RawEncapSource, RawGateway, RawInterface};
use super::super::values::{parse_interface_address, parse_ip, parse_mac, parse_prefix};
use super::{at_suffix, Validator, ENCAP_SOURCE_MIN_LEN};

/// Ranges an outer source may not reach into: not unicast sources a backend could answer, or
/// not routable (`0.0.0.0/8`, loopback, link-local, multicast, the reserved `240.0.0.0/4` with
/// broadcast; IPv6 unspecified and loopback are inside `::/8`).
const NOT_SOURCES: [(&str, &str); 8] = [
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4, with broadcast)"),
    (
        "::/8",
        "reserved (::/8, with the unspecified and loopback addresses)",
    ),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The appliance's on-link subnets and gateways, for backend reachability.
pub(super) struct Links {
    /// False when the interfaces had errors of their own: then nothing is judged.
    enabled: bool,
    subnets: Vec<IpNet>,
    has_v4: bool,
    has_v6: bool,
    gateway_v4: bool,
    gateway_v6: bool,
}

impl Links {
    pub(super) fn of(interfaces: &[Interface], enabled: bool) -> Self {
        let subnets: Vec<IpNet> = interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().copied())
            .collect();
        let gateways = || interfaces.iter().filter_map(|i| i.gateway.as_ref());
        Self {
            enabled: enabled && !subnets.is_empty(),
            has_v4: subnets.iter().any(|n| matches!(n, IpNet::V4(_))),
            has_v6: subnets.iter().any(|n| matches!(n, IpNet::V6(_))),
            gateway_v4: gateways().any(|g| g.ipv4.is_some()),
            gateway_v6: gateways().any(|g| g.ipv6.is_some()),
            subnets,
        }
    }

    /// Why `address` cannot be reached, if it cannot.
    pub(super) fn unreachable(&self, address: IpAddr) -> Option<String> {
        let (family, has_address, has_gateway, key) = match address {
            IpAddr::V4(_) => ("IPv4", self.has_v4, self.gateway_v4, "ipv4"),
            IpAddr::V6(_) => ("IPv6", self.has_v6, self.gateway_v6, "ipv6"),
        };
        if !self.enabled {
            return None;
        }
        if !has_address {
            return Some(format!(
                "no interface has an {family} address to send encapsulated packets to {address} from"
            ));
        }
        let on_link = self.subnets.iter().any(|n| n.contains(&address));
        if !on_link && !has_gateway {
            return Some(format!(
                "{address} is not on any interface subnet and no interface has a `gateway.{key}`"
            ));
        }
        None
    }
}

impl Validator {
    pub(super) fn interfaces(
        &mut self,
        raw: &Spanned<Vec<Spanned<RawInterface>>>,
    ) -> Vec<Interface> {
        if raw.value.is_empty() {
            self.error_at(
                raw,
                "interfaces",
                "no interfaces are defined; the appliance needs at least one to send packets on",
            );
        }
        let mut names: HashMap<&str, Option<Position>> = HashMap::new();
        let mut macs = HashMap::new();
        let mut own_addresses: HashMap<IpAddr, String> = HashMap::new();
        let mut interfaces = Vec::new();
        for (index, node) in raw.value.iter().enumerate() {
            let raw = &node.value;
            let path = format!("interfaces[{index}]");
            self.name(&raw.name, &format!("{path}.name"));
            if let Some(first) = names.get(raw.name.value.as_str()) {
                self.error_at(
                    &raw.name,
                    format!("{path}.name"),
                    format!(
                        "interface `{}` is defined twice (first{})",
                        raw.name.value,
                        at_suffix(*first)
                    ),
                );
            } else {
                names.insert(&raw.name.value, Position::of(&raw.name));
            }

            let mac_path = format!("{path}.mac");
            let mac = self.unicast_mac(&raw.mac, &mac_path);
            if let Some(mac) = mac {
                if let Some(other) = macs.insert(mac, raw.name.value.clone()) {
                    self.error_at(
                        &raw.mac,
                        &mac_path,
                        format!("MAC {mac} is also the MAC of interface `{other}`"),
                    );
                }
            }

            if raw.addresses.value.is_empty() {
                self.error_at(
                    &raw.addresses,
                    format!("{path}.addresses"),
                    "an interface needs at least one address",
                );
            }
            let mut addresses = Vec::new();
            for (i, address) in raw.addresses.value.iter().enumerate() {
                let address_path = format!("{path}.addresses[{i}]");
                let Some(net) = self.check(
                    address,
                    &address_path,
                    parse_interface_address(&address.value),
                ) else {
                    continue;
                };
                if let Some(owner) = own_addresses.insert(net.addr(), raw.name.value.clone()) {
                    self.error_at(
                        address,
                        &address_path,
                        format!("address {} is already on interface `{owner}`", net.addr()),
                    );
                    continue;
                }
                addresses.push(net);
            }

            let gateway = raw
                .gateway
                .as_ref()
                .and_then(|gateway| self.gateway(&format!("{path}.gateway"), gateway, &addresses));

            let (mut encap_source_ipv4, mut encap_source_ipv6) = (None, None);
            if let Some(source) = &raw.encap_source {
                let base = format!("{path}.encap_source");
                if let Some(node) = &source.value.ipv4 {
                    if let Some(IpNet::V4(net)) =
                        self.encap_prefix(node, &base, "ipv4", ENCAP_SOURCE_MIN_LEN.0, 32)
                    {
                        encap_source_ipv4 = Some(net);
                    }
                }
                if let Some(node) = &source.value.ipv6 {
                    if let Some(IpNet::V6(net)) =
                        self.encap_prefix(node, &base, "ipv6", ENCAP_SOURCE_MIN_LEN.1, 128)
                    {
                        encap_source_ipv6 = Some(net);
                    }
                }
            }

            if let Some(mac) = mac {
                interfaces.push(Interface {
                    name: raw.name.value.clone(),
                    mac,
                    addresses,
                    gateway,
                    encap_source_ipv4,
                    encap_source_ipv6,
                });
            }
        }
        interfaces
    }

    pub(super) fn gateway(
        &mut self,
        path: &str,
        node: &Spanned<RawGateway>,
        addresses: &[IpNet],
    ) -> Option<Gateway> {
        let raw = &node.value;
        if raw.ipv4.is_none() && raw.ipv6.is_none() {
            self.error_at(node, path, "a gateway needs `ipv4`, `ipv6` or both");
            return None;
        }
        let ipv4 = self.gateway_address(path, "ipv4", raw.ipv4.as_ref(), addresses);
        let ipv6 = self.gateway_address(path, "ipv6", raw.ipv6.as_ref(), addresses);
        let mac = match &raw.mac {
            None => Some(None),
            Some(mac) => self.unicast_mac(mac, &format!("{path}.mac")).map(Some),
        };
        Some(Gateway {
            ipv4: match ipv4? {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            ipv6: match ipv6? {
                Some(IpAddr::V6(ip)) => Some(ip),
                _ => None,
            },
            mac: mac?,
        })
    }

    /// `gateway.ipv4` / `gateway.ipv6`: the right family, on one of the interface's subnets
    /// (or IPv6 link-local), not an own address. `Some(None)` when absent, `None` when wrong.
    fn gateway_address(
        &mut self,
        path: &str,
        key: &str,
        node: Option<&Spanned<String>>,
        addresses: &[IpNet],
    ) -> Option<Option<IpAddr>> {
        let Some(node) = node else {
            return Some(None);
        };
        let path = format!("{path}.{key}");
        let ip = self.check(node, &path, parse_ip(&node.value))?;
        let want_v4 = key == "ipv4";
        let family = if want_v4 { "IPv4" } else { "IPv6" };
        if ip.is_ipv4() != want_v4 {
            self.error_at(
                node,
                &path,
                format!("`{key}` must be an {family} address, found {ip}"),
            );
            return None;
        }
        if addresses.iter().any(|n| n.addr() == ip) {
            self.error_at(
                node,
                &path,
                format!("gateway {ip} is this interface's own address"),
            );
            return None;
        }
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        let on_link = link_local || addresses.iter().any(|n| n.contains(&ip));
        // Without valid addresses there is nothing to judge against; that is reported there.
        if !on_link && !addresses.is_empty() {
            let subnets: Vec<String> = addresses
                .iter()
                .filter(|n| n.addr().is_ipv4() == want_v4)
                .map(ToString::to_string)
                .collect();
            let subnets = if subnets.is_empty() {
                format!("the interface has no {family} address")
            } else {
                format!("the interface has {}", subnets.join(", "))
            };
            self.error_at(
                node,
                &path,
                format!("gateway {ip} is not on any subnet of this interface ({subnets})"),
            );
            return None;
        }
        Some(Some(ip))
    }

    /// A MAC an interface or gateway can have: not a group address, not all zero.
    fn unicast_mac(&mut self, node: &Spanned<String>, path: &str) -> Option<MacAddr> {
        let mac = self.check(node, path, parse_mac(&node.value))?;
        if mac.is_multicast() || mac.0 == [0; 6] {
            self.error_at(node, path, format!("{mac} is not a unicast MAC address"));
            return None;
        }
        Some(mac)
    }

    /// `encap_source:`: an IPv4 and an IPv6 prefix, each of a bounded length and outside
    /// [`NOT_SOURCES`]; a key left out keeps its default.
    pub(super) fn encap_source(&mut self, raw: Option<&Spanned<RawEncapSource>>) -> EncapSource {
        let mut source = EncapSource::default();
        let Some(raw) = raw else {
            return source;
        };
        if let Some(node) = &raw.value.ipv4 {
            if let Some(IpNet::V4(net)) =
                self.encap_prefix(node, "encap_source", "ipv4", ENCAP_SOURCE_MIN_LEN.0, 32)
            {
                source.ipv4 = net;
            }
        }
        if let Some(node) = &raw.value.ipv6 {
            if let Some(IpNet::V6(net)) =
                self.encap_prefix(node, "encap_source", "ipv6", ENCAP_SOURCE_MIN_LEN.1, 128)
            {
                source.ipv6 = net;
            }
        }
        source
    }

    fn encap_prefix(
        &mut self,
        node: &Spanned<String>,
        base: &str,
        key: &str,
        min: u8,
        max: u8,
    ) -> Option<IpNet> {
        let path = format!("{base}.{key}");
        let net = self.check(node, &path, parse_prefix(&node.value))?;
        let family_ok = match net {
            IpNet::V4(_) => key == "ipv4",
            IpNet::V6(_) => key == "ipv6",
        };
        if !family_ok {
            let want = if key == "ipv4" { "an IPv4" } else { "an IPv6" };
            self.error_at(node, &path, format!("{net} is not {want} prefix"));
            return None;
        }
        if net.prefix_len() < min {
            self.error_at(
                node,
                &path,
                format!(
                    "{net} is too broad: the outer source prefix must be /{min} to /{max} (the flow \
                     hash fills at most the low 32 host bits)"
                ),
            );
            return None;
        }
        for (range, what) in NOT_SOURCES {
            let Ok(range) = range.parse::<IpNet>() else {
                continue;
            };
            if range.contains(&net.network()) || net.contains(&range.network()) {
                self.error_at(
                    node,
                    &path,
                    format!(
                        "{net} is {what} address space; outer sources must be unicast and routable"
                    ),
                );
                return None;
            }
        }
        Some(net)
    }

    pub(super) fn encap(&mut self, raw: Option<&Spanned<RawEncap>>) -> Encap {
        match raw.map(|r| &r.value) {
            None | Some(RawEncap::Ipip) => Encap::Ipip,
            Some(RawEncap::Gue { port: None }) => Encap::Gue {
                port: DEFAULT_GUE_PORT,
            },
            Some(RawEncap::Gue { port: Some(port) }) => Encap::Gue {
                port: self
                    .port(port, "encap.gue.port")
                    .unwrap_or(DEFAULT_GUE_PORT),
            },
        }
    }
}
