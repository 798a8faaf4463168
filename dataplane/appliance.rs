//! Bringing the appliance up and down: EAL, ports, mempools, and the plan of which worker polls
//! which queue.
//!
//! Layout follows DPDK's l3fwd: every worker lcore gets its own TX queue on every port (so TX needs
//! no lock), and the RX queues of all ports are spread over the workers. With RSS on a multi-queue
//! port, all packets of one connection land on one queue and so on one worker, whose connection
//! table is then authoritative for it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::dpdk::{
    self, Eal, LcoreId, LinkStatus, Mempool, Port, PortConfig, PortId, PortInfo, QueueId,
    BURST_SIZE,
};
use crate::pipeline::{PortIndex, PortMap};
use crate::settings::{PortRole, PortSetting, Settings};

/// What one worker lcore does: the RX queues it polls and its TX queue index on every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    pub index: usize,
    pub lcore: LcoreId,
    pub rx: Vec<(PortId, QueueId)>,
    pub tx_queue: QueueId,
}

/// The running appliance. Fields drop in declaration order: ports stop and close first, then the
/// mempools they used are freed, then the EAL is cleaned up (releasing hugepage memory).
#[derive(Debug)]
pub struct Appliance {
    pub ports: Vec<Port>,
    pub roles: Vec<PortRole>,
    /// The policy interface bound to each port (`None` for the kernel port).
    pub interfaces: Vec<Option<String>>,
    pub workers: Vec<WorkerPlan>,
    pools: Vec<Mempool>,
    eal: Eal,
}

/// The mempool of NUMA socket `socket`.
fn pool_name(socket: i32) -> String {
    format!("sy_pool_s{socket}")
}

/// Spreads RX queues over workers.
///
/// Queue `q` of a multi-queue port goes to worker `q % workers` on every port: symmetric RSS with
/// the same key and redirection table sends a connection to the same queue index on every port,
/// so its packets reach one worker whichever port they arrive on. Single-queue ports are spread
/// over the workers in turn.
pub fn assign_rx_queues(
    rx_queues: &[(PortId, u16)],
    workers: usize,
) -> Vec<Vec<(PortId, QueueId)>> {
    let mut plan = vec![Vec::new(); workers];
    if workers == 0 {
        return plan;
    }
    let mut next_single = 0;
    for &(port, queues) in rx_queues {
        if queues == 1 {
            plan[next_single % workers].push((port, QueueId(0)));
            next_single += 1;
            continue;
        }
        for q in 0..queues {
            plan[usize::from(q) % workers].push((port, QueueId(q)));
        }
    }
    plan
}

