//! Ethernet ports: capabilities, configuration, start/stop, link and statistics.

use std::ffi::CStr;
use std::fmt;

use super::{sys, Error, Mempool, Result};

/// A DPDK ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

/// A queue index on one port (RX or TX, by context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// What a port can do, from `rte_eth_dev_info_get`.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub id: PortId,
    /// The device name: a PCI address (`0000:3b:00.0`) or a vdev name (`net_pcap0`).
    pub name: String,
    pub driver: String,
    pub socket: i32,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rx_offload_capa: u64,
    pub tx_offload_capa: u64,
    pub rss_offloads: u64,
    /// Entries in the RSS redirection table (0: the driver has none to set).
    pub reta_size: u16,
    /// Bytes of RSS hash key the device takes (0: the driver does not say).
    pub hash_key_size: u8,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub mac: [u8; 6],
}

/// How to bring a port up. Offloads are requested only where [`PortInfo`] says the port has them.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Layer-3 MTU; `None` keeps the device default.
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

/// Link state from `rte_eth_link_get_nowait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

impl fmt::Display for LinkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.up {
            return f.write_str("down");
        }
        let duplex = if self.full_duplex { "full" } else { "half" };
        match self.speed_mbps {
            0 | u32::MAX => write!(f, "up, speed unknown, {duplex}-duplex"),
            s if s % 1000 == 0 => write!(f, "up, {} Gbps, {duplex}-duplex", s / 1000),
            s => write!(f, "up, {s} Mbps, {duplex}-duplex"),
        }
    }
}

/// Port counters kept by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets the NIC dropped because no RX descriptor was free (the worker fell behind).
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

/// A configured and started port. Stopped and closed on drop.
#[derive(Debug)]
pub struct Port {
    info: PortInfo,
    config: PortConfig,
    features: PortFeatures,
    started: bool,
}

/// How a started port spreads received packets over its RX queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxSpread {
    /// One RX queue: nothing to spread.
    SingleQueue,
    /// RSS with the symmetric key over these `RTE_ETH_RSS_*` hash types; `reta` says whether the
    /// redirection table was written (entry `i` → queue `i % queues`) or left to the driver.
    SymmetricRss { hash_types: u64, reta: bool },
    /// `net_tap` with several queues: the PMD accepts an RSS configuration but implements RSS
    /// only through `rte_flow` (an eBPF classifier on a multiq qdisc); the queue is chosen by the
    /// kernel's tun driver from its symmetric flow hash (`__skb_get_hash_symmetric`: addresses
    /// and ports, sorted), so both directions of a connection still land on one queue.
    KernelTun,
    /// Several queues, but the device reports no RSS on IP/TCP/UDP: the driver decides.
    Driver,
}

/// What was enabled on a port, and what it offers that Switchyard does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFeatures {
    pub rx_spread: RxSpread,
    /// TX fast mbuf free (`RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE`): enabled where reported.
    pub fast_free: bool,
    /// The device could compute IPv4 header checksums on TX. Not requested: the pipeline writes
    /// the outer header's checksum itself when it emits the header (20 bytes, in cache), which
    /// saves setting per-packet offload metadata (`ol_flags`, `l2_len`, `l3_len`) on the mbuf.
    pub ipv4_cksum_available: bool,
    /// The device could send multi-segment mbufs. Not requested: frames fit one buffer (an MTU
    /// whose frames do not is warned about at start), and fast free excludes chained mbufs.
    pub multi_seg_available: bool,
}

impl fmt::Display for PortFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rx_spread {
            RxSpread::SingleQueue => f.write_str("rx=single-queue")?,
            RxSpread::SymmetricRss { hash_types, reta } => write!(
                f,
                "rx=rss(symmetric key, types {hash_types:#x}, reta {})",
                if reta { "set" } else { "driver default" }
            )?,
            RxSpread::KernelTun => f.write_str("rx=kernel-tun(symmetric flow hash)")?,
            RxSpread::Driver => f.write_str("rx=driver-spread(no RSS reported)")?,
        }
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            " fast_free={} ipv4_cksum_offload=available:{},used:no multi_seg=available:{},used:no",
            yn(self.fast_free),
            yn(self.ipv4_cksum_available),
            yn(self.multi_seg_available)
        )
    }
}

