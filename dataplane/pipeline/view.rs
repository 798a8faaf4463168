//! What a worker derives from a table generation once, at `set_generation`, so the hot path
//! only indexes: which interface each port is bound to (by name), its MAC and gateway MAC and
//! outer-source pools, the own addresses and the encapsulation settings.

use switchyard_table::generation::{
    name_str, Config, Generation, Interface, ENCAP_GUE, MAX_IF_ADDRS, OUTER_SRC_V4, OUTER_SRC_V6,
};

use super::{PortIndex, PortMap};
use crate::wire::EthernetAddress;

/// One appliance port bound to a policy interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortBinding {
    /// The interface's MAC: frames to it are ours, and frames we send carry it.
    pub mac: EthernetAddress,
    /// Where encapsulated packets leaving this port are sent (all zero when not configured:
    /// then the resolved MAC of the gateway address, see [`crate::neighbour`]).
    pub gateway_mac: EthernetAddress,
    /// The gateway's addresses when its MAC is resolved rather than configured (0: none).
    pub gateway_v4: u32,
    pub gateway_v6: u128,
    v4: [u32; MAX_IF_ADDRS],
    v4_count: usize,
    v6: [u128; MAX_IF_ADDRS],
    v6_count: usize,
    /// Outer source of encapsulated packets leaving here: network bits and the host-bit mask
    /// filled from the flow hash (the interface's own prefix, else the config's).
    outer_v4_net: u32,
    outer_v4_host: u32,
    outer_v6_net: u128,
    outer_v6_host: u128,
}

impl PortBinding {
    fn new(it: &Interface, c: &Config) -> Self {
        let v4_count = usize::from(it.v4_count).min(MAX_IF_ADDRS);
        let v6_count = usize::from(it.v6_count).min(MAX_IF_ADDRS);
        let (v4_src, v4_len) = if it.outer_src_flags & OUTER_SRC_V4 != 0 {
            (it.outer_src_v4, it.outer_src_v4_len)
        } else {
            (c.outer_src_v4, c.outer_src_v4_len)
        };
        let (v6_src, v6_len) = if it.outer_src_flags & OUTER_SRC_V6 != 0 {
            (it.outer_src_v6, it.outer_src_v6_len)
        } else {
            (c.outer_src_v6, c.outer_src_v6_len)
        };
        let v4_host = host_mask_v4(v4_len);
        let v6_host = host_mask_v6(v6_len);
        Self {
            mac: EthernetAddress(it.mac),
            gateway_mac: EthernetAddress(it.gateway_mac),
            gateway_v4: if it.gateway_mac == [0; 6] {
                u32::from_be_bytes(it.gateway_v4)
            } else {
                0
            },
            gateway_v6: if it.gateway_mac == [0; 6] {
                u128::from_be_bytes(it.gateway_v6)
            } else {
                0
            },
            v4: it.v4.map(u32::from_be_bytes),
            v4_count,
            v6: it.v6.map(u128::from_be_bytes),
            v6_count,
            outer_v4_net: u32::from_be_bytes(v4_src) & !v4_host,
            outer_v4_host: v4_host,
            outer_v6_net: u128::from_be_bytes(v6_src) & !v6_host,
            outer_v6_host: v6_host,
        }
    }

    /// The outer IPv4 source for a flow leaving here: the pool's network bits, host bits from
    /// the hash.
    #[inline]
    pub fn outer_src_v4(&self, hash: u32) -> u32 {
        self.outer_v4_net | (hash & self.outer_v4_host)
    }

    /// The outer IPv6 source for a flow leaving here.
    #[inline]
    pub fn outer_src_v6(&self, hash: u32) -> u128 {
        self.outer_v6_net | (u128::from(hash) & self.outer_v6_host)
    }

    /// Whether `addr` is one of this interface's IPv4 addresses.
    #[inline]
    pub fn owns_v4(&self, addr: u32) -> bool {
        self.v4.iter().take(self.v4_count).any(|&a| a == addr)
    }