impl Appliance {
    /// Initialises the EAL with `eal_args` (without argv\[0\]), selects and starts the ports, and
    /// plans the workers. Nothing is polled yet.
    pub fn start(settings: &Settings, eal_args: &[String]) -> Result<Self> {
        let mut argv = vec![String::from("switchyard-dataplane")];
        argv.extend(eal_args.iter().cloned());
        // Unlink hugepage files as soon as they are mapped: nothing is left in hugetlbfs after an
        // exit, clean or not. The control plane never attaches as a DPDK secondary process, so
        // nothing needs to find them.
        if !eal_args
            .iter()
            .any(|a| a == "--in-memory" || a == "--no-huge" || a.starts_with("--huge-unlink"))
        {
            argv.push(String::from("--huge-unlink"));
        }
        let eal = Eal::init(&argv)
            .context("EAL initialisation failed (check the EAL arguments after `--`)")?;
        tracing::info!("{} initialised", dpdk::version());

        let lcores = eal.worker_lcores();
        if lcores.is_empty() {
            bail!(
                "no worker lcore: give the EAL at least two cores (for example `-l 0-1`); the first \
                 is the main lcore, every other one runs a worker"
            );
        }
        let workers = lcores.len();

        let probed: Vec<PortInfo> = (0..eal.port_count())
            .map(|i| PortInfo::get(PortId(i)))
            .collect::<dpdk::Result<_>>()?;
        let missing: Vec<String> = requested_net_vdevs(eal_args)
            .into_iter()
            .filter(|name| !probed.iter().any(|p| &p.name == name))
            .collect();
        if !missing.is_empty() {
            bail!(
                "virtual device(s) {} did not come up; the EAL's messages above say why (a missing \
                 capture file, a bad devarg)",
                missing.join(", ")
            );
        }
        if probed.is_empty() {
            bail!("the EAL found no Ethernet port: pass devices with `-a <PCI address>` or `--vdev=net_...`");
        }
        let selected: Vec<(PortInfo, PortSetting)> = if settings.ports.is_empty() {
            probed
                .into_iter()
                .map(|p| {
                    let s = PortSetting {
                        device: p.name.clone(),
                        role: PortRole::Uplink,
                        interface: None,
                    };
                    (p, s)
                })
                .collect()
        } else {
            let mut out = Vec::new();
            for want in &settings.ports {
                // A PCI address may be written short (`3b:00.0`) or in capitals; the EAL names
                // it `0000:3b:00.0`.
                let pci = crate::check::normalise_pci(&want.device);
                let Some(info) = probed
                    .iter()
                    .find(|p| p.name == want.device || pci.as_deref() == Some(p.name.as_str()))
                else {
                    let names: Vec<&str> = probed.iter().map(|p| p.name.as_str()).collect();
                    let hint = match &pci {
                        Some(a) => format!(
                            "; a PCI port must be bound to vfio-pci (or uio) and allowed with `-a {a}` \
                             (`switchyard-dataplane check --config FILE` says what is missing)"
                        ),
                        None => format!(
                            "; a virtual device needs `--vdev={},...` after `--`",
                            want.device
                        ),
                    };
                    bail!(
                        "port {} from the settings was not probed by the EAL; it has: {}{hint}",
                        want.device,
                        names.join(", ")
                    );
                };
                out.push((info.clone(), want.clone()));
            }
            out
        };

        // One mempool per NUMA socket that has a port, so buffers are local to the NIC.
        let mut sockets: Vec<i32> = selected.iter().map(|(p, _)| p.numa_socket()).collect();
        sockets.sort_unstable();
        sockets.dedup();
        let needed = mbufs_needed(settings, &selected, workers);
        if u64::from(settings.mempool.mbufs) < needed {
            bail!(
                "mempool.mbufs is {} but the queues alone hold up to {needed}; raise it (setting \
                 mempool.mbufs or --mbufs)",
                settings.mempool.mbufs
            );
        }
        let mut pools = Vec::new();
        for &s in &sockets {
            let pool = Mempool::create(
                &pool_name(s),
                settings.mempool.mbufs,
                settings.mempool.cache,
                settings.mempool.data_room,
                s,
            )?;
            pools.push((s, pool));
        }

        // Workers take single-buffer frames only (a chained mbuf is dropped and counted), so a
        // frame of the MTU must fit one buffer after the headroom; encapsulation grows into the
        // headroom, not the data room.
        if let Some(mtu) = settings.mtu {
            let frame = u32::from(mtu) + 14 + 8;
            let room = u32::from(settings.mempool.data_room).saturating_sub(128);
            if frame > room {
                tracing::warn!(
                    "mtu {mtu} allows frames of {frame} bytes (with two VLAN tags) but a buffer \
                     holds {room}: longer frames are dropped (multi-segment); set \
                     mempool.data_room to at least {}",
                    frame + 128
                );
            }
        }

        let mut ports = Vec::new();
        let mut roles = Vec::new();
        let mut interfaces = Vec::new();
        for (info, setting) in selected {
            let pool = &pools
                .iter()
                .find(|(s, _)| *s == info.numa_socket())
                .expect("pool per socket")
                .1;
            let tx_queues = u16::try_from(workers).context("too many workers")?;
            if info.max_tx_queues < tx_queues {
                bail!(
                    "port {} ({}) has {} TX queue(s) but every worker needs its own: run at most {} \
                     worker(s) or give the device more queues",
                    info.id.0,
                    info.name,
                    info.max_tx_queues,
                    info.max_tx_queues
                );
            }
            let config = PortConfig {
                rx_queues: info.max_rx_queues.min(tx_queues).max(1),
                tx_queues,
                rx_descriptors: settings.queues.rx_descriptors,
                tx_descriptors: settings.queues.tx_descriptors,
                mtu: settings.mtu,
                promiscuous: true,
            };
            let port = Port::start(info, config, pool)?;
            ports.push(port);
            roles.push(setting.role);
            interfaces.push(setting.interface_name());
        }

        let rx_queues: Vec<(PortId, u16)> = ports
            .iter()
            .map(|p| (p.id(), p.config().rx_queues))
            .collect();
        let assignment = assign_rx_queues(&rx_queues, workers);
        let workers = lcores
            .into_iter()
            .zip(assignment)
            .enumerate()
            .map(|(index, (lcore, rx))| WorkerPlan {
                index,
                lcore,
                rx,
                #[allow(clippy::cast_possible_truncation)] // workers fit u16, checked above
                tx_queue: QueueId(index as u16),
            })
            .collect::<Vec<_>>();
        // Worker state (connection tables, counters) is allocated by each worker on its own
        // lcore, so it is local to the worker's socket; buffers are local to the port's. A worker
        // polling a port on another socket crosses the interconnect for every packet.
        for w in &workers {
            for (port, queue) in &w.rx {
                let port_socket = ports
                    .iter()
                    .find(|p| p.id() == *port)
                    .map_or(-1, |p| p.info().socket);
                if port_socket >= 0 && i64::from(port_socket) != i64::from(w.lcore.socket()) {
                    tracing::warn!(
                        "worker {} (lcore {}, socket {}) polls {port} queue {} on socket \
                         {port_socket}: give it an lcore on socket {port_socket} (-l)",
                        w.index,
                        w.lcore.0,
                        w.lcore.socket(),
                        queue.0
                    );
                }
            }
        }
        // Symmetric RSS sends a connection to the same queue index on every port; that is the
        // same worker only if the multi-queue ports have the same number of queues.
        let mut multi: Vec<u16> = rx_queues.iter().map(|r| r.1).filter(|&q| q > 1).collect();
        multi.sort_unstable();
        multi.dedup();
        if multi.len() > 1 {
            tracing::warn!(
                "multi-queue ports have different RX queue counts ({multi:?}): a connection seen \
                 on two ports may reach two workers"
            );
        }

        Ok(Self {
            ports,
            roles,
            interfaces,
            workers,
            pools: pools.into_iter().map(|(_, p)| p).collect(),
            eal,
        })
    }

