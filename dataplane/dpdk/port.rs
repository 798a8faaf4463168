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
    fast_free: bool,
    started: bool,
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
        // hashes; every packet of a connection then lands on one queue, so one worker's
        // connection table sees the whole flow.
        let rss_hf = info.rss_offloads
            & u64::from(sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP);
        if config.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
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

        // SAFETY: conf is a valid rte_eth_conf that outlives the call.
        let ret =
            unsafe { sys::rte_eth_dev_configure(id.0, config.rx_queues, config.tx_queues, &conf) };
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
        let config = PortConfig {
            rx_descriptors: rxd,
            tx_descriptors: txd,
            ..config
        };
        Ok(Self {
            info,
            config,
            fast_free,
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
        self.fast_free
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

impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: the port is stopped and nothing polls it; it is closed once.
        unsafe {
            sys::rte_eth_dev_close(self.info.id.0);
        }
    }
}