    /// Whether `addr` is one of this interface's IPv6 addresses.
    #[inline]
    pub fn owns_v6(&self, addr: u128) -> bool {
        self.v6.iter().take(self.v6_count).any(|&a| a == addr)
    }

    /// Whether a gateway MAC is configured.
    #[inline]
    pub fn has_gateway(&self) -> bool {
        self.gateway_mac.0 != [0; 6]
    }

    /// Whether a gateway address is to be resolved (no MAC configured).
    #[inline]
    pub fn resolves_gateway(&self) -> bool {
        self.gateway_v4 != 0 || self.gateway_v6 != 0
    }

    /// Whether a gateway address of that family is to be resolved.
    #[inline]
    pub fn resolves_gateway_of(&self, v6: bool) -> bool {
        if v6 {
            self.gateway_v6 != 0
        } else {
            self.gateway_v4 != 0
        }
    }
}

/// Per-generation constants of one worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Per appliance port: the interface bound to it, if any.
    pub ports: Vec<Option<PortBinding>>,
    /// The exception-path port.
    pub kernel: Option<PortIndex>,
    /// The port encapsulated packets leave on (`None`: the RX port).
    pub backend_port: Option<PortIndex>,
    /// Every own address of every interface (for "to the host" and martian checks).
    pub own_v4: Vec<u32>,
    pub own_v6: Vec<u128>,
    /// GUE rather than IPIP.
    pub gue: bool,
    pub gue_port: u16,
    pub backend_mtu: u16,
}

impl View {
    pub fn new(g: &Generation, ports: &PortMap) -> Self {
        let bound = ports
            .interface
            .iter()
            .map(|name| {
                let name = name.as_deref()?;
                g.interfaces
                    .iter()
                    .find(|it| name_str(&it.name) == name)
                    .map(|it| PortBinding::new(it, &g.config))
            })
            .collect();
        let mut own_v4 = Vec::new();
        let mut own_v6 = Vec::new();
        for it in &g.interfaces {
            let b = PortBinding::new(it, &g.config);
            own_v4.extend_from_slice(&b.v4[..b.v4_count]);
            own_v6.extend_from_slice(&b.v6[..b.v6_count]);
        }
        let c = &g.config;
        Self {
            ports: bound,
            kernel: ports.kernel,
            backend_port: ports.backend,
            own_v4,
            own_v6,
            gue: c.encap == ENCAP_GUE,
            gue_port: c.gue_port,
            backend_mtu: c.backend_mtu,
        }
    }

    /// The interface bound to `port`.
    #[inline]
    pub fn port(&self, port: PortIndex) -> Option<&PortBinding> {
        self.ports.get(usize::from(port)).and_then(Option::as_ref)
    }

    /// Whether `addr` is an own IPv4 address of any interface.
    #[inline]
    pub fn is_own_v4(&self, addr: u32) -> bool {
        // An open loop over a handful of addresses: `contains` is an out-of-line call.
        for &own in &self.own_v4 {
            if own == addr {
                return true;
            }
        }
        false
    }

    /// Whether `addr` is an own IPv6 address of any interface.
    #[inline]
    pub fn is_own_v6(&self, addr: u128) -> bool {
        for &own in &self.own_v6 {
            if own == addr {
                return true;
            }
        }
        false
    }
}

/// Host bits of an IPv4 prefix of `len` bits (`len` above 32 counts as 32).
pub(crate) fn host_mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len.min(32))).unwrap_or(0)
}

/// Host bits of an IPv6 prefix of `len` bits (`len` above 128 counts as 128).
pub(crate) fn host_mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(len.min(128))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_masks() {
        assert_eq!(host_mask_v4(0), u32::MAX);
        assert_eq!(host_mask_v4(16), 0xffff);
        assert_eq!(host_mask_v4(32), 0);
        assert_eq!(host_mask_v4(40), 0);
        assert_eq!(host_mask_v6(64), u128::from(u64::MAX));
        assert_eq!(host_mask_v6(128), 0);
        assert_eq!(host_mask_v6(0), u128::MAX);
    }
}