    /// Waits up to `timeout` for every port's link to come up; returns whether they all did.
    pub fn wait_for_links(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ports.iter().all(|p| p.link().up) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            dpdk::nap(Duration::from_millis(50));
        }
    }

    /// A human-readable description of ports and workers, one line each.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (port, role) in self.ports.iter().zip(&self.roles) {
            let i = port.info();
            let c = port.config();
            lines.push(format!(
                "port {} {} ({}) role={} interface={} socket={} mac={} rxq={} txq={} rxd={} txd={} {} link {}",
                i.id.0,
                i.name,
                i.driver,
                role,
                self.interfaces.get(usize::from(i.id.0)).cloned().flatten().unwrap_or_else(|| "-".into()),
                i.socket,
                i.mac_string(),
                c.rx_queues,
                c.tx_queues,
                c.rx_descriptors,
                c.tx_descriptors,
                port.features(),
                port.link(),
            ));
        }
        for w in &self.workers {
            let rx: Vec<String> =
                w.rx.iter()
                    .map(|(p, q)| format!("{}/{}", p.0, q.0))
                    .collect();
            lines.push(format!(
                "worker {} on lcore {} (socket {}): rx [{}] txq {}",
                w.index,
                w.lcore.0,
                w.lcore.socket(),
                rx.join(" "),
                w.tx_queue.0
            ));
        }
        for pool in &self.pools {
            lines.push(format!(
                "mempool {}: {} buffers free",
                pool.name(),
                pool.available()
            ));
        }
        lines
    }

    /// The name of the mempool of each port (in port order): where a worker allocates the
    /// frames the appliance originates (the neighbour resolver's requests and announcements).
    pub fn pool_names(&self) -> Vec<std::ffi::CString> {
        self.ports
            .iter()
            .map(|p| std::ffi::CString::new(pool_name(p.info().numa_socket())).unwrap_or_default())
            .collect()
    }

    /// How the pipeline sees the ports: the interface bound to each, and the backend-facing and
    /// kernel ports (the first of each role).
    pub fn port_map(&self) -> PortMap {
        let first = |role: PortRole| {
            self.roles
                .iter()
                .position(|&r| r == role)
                .and_then(|i| PortIndex::try_from(i).ok())
        };
        PortMap {
            interface: self.interfaces.clone(),
            backend: first(PortRole::Backend),
            kernel: first(PortRole::Kernel),
        }
    }

    /// The EAL this appliance runs on.
    pub fn eal(&self) -> &Eal {
        &self.eal
    }
}

/// A port's link changed state (seen by [`LinkWatch::poll`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub port: PortId,
    pub name: String,
    pub status: LinkStatus,
    /// Changes seen on this port since start, this one included.
    pub changes: u64,
}

/// Watches every port's link from the main lcore (`rte_eth_link_get_nowait`, every
/// [`LinkWatch::INTERVAL`]), logs each change and hands it back to be reported to the control
/// plane. Workers never look at links: a port whose link is down simply receives nothing, and
/// TX to it fails and is counted as a drop.
#[derive(Debug)]
pub struct LinkWatch {
    last: Vec<LinkStatus>,
    changes: Vec<u64>,
    next: Instant,
}