/// The symmetric Toeplitz key (Woo and Park, "Scalable TCP Session Monitoring with Symmetric
/// Receive-side Scaling"): with `0x6d5a` repeated, swapping source and destination (addresses
/// and ports) gives the same hash, so both directions of a connection land on one queue.
pub fn symmetric_rss_key(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

/// The Toeplitz hash DPDK's `rte_softrss` computes, over `input` (addresses then ports, in
/// network order) with `key`; used to show the key is symmetric and to predict a queue.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let mut hash = 0u32;
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                // The 32 key bits starting at bit position i*8+bit.
                let pos = i * 8 + bit;
                let mut window = 0u32;
                for k in 0..32 {
                    let p = pos + k;
                    let b = key.get(p / 8).map_or(0, |kb| (kb >> (7 - p % 8)) & 1);
                    window = (window << 1) | u32::from(b);
                }
                hash ^= window;
            }
        }
    }
    hash
}

fn c_str(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: DPDK returns NUL-terminated strings owned by the driver; copied out at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl PortInfo {
    /// Reads a port's capabilities.
    pub fn get(id: PortId) -> Result<Self> {
        let mut raw = sys::rte_eth_dev_info::default();
        // SAFETY: raw is a valid, writable rte_eth_dev_info.
        let ret = unsafe { sys::rte_eth_dev_info_get(id.0, &mut raw) };
        if ret != 0 {
            return Err(Error::from_code(format!("rte_eth_dev_info_get({id})"), ret));
        }
        let mut name_buf = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: name_buf has RTE_ETH_NAME_MAX_LEN bytes, as the API requires.
        let ret = unsafe { sys::rte_eth_dev_get_name_by_port(id.0, name_buf.as_mut_ptr()) };
        let name = if ret == 0 {
            c_str(name_buf.as_ptr())
        } else {
            format!("port{}", id.0)
        };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: mac is a valid, writable rte_ether_addr.
        let ret = unsafe { sys::rte_eth_macaddr_get(id.0, &mut mac) };
        if ret != 0 {
            return Err(Error::from_code(format!("rte_eth_macaddr_get({id})"), ret));
        }
        // SAFETY: plain lookup; returns -1 (SOCKET_ID_ANY) when unknown.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id.0) };
        Ok(Self {
            id,
            name,
            driver: c_str(raw.driver_name),
            socket,
            max_rx_queues: raw.max_rx_queues,
            max_tx_queues: raw.max_tx_queues,
            rx_offload_capa: raw.rx_offload_capa,
            tx_offload_capa: raw.tx_offload_capa,
            rss_offloads: raw.flow_type_rss_offloads,
            reta_size: raw.reta_size,
            hash_key_size: raw.hash_key_size,
            min_mtu: raw.min_mtu,
            max_mtu: raw.max_mtu,
            mac: mac.addr_bytes,
        })
    }

    /// The NUMA socket to allocate this port's buffers on (socket 0 when the device does not say).
    pub fn numa_socket(&self) -> i32 {
        self.socket.max(0)
    }

    pub fn mac_string(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Port {
    /// Configures `info`'s port with `config`, sets up every queue with buffers from `pool`, and
    /// starts it.
    pub fn start(info: PortInfo, config: PortConfig, pool: &Mempool) -> Result<Self> {
        let id = info.id;
        if config.rx_queues == 0 || config.rx_queues > info.max_rx_queues {
            return Err(Error::other(
                format!("configure {id} ({})", info.name),
                format!(
                    "{} RX queues requested, the device has {}",
                    config.rx_queues, info.max_rx_queues
                ),
            ));
        }
        if config.tx_queues == 0 || config.tx_queues > info.max_tx_queues {
            return Err(Error::other(
                format!("configure {id} ({})", info.name),
                format!(
                    "{} TX queues requested (one per worker), the device has {}",
                    config.tx_queues, info.max_tx_queues
                ),
            ));
        }

        let mut conf = sys::rte_eth_conf::default();
        // Spread flows over RX queues with RSS where there is more than one queue and the port
        // hashes; with the symmetric key every packet of a connection, in either direction,
        // lands on one queue, so one worker's connection table sees the whole flow.
        let rss_hf = info.rss_offloads
            & u64::from(sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP);
        // The key's length is the device's `hash_key_size`; a device that reports none gets the
        // 40 bytes of the standard Toeplitz key (DPDK 22.11 passes the key to the driver as is).
        let key_len = match info.hash_key_size {
            0 => 40,
            n => usize::from(n),
        };
        let mut key = symmetric_rss_key(key_len);
        let tun = info.driver == "net_tap";
        let rss = config.rx_queues > 1 && rss_hf != 0 && !tun;
        if rss {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            #[allow(clippy::cast_possible_truncation)] // at most 255 (hash_key_size is a u8) or 40
            {
                conf.rx_adv_conf.rss_conf.rss_key_len = key_len as u8;
            }
        }
        // Fast mbuf free: every mbuf comes from one pool with refcount 1, so the driver may skip
        // per-mbuf checks when it frees what it sent.
        let fast_free_bit = u64::from(sys::RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE);
        let fast_free = info.tx_offload_capa & fast_free_bit != 0;
        if fast_free {
            conf.txmode.offloads |= fast_free_bit;
        }
        if let Some(mtu) = config.mtu {
            conf.rxmode.mtu = u32::from(mtu);
        }

        // SAFETY: conf is a valid rte_eth_conf and `key` (its rss_key) outlives the call, which
        // copies the key.
        let ret =
            unsafe { sys::rte_eth_dev_configure(id.0, config.rx_queues, config.tx_queues, &conf) };
        drop(key);
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_configure({id} {})", info.name),
                ret,
            ));
        }
        let mut rxd = config.rx_descriptors;
        let mut txd = config.tx_descriptors;
        // SAFETY: rxd/txd are valid u16 locations the call may adjust to the device's limits.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut rxd, &mut txd) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_adjust_nb_rx_tx_desc({id})"),
                ret,
            ));
        }
        let socket = u32::try_from(info.numa_socket()).unwrap_or(0);
        for q in 0..config.rx_queues {
            // SAFETY: NULL rx_conf selects the driver default; pool outlives the port (the caller
            // drops ports before pools).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(id.0, q, rxd, socket, std::ptr::null(), pool.as_ptr())
            };
            if ret != 0 {
                return Err(Error::from_code(
                    format!("rte_eth_rx_queue_setup({id}, queue {q})"),
                    ret,
                ));
            }
        }
        for q in 0..config.tx_queues {
            // SAFETY: NULL tx_conf selects the driver default with the port-level offloads above.
            let ret =
                unsafe { sys::rte_eth_tx_queue_setup(id.0, q, txd, socket, std::ptr::null()) };
            if ret != 0 {
                return Err(Error::from_code(
                    format!("rte_eth_tx_queue_setup({id}, queue {q})"),
                    ret,
                ));
            }
        }
        // SAFETY: the port is configured with all its queues set up.
        let ret = unsafe { sys::rte_eth_dev_start(id.0) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_start({id} {})", info.name),
                ret,
            ));
        }
        if config.promiscuous {
            // SAFETY: started port; failure (unsupported on some vdevs) is not fatal.
            unsafe {
                sys::rte_eth_promiscuous_enable(id.0);
            }
        }
        let rx_spread = if config.rx_queues <= 1 {
            RxSpread::SingleQueue
        } else if tun {
            RxSpread::KernelTun
        } else if rss {
            RxSpread::SymmetricRss {
                hash_types: rss_hf,
                reta: set_reta(id, info.reta_size, config.rx_queues),
            }
        } else {
            RxSpread::Driver
        };
        let features = PortFeatures {
            rx_spread,
            fast_free,
            ipv4_cksum_available: info.tx_offload_capa
                & u64::from(sys::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM)
                != 0,
            multi_seg_available: info.tx_offload_capa
                & u64::from(sys::RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
                != 0,
        };
        let config = PortConfig {
            rx_descriptors: rxd,
            tx_descriptors: txd,
            ..config
        };
        Ok(Self {
            info,
            config,
            features,
            started: true,
        })
    }

    pub fn id(&self) -> PortId {
        self.info.id
    }

    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    pub fn config(&self) -> &PortConfig {
        &self.config
    }

    /// Whether the TX fast-free offload was enabled.
    pub fn fast_free(&self) -> bool {
        self.features.fast_free
    }

    /// What was enabled on this port (RSS, offloads).
    pub fn features(&self) -> PortFeatures {
        self.features
    }

    pub fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: link is a valid, writable rte_eth_link.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.info.id.0, &mut link) };
        if ret != 0 {
            return LinkStatus {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            };
        }
        LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        }
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: s is a valid, writable rte_eth_stats.
        let ret = unsafe { sys::rte_eth_stats_get(self.info.id.0, &mut s) };
        if ret != 0 {
            return PortStats::default();
        }
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Stops the port. Workers must no longer poll it.
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: the port was started; stopping twice is avoided by `started`.
            unsafe {
                sys::rte_eth_dev_stop(self.info.id.0);
            }
            self.started = false;
        }
    }
}

