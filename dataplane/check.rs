//! `switchyard-dataplane check`: reads the machine and says what stops the data plane from
//! running on it, with the exact fix.
//!
//! Everything comes from files the kernel exports — `/proc/meminfo`, `/proc/mounts`,
//! `/proc/cmdline`, `/sys/kernel/mm/hugepages`, `/sys/devices/system/node`,
//! `/sys/bus/pci/devices`, `/sys/kernel/iommu_groups`, `/sys/module` — read under a root
//! directory (`/` on a real run), so nothing here starts DPDK, touches a device or needs root.
//! Missing files are facts to report ("no NUMA information"), never a panic.
//!
//! A finding is `ok`, `warn` (works, but not as it should on a production server) or `FAIL`
//! (the data plane will not start, or not with these settings); any `FAIL` makes the command
//! exit non-zero.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::flow::{FlowKeyV4, FlowKeyV6, FlowTable, WAYS};
use crate::settings::Settings;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One thing the check found, and how to fix it when it is not `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub area: &'static str,
    pub what: String,
    pub fix: Vec<String>,
}

/// Everything the check found, in the order it looked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, area: &'static str, what: impl Into<String>) {
        self.findings.push(Finding {
            level,
            area,
            what: what.into(),
            fix: Vec::new(),
        });
    }

    fn push_fix(
        &mut self,
        level: Level,
        area: &'static str,
        what: impl Into<String>,
        fix: &[String],
    ) {
        self.findings.push(Finding {
            level,
            area,
            what: what.into(),
            fix: fix.to_vec(),
        });
    }

    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// Whether any finding blocks the data plane.
    pub fn blocking(&self) -> bool {
        self.count(Level::Fail) > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            writeln!(f, "{} {:<10} {}", x.level, x.area, x.what)?;
            for line in &x.fix {
                writeln!(f, "     {:<10} fix: {line}", "")?;
            }
        }
        write!(
            f,
            "RESULT check ok={} warnings={} blocking={}",
            self.count(Level::Ok),
            self.count(Level::Warn),
            self.count(Level::Fail)
        )
    }
}

/// What the check is told about the appliance it should run.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The settings file's contents, when one was given (its ports are looked for).
    pub settings: Option<&'a Settings>,
    /// Worker lcores the operator means to run (flow tables are per worker).
    pub workers: usize,
}

/// The kernel's files, read under `root`.
#[derive(Debug, Clone)]
pub struct Machine {
    root: PathBuf,
}

/// A hugepage size and its pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageSize {
    pub kib: u64,
    pub total: u64,
    pub free: u64,
    /// (node, total, free) per NUMA node, where the kernel says.
    pub per_node: Vec<(u32, u64, u64)>,
    /// Where hugetlbfs with this page size is mounted.
    pub mounts: Vec<String>,
}

/// A PCI network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub address: String,
    pub vendor_device: String,
    pub driver: Option<String>,
    pub numa_node: Option<u32>,
    pub iommu_group: Option<String>,
    /// Kernel interfaces on it (none while a DPDK driver has it).
    pub interfaces: Vec<String>,
}

/// How a NIC's driver binding serves DPDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// vfio-pci, uio_pci_generic or igb_uio: DPDK can take it.
    Dpdk,
    /// mlx4/mlx5: DPDK drives it beside the kernel driver (bifurcated).
    Bifurcated,
    /// A kernel network driver has it.
    Kernel,
    /// No driver bound.
    Unbound,
}

impl Nic {
    pub fn binding(&self) -> Binding {
        match self.driver.as_deref() {
            Some("vfio-pci" | "uio_pci_generic" | "igb_uio") => Binding::Dpdk,
            Some("mlx4_core" | "mlx5_core") => Binding::Bifurcated,
            Some(_) => Binding::Kernel,
            None => Binding::Unbound,
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.parse().ok()
}

fn entries(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(path)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// `4-7,9` → [4, 5, 6, 7, 9]; anything malformed is skipped.
pub fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    if a <= b && b - a < 4096 {
                        out.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// A `pagesize=` mount option (`2M`, `1G`, `2048k`) in KiB.
fn pagesize_kib(option: &str) -> Option<u64> {
    let v = option.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    match unit.to_ascii_uppercase().as_str() {
        "K" | "KB" => Some(n),
        "M" | "MB" => Some(n * 1024),
        "G" | "GB" => Some(n * 1024 * 1024),
        "" => Some(n / 1024),
        _ => None,
    }
}

/// Whether a settings device name is a PCI address (`0000:3b:00.0` or `3b:00.0`).
pub fn is_pci_address(name: &str) -> bool {
    normalise_pci(name).is_some()
}

/// `3b:00.0` → `0000:3b:00.0`; lower-case; `None` if it is not a PCI address.
pub fn normalise_pci(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split(':').collect();
    let (domain, bus, rest) = match parts.as_slice() {
        [d, b, r] => (*d, *b, *r),
        [b, r] => ("0000", *b, *r),
        _ => return None,
    };
    let (dev, func) = rest.split_once('.')?;
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && func.len() == 1) {
        return None;
    }
    if !matches!(func.chars().next(), Some('0'..='7')) {
        return None;
    }
    Some(format!("{domain}:{bus}:{dev}.{func}"))
}

impl Machine {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    pub fn cmdline(&self) -> String {
        read(&self.path("/proc/cmdline")).unwrap_or_default()
    }

    /// A `/proc/meminfo` value in KiB.
    pub fn meminfo_kib(&self, key: &str) -> Option<u64> {
        let text = read(&self.path("/proc/meminfo"))?;
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    pub fn numa_nodes(&self) -> Vec<u32> {
        entries(&self.path("/sys/devices/system/node"))
            .iter()
            .filter_map(|n| n.strip_prefix("node")?.parse().ok())
            .collect()
    }

    pub fn hugepages(&self) -> Vec<HugepageSize> {
        let mounts = read(&self.path("/proc/mounts")).unwrap_or_default();
        let default_kib = self.meminfo_kib("Hugepagesize");
        let nodes = self.numa_nodes();
        let mut out = Vec::new();
        for dir in entries(&self.path("/sys/kernel/mm/hugepages")) {
            let Some(kib) = dir
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let base = self.path("/sys/kernel/mm/hugepages").join(&dir);
            let per_node = nodes
                .iter()
                .filter_map(|&n| {
                    let d = self
                        .path("/sys/devices/system/node")
                        .join(format!("node{n}/hugepages/{dir}"));
                    Some((
                        n,
                        read_u64(&d.join("nr_hugepages"))?,
                        read_u64(&d.join("free_hugepages"))?,
                    ))
                })
                .collect();
            let mount_points = mounts
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if f.get(2) != Some(&"hugetlbfs") {
                        return None;
                    }
                    let size = f
                        .get(3)?
                        .split(',')
                        .find_map(|o| o.strip_prefix("pagesize="))
                        .and_then(pagesize_kib)
                        .or(default_kib)?;
                    if size == kib {
                        f.get(1).map(|m| (*m).to_owned())
                    } else {
                        None
                    }
                })
                .collect();
            out.push(HugepageSize {
                kib,
                total: read_u64(&base.join("nr_hugepages")).unwrap_or(0),
                free: read_u64(&base.join("free_hugepages")).unwrap_or(0),
                per_node,
                mounts: mount_points,
            });
        }
        out
    }

    /// PCI devices of class 0x02 (network controllers).
    pub fn nics(&self) -> Vec<Nic> {
        let base = self.path("/sys/bus/pci/devices");
        let mut out = Vec::new();
        for address in entries(&base) {
            let dev = base.join(&address);
            let class = read(&dev.join("class")).unwrap_or_default();
            if !class.starts_with("0x02") {
                continue;
            }
            let vendor = read(&dev.join("vendor")).unwrap_or_default();
            let device = read(&dev.join("device")).unwrap_or_default();
            let mut interfaces = entries(&dev.join("net"));
            // virtio-net hangs its interface off the virtio child device.
            for child in entries(&dev).iter().filter(|c| c.starts_with("virtio")) {
                interfaces.extend(entries(&dev.join(child).join("net")));
            }
            out.push(Nic {
                address,
                vendor_device: format!(
                    "{}:{}",
                    vendor.trim_start_matches("0x"),
                    device.trim_start_matches("0x")
                ),
                driver: link_name(&dev.join("driver")),
                numa_node: read(&dev.join("numa_node")).and_then(|s| s.parse().ok()),
                iommu_group: link_name(&dev.join("iommu_group")),
                interfaces,
            });
        }
        out
    }

    pub fn iommu_groups(&self) -> usize {
        entries(&self.path("/sys/kernel/iommu_groups")).len()
    }

    pub fn module_loaded(&self, name: &str) -> bool {
        self.path("/sys/module").join(name).exists()
            || self.path("/sys/bus/pci/drivers").join(name).exists()
    }

    pub fn kernel_release(&self) -> String {
        read(&self.path("/proc/sys/kernel/osrelease")).unwrap_or_default()
    }

    /// Whether the running kernel can load vfio-pci (built in or a module); `None` when it has
    /// no module tree to look in.
    pub fn vfio_module_available(&self) -> Option<bool> {
        let dir = self.path("/lib/modules").join(self.kernel_release());
        if !dir.is_dir() {
            return None;
        }
        let listed = |file: &str| {
            read(&dir.join(file)).is_some_and(|t| {
                t.lines()
                    .any(|l| l.contains("/vfio-pci.ko") || l.contains("/vfio_pci.ko"))
            })
        };
        Some(listed("modules.builtin") || listed("modules.dep"))
    }

    pub fn noiommu_mode(&self) -> bool {
        read(&self.path("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"))
            .is_some_and(|v| v == "Y" || v == "1")
    }

    pub fn online_cpus(&self) -> Vec<u32> {
        read(&self.path("/sys/devices/system/cpu/online"))
            .map(|s| parse_cpu_list(&s))
            .unwrap_or_default()
    }

    pub fn isolated_cpus(&self) -> Vec<u32> {
        read(&self.path("/sys/devices/system/cpu/isolated"))
            .map(|s| parse_cpu_list(&s))
            .unwrap_or_default()
    }

    fn cpu_vendor(&self) -> String {
        read(&self.path("/proc/cpuinfo"))
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "vendor_id").then(|| v.trim().to_owned())
                })
            })
            .unwrap_or_default()
    }
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

/// Hugepage memory one mempool of `mbufs` buffers takes, in KiB: each element is the mbuf
/// header (128 bytes), the data room (headroom included) and the mempool's object header,
/// rounded to a cache line.
pub fn mempool_kib(mbufs: u32, data_room: u16) -> u64 {
    let element = (128 + u64::from(data_room) + 64).div_ceil(64) * 64;
    (u64::from(mbufs) * element).div_ceil(1024)
}

/// Hugepage memory DPDK takes for itself besides the mempools (memzones, rings, per-lcore
/// structures, driver queues), in KiB: a margin, not a measurement.
pub const EAL_OVERHEAD_KIB: u64 = 64 * 1024;

/// Flows a table asked for `flows` really holds: buckets of [`WAYS`] ways, rounded up to a
/// power of two (as `FlowTable::with_seed` allocates them).
pub fn table_capacity(flows: u32) -> u64 {
    (u64::from(flows).div_ceil(WAYS as u64))
        .max(2)
        .next_power_of_two()
        * WAYS as u64
}

/// Connection-table memory per worker, in bytes.
pub fn flow_table_bytes(settings: &Settings) -> u64 {
    table_capacity(settings.flow_table.ipv4_flows) * FlowTable::<FlowKeyV4>::BYTES_PER_FLOW as u64
        + table_capacity(settings.flow_table.ipv6_flows)
            * FlowTable::<FlowKeyV6>::BYTES_PER_FLOW as u64
}

/// Reads the machine and reports.
pub fn check(machine: &Machine, plan: &Plan<'_>) -> Report {
    let mut r = Report::default();
    let defaults = Settings::default();
    let settings = plan.settings.unwrap_or(&defaults);
    let cmdline = machine.cmdline();

    cpus(machine, plan, &cmdline, &mut r);
    let nodes = machine.numa_nodes();
    if nodes.is_empty() {
        r.push(
            Level::Ok,
            "numa",
            "no NUMA information (/sys/devices/system/node): one memory node assumed",
        );
    } else {
        r.push(
            Level::Ok,
            "numa",
            format!(
                "{} node(s): {}",
                nodes.len(),
                nodes
                    .iter()
                    .map(|n| format!("node{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
    hugepages(machine, settings, &mut r);
    frames(settings, &mut r);
    memory(machine, settings, plan.workers, &mut r);
    let nics = machine.nics();
    iommu(machine, &cmdline, &nics, &mut r);
    nic_list(&nics, &nodes, &mut r);
    ports(machine, plan.settings, &nics, &mut r);
    r
}

fn cpus(machine: &Machine, plan: &Plan<'_>, cmdline: &str, r: &mut Report) {
    let online = machine.online_cpus();
    if online.len() < 2 {
        r.push_fix(
            Level::Fail,
            "cpu",
            format!(
                "{} CPU(s) online: the data plane needs two lcores (the main lcore and a worker)",
                online.len()
            ),
            &["run on a machine (or VM) with at least 2 CPUs".into()],
        );
    } else {
        r.push(
            Level::Ok,
            "cpu",
            format!(
                "{} CPUs online; {} worker(s) planned (--workers)",
                online.len(),
                plan.workers
            ),
        );
    }
    let isolated = machine.isolated_cpus();
    let nohz = cmdline
        .split_whitespace()
        .any(|w| w.starts_with("nohz_full="));
    if isolated.is_empty() {
        let last = online.last().copied().unwrap_or(1);
        let first_worker = online.get(1).copied().unwrap_or(1);
        let cores = if first_worker == last {
            last.to_string()
        } else {
            format!("{first_worker}-{last}")
        };
        r.push_fix(
            Level::Warn,
            "cpu",
            "no isolated CPUs (isolcpus=): the kernel schedules other work on the worker cores, \
             which costs latency and throughput",
            &[format!(
                "add `isolcpus={cores} nohz_full={cores} rcu_nocbs={cores}` to \
                 GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot, and give \
                 those cores to the workers (-l 0,{cores})"
            )],
        );
    } else {
        let list: Vec<String> = isolated.iter().map(u32::to_string).collect();
        r.push(
            Level::Ok,
            "cpu",
            format!(
                "isolated CPUs: {}{}; run the workers on them",
                list.join(","),
                if nohz { " (nohz_full set)" } else { "" }
            ),
        );
    }
}

fn hugepages(machine: &Machine, settings: &Settings, r: &mut Report) {
    let sizes = machine.hugepages();
    let need = mempool_kib(settings.mempool.mbufs, settings.mempool.data_room) + EAL_OVERHEAD_KIB;
    let fix_reserve = |kib: u64| {
        let pages = need.div_ceil(kib).max(512);
        vec![
            format!("now: echo {pages} > /sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages"),
            format!(
                "at boot: add `hugepagesz={} hugepages={pages}` to the kernel command line, or \
                 vm.nr_hugepages = {pages} in /etc/sysctl.d/ (2 MiB pages)",
                if kib >= 1024 * 1024 { "1G" } else { "2M" }
            ),
        ]
    };
    if sizes.is_empty() {
        r.push_fix(
            Level::Fail,
            "hugepages",
            "the kernel offers no hugepages (/sys/kernel/mm/hugepages is empty)",
            &[
                "use a kernel built with CONFIG_HUGETLBFS, or run the data plane with `--no-huge -m 512` (slow; tests only)".into(),
            ],
        );
        return;
    }
    let mut free_kib = 0;
    for s in &sizes {
        free_kib += s.free * s.kib;
        let nodes: Vec<String> = s
            .per_node
            .iter()
            .map(|(n, t, f)| format!("node{n} {f}/{t}"))
            .collect();
        let label = if s.kib >= 1024 * 1024 {
            format!("{} GiB", s.kib / (1024 * 1024))
        } else {
            format!("{} MiB", s.kib / 1024)
        };
        let what = format!(
            "{label} pages: {} reserved, {} free ({} MiB free){}; hugetlbfs {}",
            s.total,
            s.free,
            mib(s.free * s.kib),
            if nodes.is_empty() {
                String::new()
            } else {
                format!(", free/reserved per node: {}", nodes.join(" "))
            },
            if s.mounts.is_empty() {
                "not mounted".to_owned()
            } else {
                format!("at {}", s.mounts.join(", "))
            }
        );
        if s.total > 0 && s.mounts.is_empty() {
            r.push_fix(
                Level::Warn,
                "hugepages",
                format!("{what}: only `--in-memory` runs can use them"),
                &[format!(
                    "mkdir -p /dev/hugepages && mount -t hugetlbfs -o pagesize={} nodev /dev/hugepages",
                    if s.kib >= 1024 * 1024 { "1G" } else { "2M" }
                )],
            );
        } else {
            r.push(Level::Ok, "hugepages", what);
        }
    }
    let smallest = sizes.iter().map(|s| s.kib).min().unwrap_or(2048);
    if free_kib < need {
        r.push_fix(
            Level::Fail,
            "hugepages",
            format!(
                "{} MiB of hugepages free, the settings need about {} MiB per NUMA socket with a \
                 port ({} mbufs of {} bytes: {} MiB, plus about {} MiB for DPDK itself)",
                mib(free_kib),
                mib(need),
                settings.mempool.mbufs,
                settings.mempool.data_room,
                mib(mempool_kib(
                    settings.mempool.mbufs,
                    settings.mempool.data_room
                )),
                mib(EAL_OVERHEAD_KIB)
            ),
            &fix_reserve(smallest),
        );
    } else {
        r.push(
            Level::Ok,
            "hugepages",
            format!(
                "{} MiB free covers the mempool of one NUMA socket ({} mbufs: about {} MiB with DPDK's own)",
                mib(free_kib),
                settings.mempool.mbufs,
                mib(need)
            ),
        );
    }
}

/// Whether a frame of the MTU (with Ethernet and two VLAN tags) fits one buffer after the
/// 128-byte headroom: workers drop multi-segment frames.
fn frames(settings: &Settings, r: &mut Report) {
    let room = u32::from(settings.mempool.data_room).saturating_sub(128);
    let Some(mtu) = settings.mtu else {
        r.push(
            Level::Ok,
            "frames",
            format!("device default MTU; a buffer holds frames up to {room} bytes"),
        );
        return;
    };
    let frame = u32::from(mtu) + 14 + 8;
    if frame > room {
        r.push_fix(
            Level::Warn,
            "frames",
            format!(
                "mtu {mtu} allows {frame}-byte frames but a buffer holds {room}: longer frames \
                 are dropped as multi-segment"
            ),
            &[format!(
                "set mempool.data_room to at least {} (and check the hugepage sum again)",
                frame + 128
            )],
        );
    } else {
        r.push(
            Level::Ok,
            "frames",
            format!("mtu {mtu}: {frame}-byte frames fit one {room}-byte buffer"),
        );
    }
}

fn memory(machine: &Machine, settings: &Settings, workers: usize, r: &mut Report) {
    let per_worker = flow_table_bytes(settings);
    let all = per_worker * workers as u64;
    let available = machine.meminfo_kib("MemAvailable").map(|k| k * 1024);
    let what = format!(
        "connection tables: {} MiB per worker ({} IPv4 flows x {} B + {} IPv6 flows x {} B), {} MiB for {workers} worker(s)",
        per_worker >> 20,
        table_capacity(settings.flow_table.ipv4_flows),
        FlowTable::<FlowKeyV4>::BYTES_PER_FLOW,
        table_capacity(settings.flow_table.ipv6_flows),
        FlowTable::<FlowKeyV6>::BYTES_PER_FLOW,
        all >> 20
    );
    match available {
        Some(avail) if avail < all => r.push_fix(
            Level::Fail,
            "memory",
            format!("{what}; only {} MiB available", avail >> 20),
            &["lower flow_table.ipv4_flows / ipv6_flows in the settings, or run fewer workers (docs/APPLIANCE.md, Sizing)".into()],
        ),
        Some(avail) => r.push(
            Level::Ok,
            "memory",
            format!("{what}; {} MiB available", avail >> 20),
        ),
        None => r.push(Level::Warn, "memory", format!("{what}; /proc/meminfo unreadable")),
    }
}

fn iommu(machine: &Machine, cmdline: &str, nics: &[Nic], r: &mut Report) {
    let groups = machine.iommu_groups();
    let vfio = machine.module_loaded("vfio_pci") || machine.module_loaded("vfio-pci");
    let uio = machine.module_loaded("uio_pci_generic") || machine.module_loaded("igb_uio");
    let on_cmdline = cmdline
        .split_whitespace()
        .filter(|w| {
            w.starts_with("intel_iommu=") || w.starts_with("amd_iommu=") || w.starts_with("iommu=")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let vendor_flag = if machine.cpu_vendor().contains("AMD") {
        "amd_iommu=on iommu=pt"
    } else {
        "intel_iommu=on iommu=pt"
    };
    if groups > 0 {
        r.push(
            Level::Ok,
            "iommu",
            format!(
                "enabled: {groups} IOMMU group(s){}",
                if on_cmdline.is_empty() {
                    String::new()
                } else {
                    format!(" (kernel command line: {on_cmdline})")
                }
            ),
        );
    } else if machine.noiommu_mode() {
        r.push_fix(
            Level::Warn,
            "iommu",
            "no IOMMU groups; vfio runs in unsafe no-IOMMU mode (a device can DMA anywhere)",
            &[format!(
                "enable the IOMMU in firmware (VT-d / AMD-Vi) and add `{vendor_flag}` to the kernel command line"
            )],
        );
    } else {
        let needed = nics.iter().any(|n| n.binding() == Binding::Dpdk) || !nics.is_empty();
        r.push_fix(
            if needed { Level::Warn } else { Level::Ok },
            "iommu",
            format!(
                "no IOMMU groups (/sys/kernel/iommu_groups is empty){}: vfio-pci cannot take a NIC",
                if on_cmdline.is_empty() {
                    "; the kernel command line enables none".to_owned()
                } else {
                    format!("; kernel command line has `{on_cmdline}`")
                }
            ),
            &[
                format!(
                    "enable VT-d / AMD-Vi in the firmware, add `{vendor_flag}` to \
                     GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot"
                ),
                "without an IOMMU (VMs without a vIOMMU): modprobe vfio enable_unsafe_noiommu_mode=1 (no DMA isolation)".into(),
            ],
        );
    }
    let mut loaded = Vec::new();
    if vfio {
        loaded.push("vfio-pci");
    }
    if uio {
        loaded.push("uio");
    }
    if loaded.is_empty() {
        let what = match machine.vfio_module_available() {
            Some(true) => "neither vfio-pci nor a uio driver is loaded (vfio-pci is installed): no NIC can be bound for DPDK".to_owned(),
            Some(false) => format!(
                "neither vfio-pci nor a uio driver is loaded, and the running kernel ({}) has no vfio-pci module: no NIC can be bound for DPDK on this kernel",
                machine.kernel_release()
            ),
            None => format!(
                "neither vfio-pci nor a uio driver is loaded, and the running kernel ({}) has no module tree (/lib/modules/{}): no NIC can be bound for DPDK on this kernel",
                machine.kernel_release(),
                machine.kernel_release()
            ),
        };
        let mut fix = vec![
            "modprobe vfio-pci, and at boot: echo vfio-pci > /etc/modules-load.d/vfio-pci.conf"
                .to_owned(),
        ];
        if machine.vfio_module_available() != Some(true) {
            fix.push("run a kernel with CONFIG_VFIO_PCI (Debian's stock kernels have it: apt install linux-image-amd64)".into());
        }
        if cmdline.split_whitespace().any(|w| w == "nomodule") {
            fix.push(
                "the kernel command line has `nomodule`: remove it, or modules cannot load".into(),
            );
        }
        r.push_fix(Level::Warn, "drivers", what, &fix);
    } else {
        r.push(
            Level::Ok,
            "drivers",
            format!("loaded: {}", loaded.join(", ")),
        );
    }
}

fn describe_nic(n: &Nic) -> String {
    format!(
        "{} [{}] driver {}{}{}{}",
        n.address,
        n.vendor_device,
        n.driver.as_deref().unwrap_or("none"),
        n.numa_node
            .map(|s| format!(", node{s}"))
            .unwrap_or_default(),
        n.iommu_group
            .as_deref()
            .map(|g| format!(", IOMMU group {g}"))
            .unwrap_or_else(|| ", no IOMMU group".into()),
        if n.interfaces.is_empty() {
            String::new()
        } else {
            format!(", kernel interface {}", n.interfaces.join(","))
        }
    )
}

fn bind_fix(address: &str) -> Vec<String> {
    vec![
        format!("modprobe vfio-pci && dpdk-devbind.py --bind=vfio-pci {address}   (dpdk-devbind.py: Debian package `dpdk`)"),
        format!(
            "or by hand: echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override; \
             echo {address} > /sys/bus/pci/devices/{address}/driver/unbind; \
             echo {address} > /sys/bus/pci/drivers_probe"
        ),
        "bring its kernel interface down first; never bind the NIC you are logged in through".into(),
    ]
}

fn nic_list(nics: &[Nic], nodes: &[u32], r: &mut Report) {
    if nics.is_empty() {
        r.push(
            Level::Warn,
            "nics",
            "no PCI network device: only virtual devices (--vdev=net_tap0, net_pcap, net_null) can run here",
        );
        return;
    }
    let usable = nics
        .iter()
        .filter(|n| matches!(n.binding(), Binding::Dpdk | Binding::Bifurcated))
        .count();
    for n in nics {
        let (level, note) = match n.binding() {
            Binding::Dpdk => (Level::Ok, "bound for DPDK"),
            Binding::Bifurcated => (Level::Ok, "DPDK drives it beside the kernel driver (mlx)"),
            Binding::Kernel => (Level::Ok, "kernel driver: not available to DPDK"),
            Binding::Unbound => (Level::Ok, "no driver bound"),
        };
        let mut what = format!("{} - {note}", describe_nic(n));
        if n.numa_node.is_none() && nodes.len() > 1 {
            what.push_str(" (the device reports no NUMA node)");
        }
        r.push(level, "nics", what);
    }
    if usable == 0 {
        r.push(
            Level::Warn,
            "nics",
            format!(
                "no DPDK-capable NIC: none of the {} network device(s) is bound to vfio-pci/uio \
                 (or an mlx driver); only virtual devices (--vdev) can run until one is bound",
                nics.len()
            ),
        );
    }
}

fn ports(machine: &Machine, settings: Option<&Settings>, nics: &[Nic], r: &mut Report) {
    let Some(settings) = settings else {
        r.push(
            Level::Ok,
            "ports",
            "no settings file given (--config): configured ports not checked",
        );
        return;
    };
    if settings.ports.is_empty() {
        r.push(
            Level::Ok,
            "ports",
            "the settings list no ports: every port the EAL probes is used",
        );
        return;
    }
    for p in &settings.ports {
        let device = p.device.as_str();
        if let Some(address) = normalise_pci(device) {
            let Some(nic) = nics.iter().find(|n| n.address == address) else {
                let exists = machine.path("/sys/bus/pci/devices").join(&address).exists();
                r.push_fix(
                    Level::Fail,
                    "ports",
                    if exists {
                        format!("{device} ({}): a PCI device, but not a network controller", p.role)
                    } else {
                        format!("{device} ({}): no such PCI device on this machine", p.role)
                    },
                    &["list the machine's NICs with `lspci -D -d ::0200` (or `dpdk-devbind.py --status`) and correct `device:` in the settings".into()],
                );
                continue;
            };
            match nic.binding() {
                Binding::Dpdk => {
                    let vfio_ok = nic.driver.as_deref() != Some("vfio-pci")
                        || nic.iommu_group.is_some()
                        || machine.noiommu_mode();
                    if vfio_ok {
                        r.push(
                            Level::Ok,
                            "ports",
                            format!("{device} ({}): {}", p.role, describe_nic(nic)),
                        );
                    } else {
                        r.push_fix(
                            Level::Fail,
                            "ports",
                            format!(
                                "{device} ({}): bound to vfio-pci but in no IOMMU group",
                                p.role
                            ),
                            &[
                                "enable the IOMMU (see `iommu` above) or vfio's no-IOMMU mode"
                                    .into(),
                            ],
                        );
                    }
                }
                Binding::Bifurcated => r.push(
                    Level::Ok,
                    "ports",
                    format!(
                        "{device} ({}): {} (bifurcated: needs rdma-core / libibverbs)",
                        p.role,
                        describe_nic(nic)
                    ),
                ),
                Binding::Kernel | Binding::Unbound => r.push_fix(
                    Level::Fail,
                    "ports",
                    format!(
                        "{device} ({}): {} - DPDK cannot use it until it is bound to vfio-pci",
                        p.role,
                        describe_nic(nic)
                    ),
                    &bind_fix(&address),
                ),
            }
        } else if device.starts_with("net_tap") {
            if machine.path("/dev/net/tun").exists() {
                r.push(
                    Level::Ok,
                    "ports",
                    format!("{device} ({}): virtual tap device (/dev/net/tun present); pass --vdev={device},iface=NAME", p.role),
                );
            } else {
                r.push_fix(
                    Level::Fail,
                    "ports",
                    format!("{device} ({}): /dev/net/tun is missing", p.role),
                    &["modprobe tun".into()],
                );
            }
        } else {
            r.push(
                Level::Ok,
                "ports",
                format!(
                    "{device} ({}): virtual device; pass --vdev={device},... to the EAL",
                    p.role
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert_eq!(
            normalise_pci("0000:3B:00.0").as_deref(),
            Some("0000:3b:00.0")
        );
        assert_eq!(normalise_pci("3b:00.1").as_deref(), Some("0000:3b:00.1"));
        for bad in [
            "net_tap0",
            "3b:00",
            "3b:00.8",
            "00:3b:00.0",
            "0000:3b:0g.0",
            "",
        ] {
            assert_eq!(normalise_pci(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("3-1,x,7"), vec![7]);
    }

    #[test]
    fn tables_round_to_power_of_two_buckets() {
        assert_eq!(table_capacity(2 << 20), 2 << 20);
        assert_eq!(table_capacity(1_000_000), 1 << 20);
        assert_eq!(table_capacity(16), 16);
    }

    #[test]
    fn mempool_sizes() {
        // 32767 buffers of 2176 bytes + 128 header + 64 object header = 2368 bytes each.
        assert_eq!(mempool_kib(32_767, 2176), (32_767 * 2368u64).div_ceil(1024));
        assert_eq!(pagesize_kib("2M"), Some(2048));
        assert_eq!(pagesize_kib("1G"), Some(1024 * 1024));
    }

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn symlink(root: &Path, path: &str, target: &str) {
        let p = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// A server's sysfs as the kernel lays it out: one NIC on vfio-pci in IOMMU group 12, one on
    /// ice with interface ens2f1, 2 MiB pages on two nodes.
    fn server(root: &Path) {
        write(
            root,
            "/proc/cmdline",
            "BOOT_IMAGE=/vmlinuz intel_iommu=on iommu=pt isolcpus=2-7",
        );
        write(
            root,
            "/proc/meminfo",
            "MemAvailable:   65536000 kB\nHugepagesize:       2048 kB\n",
        );
        write(
            root,
            "/proc/mounts",
            "nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
        );
        write(root, "/proc/cpuinfo", "vendor_id\t: GenuineIntel\n");
        write(root, "/sys/devices/system/cpu/online", "0-7");
        write(root, "/sys/devices/system/cpu/isolated", "2-7");
        for n in 0..2 {
            write(
                root,
                &format!(
                    "/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages"
                ),
                "512",
            );
            write(
                root,
                &format!(
                    "/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/free_hugepages"
                ),
                "500",
            );
        }
        write(
            root,
            "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "1024",
        );
        write(
            root,
            "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "1000",
        );
        for (addr, drv, group) in [
            ("0000:3b:00.0", "vfio-pci", Some("12")),
            ("0000:3b:00.1", "ice", Some("13")),
        ] {
            let d = format!("/sys/bus/pci/devices/{addr}");
            write(root, &format!("{d}/class"), "0x020000");
            write(root, &format!("{d}/vendor"), "0x8086");
            write(root, &format!("{d}/device"), "0x1592");
            write(root, &format!("{d}/numa_node"), "0");
            symlink(
                root,
                &format!("{d}/driver"),
                &format!("../../../bus/pci/drivers/{drv}"),
            );
            if let Some(g) = group {
                symlink(
                    root,
                    &format!("{d}/iommu_group"),
                    &format!("../../../kernel/iommu_groups/{g}"),
                );
                fs::create_dir_all(root.join(format!("sys/kernel/iommu_groups/{g}"))).unwrap();
            }
        }
        fs::create_dir_all(root.join("sys/bus/pci/devices/0000:3b:00.1/net/ens2f1")).unwrap();
        fs::create_dir_all(root.join("sys/module/vfio_pci")).unwrap();
    }

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-check-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_server_with_a_bound_nic_passes_and_a_kernel_bound_port_fails_with_the_bind_command() {
        let root = temp_root("server");
        server(&root);
        let m = Machine::new(&root);
        let nics = m.nics();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].binding(), Binding::Dpdk);
        assert_eq!(nics[0].iommu_group.as_deref(), Some("12"));
        assert_eq!(nics[1].interfaces, vec!["ens2f1"]);
        let hp = m.hugepages();
        assert_eq!(hp[0].per_node, vec![(0, 512, 500), (1, 512, 500)]);
        assert_eq!(hp[0].mounts, vec!["/dev/hugepages"]);

        let good =
            Settings::parse("ports:\n  - { device: 3b:00.0, role: uplink }\n", "s.yaml").unwrap();
        let report = check(
            &m,
            &Plan {
                settings: Some(&good),
                workers: 6,
            },
        );
        assert!(!report.blocking(), "{report}");
        let text = report.to_string();
        assert!(text.contains("enabled: 2 IOMMU group(s)"), "{text}");
        assert!(text.contains("isolated CPUs: 2,3,4,5,6,7"), "{text}");

        let jumbo = Settings::parse("mtu: 9000\n", "s.yaml").unwrap();
        let text = check(
            &m,
            &Plan {
                settings: Some(&jumbo),
                workers: 6,
            },
        )
        .to_string();
        assert!(
            text.contains(
                "warn frames     mtu 9000 allows 9022-byte frames but a buffer holds 2048"
            ) && text.contains("set mempool.data_room to at least 9150"),
            "{text}"
        );

        let bad = Settings::parse(
            "ports:\n  - { device: 0000:3b:00.1 }\n  - { device: 0000:5e:00.0, role: backend }\n",
            "s.yaml",
        )
        .unwrap();
        let report = check(
            &m,
            &Plan {
                settings: Some(&bad),
                workers: 6,
            },
        );
        assert!(report.blocking());
        let text = report.to_string();
        assert!(
            text.contains("0000:3b:00.1 (uplink): 0000:3b:00.1 [8086:1592] driver ice"),
            "{text}"
        );
        assert!(
            text.contains("dpdk-devbind.py --bind=vfio-pci 0000:3b:00.1"),
            "{text}"
        );
        assert!(
            text.contains("0000:5e:00.0 (backend): no such PCI device"),
            "{text}"
        );
        assert_eq!(report.count(Level::Fail), 2, "{text}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn no_hugepages_and_too_big_flow_tables_block() {
        let root = temp_root("bare");
        server(&root);
        write(
            &root,
            "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "0",
        );
        write(
            &root,
            "/proc/meminfo",
            "MemAvailable:   524288 kB\nHugepagesize:       2048 kB\n",
        );
        let m = Machine::new(&root);
        let report = check(
            &m,
            &Plan {
                settings: None,
                workers: 8,
            },
        );
        let text = report.to_string();
        assert!(
            text.contains("FAIL hugepages  0 MiB of hugepages free"),
            "{text}"
        );
        assert!(
            text.contains("echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
            "{text}"
        );
        // Defaults: 2 Mi IPv4 x 40 B + 512 Ki IPv6 x 72 B = 116 MiB per worker, 928 MiB for 8.
        assert!(
            text.contains("FAIL memory     connection tables: 116 MiB per worker"),
            "{text}"
        );
        assert!(report.blocking());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_empty_root_is_reported_not_a_panic() {
        let root = temp_root("empty");
        fs::create_dir_all(&root).unwrap();
        let report = check(
            &Machine::new(&root),
            &Plan {
                settings: None,
                workers: 1,
            },
        );
        assert!(report.blocking(), "{report}");
        let text = report.to_string();
        assert!(text.contains("no PCI network device"), "{text}");
        let _ = fs::remove_dir_all(&root);
    }
}