impl LinkWatch {
    /// How often links are read: often enough to report a cable pull within a tenth of a
    /// second, rarely enough that drivers which read PHY registers cost nothing noticeable.
    pub const INTERVAL: Duration = Duration::from_millis(100);

    /// Starts from the links as they are now.
    pub fn new(app: &Appliance) -> Self {
        Self {
            last: app.ports.iter().map(Port::link).collect(),
            changes: vec![0; app.ports.len()],
            next: Instant::now() + Self::INTERVAL,
        }
    }

    /// Reads the links if [`Self::INTERVAL`] has passed; returns the ports whose link went up or
    /// down (speed or duplex changes alone are not reported).
    pub fn poll(&mut self, app: &Appliance) -> Vec<LinkChange> {
        let now = Instant::now();
        if now < self.next {
            return Vec::new();
        }
        self.next = now + Self::INTERVAL;
        let mut out = Vec::new();
        for (i, port) in app.ports.iter().enumerate() {
            let status = port.link();
            let Some(last) = self.last.get_mut(i) else {
                continue;
            };
            if status.up == last.up {
                *last = status;
                continue;
            }
            *last = status;
            self.changes[i] += 1;
            let name = port.info().name.clone();
            if status.up {
                tracing::info!("{} ({name}): link {status}", port.id());
            } else {
                tracing::warn!("{} ({name}): link down", port.id());
            }
            out.push(LinkChange {
                port: port.id(),
                name,
                status,
                changes: self.changes[i],
            });
        }
        out
    }

    /// Link changes seen per port, in port order.
    pub fn changes(&self) -> &[u64] {
        &self.changes
    }
}

/// The names of the Ethernet vdevs (`net_*`) asked for with `--vdev`, so that a device the EAL
/// failed to probe is an error rather than a silently missing port.
pub fn requested_net_vdevs(eal_args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = eal_args.iter();
    while let Some(a) = args.next() {
        let spec = if let Some(v) = a.strip_prefix("--vdev=") {
            Some(v.to_owned())
        } else if a == "--vdev" {
            args.next().cloned()
        } else {
            None
        };
        if let Some(spec) = spec {
            let name = spec.split(',').next().unwrap_or_default();
            if name.starts_with("net_") {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// Buffers the RX/TX rings and worker bursts can hold at once.
fn mbufs_needed(settings: &Settings, ports: &[(PortInfo, PortSetting)], workers: usize) -> u64 {
    let w = workers as u64;
    let per_port = u64::from(settings.queues.rx_descriptors) * w
        + u64::from(settings.queues.tx_descriptors) * w;
    let per_worker = (BURST_SIZE as u64) * 2 + u64::from(settings.mempool.cache);
    per_port * ports.len() as u64 + per_worker * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_q_of_every_port_goes_to_worker_q() {
        let plan = assign_rx_queues(&[(PortId(0), 2), (PortId(1), 2)], 2);
        assert_eq!(
            plan[0],
            vec![(PortId(0), QueueId(0)), (PortId(1), QueueId(0))]
        );
        assert_eq!(
            plan[1],
            vec![(PortId(0), QueueId(1)), (PortId(1), QueueId(1))]
        );
    }

    #[test]
    fn single_queue_ports_are_spread() {
        let plan = assign_rx_queues(&[(PortId(0), 1), (PortId(1), 1), (PortId(2), 1)], 2);
        assert_eq!(
            plan[0],
            vec![(PortId(0), QueueId(0)), (PortId(2), QueueId(0))]
        );
        assert_eq!(plan[1], vec![(PortId(1), QueueId(0))]);
    }

    #[test]
    fn vdev_names_are_read_from_eal_args() {
        let args: Vec<String> = [
            "-l",
            "0-1",
            "--vdev=net_pcap0,rx_pcap=a.pcap",
            "--vdev",
            "net_null1",
            "--vdev=crypto_null",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(requested_net_vdevs(&args), vec!["net_pcap0", "net_null1"]);
    }

    #[test]
    fn every_queue_is_polled_exactly_once() {
        let ports: Vec<(PortId, u16)> = (0..5).map(|p| (PortId(p), p + 1)).collect();
        for workers in 1..6 {
            let plan = assign_rx_queues(&ports, workers);
            let mut all: Vec<_> = plan.concat();
            all.sort();
            let total: u16 = ports.iter().map(|p| p.1).sum();
            assert_eq!(all.len(), usize::from(total));
            all.dedup();
            assert_eq!(all.len(), usize::from(total));
        }
    }
}