/// Writes the redirection table so entry `i` sends to queue `i % queues` (drivers differ in
/// their defaults). Returns whether the device took it; a device without a writable table keeps
/// its own, which still sends each hash to one queue.
fn set_reta(id: PortId, reta_size: u16, queues: u16) -> bool {
    let group = sys::RTE_ETH_RETA_GROUP_SIZE as usize;
    let size = usize::from(reta_size);
    if size == 0 || queues == 0 {
        return false;
    }
    let mut table: Vec<sys::rte_eth_rss_reta_entry64> = (0..size.div_ceil(group))
        .map(|_| sys::rte_eth_rss_reta_entry64::default())
        .collect();
    for i in 0..size {
        let entry = &mut table[i / group];
        entry.mask |= 1u64 << (i % group);
        #[allow(clippy::cast_possible_truncation)] // i % queues < queues, a u16
        {
            entry.reta[i % group] = (i % usize::from(queues)) as u16;
        }
    }
    // SAFETY: `table` holds reta_size / 64 (rounded up) valid entries, as the call requires.
    let ret = unsafe { sys::rte_eth_dev_rss_reta_update(id.0, table.as_mut_ptr(), reta_size) };
    if ret != 0 {
        tracing::warn!(
            "{id}: the RSS redirection table could not be written ({}); the driver's default stays",
            Error::from_code("rte_eth_dev_rss_reta_update", ret)
        );
    }
    ret == 0
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: the port is stopped and nothing polls it; it is closed once.
        unsafe {
            sys::rte_eth_dev_close(self.info.id.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Microsoft RSS verification suite's first IPv4/TCP vector, with its key.
    #[test]
    fn toeplitz_matches_the_reference_vector() {
        let key: [u8; 40] = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        // 66.9.149.187:2794 -> 161.142.100.80:1766
        let input = [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6];
        assert_eq!(toeplitz(&key, &input), 0x51cc_c178);
        assert_eq!(toeplitz(&key, &input[..8]), 0x323e_8fc2);
    }

    #[test]
    fn the_repeated_key_is_symmetric() {
        let key = symmetric_rss_key(40);
        let mut seen = std::collections::HashSet::new();
        for i in 0u8..64 {
            let (a, b) = ([10, 1, i, 7], [203, 0, 113, 10 + i % 3]);
            let (sp, dp) = (40_000u16 + u16::from(i) * 7, 443u16);
            let fwd: Vec<u8> = [&a[..], &b[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat();
            let rev: Vec<u8> = [&b[..], &a[..], &dp.to_be_bytes(), &sp.to_be_bytes()].concat();
            assert_eq!(toeplitz(&key, &fwd), toeplitz(&key, &rev));
            assert_eq!(toeplitz(&key, &fwd[..8]), toeplitz(&key, &rev[..8]));
            seen.insert(toeplitz(&key, &fwd) & 1);
        }
        // Still a hash: both queues of two get flows.
        assert_eq!(seen.len(), 2);
    }
}
