//! `switchyard-dataplane`: the data-plane appliance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use switchyard::appliance::{Appliance, LinkWatch};
use switchyard::control_channel::ControlChannel;
use switchyard::dpdk::PortId;
use switchyard::flow::{FlowKeyV4, FlowKeyV6, FlowTable, InsertLimit};
use switchyard::forward::ForwardWorker;
use switchyard::launch;
use switchyard::neighbour::{self, Resolver};
use switchyard::pipeline::{Counter, PipelineWorker, WorkerConfig};
use switchyard::poll::{Originated, PollLoop};
use switchyard::query::QueryBoard;
use switchyard::settings::Settings;
use switchyard::stats::CounterBoard;
use switchyard::swap::GenerationCell;
use switchyard_table::generation::Generation;
use switchyard_table::shm::message::{EVENT_LINK_DOWN, EVENT_LINK_UP};

/// Switchyard data plane: pinned poll-mode workers on DPDK ports.
///
/// EAL arguments follow `--`, as with every DPDK application, for example:
/// `switchyard-dataplane forward --duration 5 -- -l 0-1 --in-memory --vdev=net_null0 --vdev=net_null1`
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move packets RX → TX between paired ports (0↔1, 2↔3, …) with no processing: the baseline.
    Forward(CommonArgs),
    /// Load-balance: run every packet through the pipeline with the table from the control plane
    /// (shared memory) or from a compiled table file.
    Run(RunArgs),
    /// Read this machine (hugepages, NUMA, CPUs, NICs and their drivers, IOMMU, the configured
    /// ports) and say what stops the data plane from running, with the fix. Exits 1 on a
    /// blocking problem. Starts no DPDK and touches no device.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Appliance settings file whose ports, mempool and flow tables are checked.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Workers you mean to run (connection tables are per worker) [default: online CPUs - 1].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Serve a compiled table generation from this file (`switchyard-control compile`) instead
    /// of attaching to the control plane.
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// The shared-memory instance to attach to; the control plane uses the same default.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        conflicts_with = "table"
    )]
    instance: String,
    /// Directory of the control segment and generation files, as the control plane's
    /// `--shm-dir` [default: $SWITCHYARD_SHM_DIR, else /dev/shm].
    #[arg(long, value_name = "DIR", conflicts_with = "table")]
    shm_dir: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Appliance settings file (YAML; see docs/APPLIANCE.md). Flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds between rate lines.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    stats_interval: f64,
    /// RX descriptors per queue.
    #[arg(long, value_name = "N")]
    rx_desc: Option<u16>,
    /// TX descriptors per queue.
    #[arg(long, value_name = "N")]
    tx_desc: Option<u16>,
    /// Packet buffers per NUMA socket.
    #[arg(long, value_name = "N")]
    mbufs: Option<u32>,
    /// Layer-3 MTU of every port.
    #[arg(long)]
    mtu: Option<u16>,
    /// EAL arguments (after `--`).
    #[arg(last = true, value_name = "EAL ARGS")]
    eal: Vec<String>,
}

impl CommonArgs {
    fn settings(&self) -> Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        if let Some(v) = self.rx_desc {
            s.queues.rx_descriptors = v;
        }
        if let Some(v) = self.tx_desc {
            s.queues.tx_descriptors = v;
        }
        if let Some(v) = self.mbufs {
            s.mempool.mbufs = v;
        }
        if self.mtu.is_some() {
            s.mtu = self.mtu;
        }
        s.validate()
            .context("invalid settings from the command line")?;
        Ok(s)
    }

    fn duration(&self) -> Result<Option<Duration>> {
        self.duration
            .map(|d| {
                Duration::try_from_secs_f64(d)
                    .context("--duration must be a positive number of seconds")
            })
            .transpose()
    }

    fn interval(&self) -> Result<Duration> {
        Duration::try_from_secs_f64(self.stats_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--stats-interval must be a positive number of seconds")
    }
}

/// SIGINT and SIGTERM set the stop flag; a second one exits at once.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn forward(args: &CommonArgs) -> Result<()> {
    let settings = args.settings()?;
    let duration = args.duration()?;
    let interval = args.interval()?;
    let stop = stop_flag()?;
    let app = Appliance::start(&settings, &args.eal)?;
    if !app.wait_for_links(Duration::from_secs(3)) {
        tracing::warn!("not every link is up after 3 s; forwarding anyway");
    }
    for line in app.describe() {
        println!("{line}");
    }
    let ports: Vec<PortId> = app.ports.iter().map(|p| p.id()).collect();
    let mut links = LinkWatch::new(&app);
    let report = launch::run_workers(
        &app,
        "forward",
        duration,
        interval,
        &stop,
        |plan, counters, stop| {
            let worker = ForwardWorker::new(plan, &ports, settings.tx_retries);
            let index = plan.index;
            move || worker.run(counters.worker(index), &stop)
        },
        |_| {
            links.poll(&app);
        },
    )?;
    print_port_stats(&app, &links);
    drop(app);
    println!("{}", report.result_line("forward"));
    Ok(())
}

/// Reads and validates a compiled table file before any device is touched.
fn load_table(path: &std::path::Path) -> Result<Generation> {
    let blob = std::fs::read(path)
        .with_context(|| format!("cannot read table file {}", path.display()))?;
    Generation::decode(&blob).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a usable table generation: {e} ({})",
            path.display(),
            e.name()
        )
    })
}

fn run(args: &RunArgs) -> Result<()> {
    let common = &args.common;
    let settings = common.settings()?;
    let duration = common.duration()?;
    let interval = common.interval()?;
    let stop = stop_flag()?;
    let table = args.table.as_deref().map(load_table).transpose()?;
    // Claim the instance before the EAL starts: a second data plane on the same instance fails
    // here, without probing devices or touching ports the first one is using.
    let attached = match table {
        Some(_) => None,
        None => {
            let dir = args
                .shm_dir
                .clone()
                .unwrap_or_else(switchyard_table::shm::shm_dir);
            Some(
                ControlChannel::attach_in(&dir, &args.instance).with_context(|| {
                    format!(
                        "cannot attach to the control plane's shared memory (instance {} in {})",
                        args.instance,
                        dir.display()
                    )
                })?,
            )
        }
    };
    let app = Appliance::start(&settings, &common.eal)?;
    if !app.wait_for_links(Duration::from_secs(3)) {
        tracing::warn!("not every link is up after 3 s; running anyway");
    }
    for line in app.describe() {
        println!("{line}");
    }
    let workers = app.workers.len();
    let cell = Arc::new(GenerationCell::new(workers));
    let mut channel = match table {
        Some(g) => {
            println!(
                "table: generation {} from {}",
                g.generation,
                args.table
                    .as_deref()
                    .unwrap_or_else(|| std::path::Path::new("-"))
                    .display()
            );
            cell.publish(Arc::new(g));
            None
        }
        None => {
            let mut ch = attached.context("the control channel was not attached")?;
            let names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
            ch.set_counter_names(&names);
            ch.poll(&cell);
            match cell.current() {
                Some(g) => println!(
                    "table: generation {} from shared memory (instance {})",
                    g.generation, args.instance
                ),
                None => println!(
                    "table: none yet; waiting for the control plane (instance {})",
                    args.instance
                ),
            }
            Some(ch)
        }
    };
    let ports: Vec<PortId> = app.ports.iter().map(|p| p.id()).collect();
    let port_map = app.port_map();
    // Workers write their pipeline counters straight into their rows of the control segment
    // (the control plane reads them there); without a segment, into rows of our own.
    let counters = match channel.as_ref() {
        Some(ch) => CounterBoard::in_segment(ch.counter_rows(), workers),
        None => CounterBoard::local(workers),
    };
    let queries = Arc::new(QueryBoard::new(workers));
    if let Some(ch) = channel.as_mut() {
        ch.set_queries(Arc::clone(&queries));
    }
    let flow_cfg = settings.flow_table;
    let talkers = settings.talkers.config();
    // Gateway resolution: the main lcore resolves, workers read the MACs, worker 0 sends.
    let (resolver_links, worker_neighbours, outbox) = neighbour::links(ports.len());
    let mut resolver = Resolver::new(resolver_links, settings.neighbour.timers())
        .logging(true)
        .announcing(settings.neighbour.announce);
    let outbox = std::cell::Cell::new(Some(Originated {
        outbox,
        pools: app.pool_names(),
    }));
    let mut links = LinkWatch::new(&app);
    let mut last_counter_publish = std::time::Instant::now();
    let report = launch::run_workers(
        &app,
        "run",
        duration,
        interval,
        &stop,
        |plan, totals, stop| {
            let plan = plan.clone();
            let ports = ports.clone();
            let port_map = port_map.clone();
            let cell = Arc::clone(&cell);
            let counters = counters.clone();
            let queries = Arc::clone(&queries);
            let tx_retries = settings.tx_retries;
            let neighbours = worker_neighbours.clone();
            let originated = if plan.index == 0 { outbox.take() } else { None };
            move || {
                // Built on the worker's own lcore so its connection tables are NUMA-local.
                let mut pipeline = PipelineWorker::new(WorkerConfig {
                    flows_v4: flow_cfg.ipv4_flows as usize,
                    flows_v6: flow_cfg.ipv6_flows as usize,
                    insert_limit: InsertLimit {
                        per_second: flow_cfg.insert_rate,
                        burst: (flow_cfg.insert_rate / 10).max(1),
                    },
                    ports: port_map,
                    worker: plan.index,
                });
                pipeline.set_worker_count(workers);
                pipeline.set_neighbours(neighbours);
                pipeline.set_talkers(talkers);
                let (v4, v6) = pipeline.flow_capacity();
                println!(
                    "worker {} flow tables: ipv4 {v4} flows x {} B, ipv6 {v6} flows x {} B, {} bytes",
                    plan.index,
                    FlowTable::<FlowKeyV4>::BYTES_PER_FLOW,
                    FlowTable::<FlowKeyV6>::BYTES_PER_FLOW,
                    pipeline.flow_memory_bytes()
                );
                PollLoop {
                    plan,
                    ports,
                    tx_retries,
                    pipeline,
                    cell,
                    totals,
                    counters,
                    queries,
                    originated,
                }
                .run(&stop)
            }
        },
        |totals| {
            for change in links.poll(&app) {
                if let Some(ch) = channel.as_mut() {
                    let (kind, b) = if change.status.up {
                        (EVENT_LINK_UP, u64::from(change.status.speed_mbps))
                    } else {
                        (EVENT_LINK_DOWN, change.changes)
                    };
                    ch.post_event(kind, u64::from(change.port.0), b);
                }
            }
            resolver.follow(&cell, &port_map);
            if let Some(ch) = channel.as_mut() {
                ch.poll(&cell);
                if last_counter_publish.elapsed() >= Duration::from_millis(100) {
                    last_counter_publish = std::time::Instant::now();
                    for w in 0..workers {
                        let t = totals.worker(w).read();
                        ch.set_worker_totals(w, t.rx, t.dropped);
                    }
                }
            }
        },
    )?;
    print_port_stats(&app, &links);
    for (port, addr, state, mac) in resolver.entries() {
        let mac = mac.map_or_else(|| "-".to_owned(), |m| m.to_string());
        println!(
            "neighbour port {port} gateway {addr} {} {mac}",
            state.name()
        );
    }
    for (name, value) in counters.sum() {
        if value > 0 {
            println!("counter {name} {value}");
        }
    }
    drop(app);
    println!("{}", report.result_line("pipeline"));
    Ok(())
}

fn check(args: &CheckArgs) -> Result<()> {
    use switchyard::check::{check, Machine, Plan};
    let settings = args
        .config
        .as_deref()
        .map(Settings::load)
        .transpose()
        .context("the settings file to check")?;
    let machine = Machine::new("/");
    let workers = args
        .workers
        .unwrap_or_else(|| machine.online_cpus().len().saturating_sub(1))
        .max(1);
    let report = check(
        &machine,
        &Plan {
            settings: settings.as_ref(),
            workers,
        },
    );
    println!("{report}");
    if report.blocking() {
        anyhow::bail!(
            "{} blocking problem(s): see the FAIL lines above",
            report.count(switchyard::check::Level::Fail)
        );
    }
    Ok(())
}

fn print_port_stats(app: &Appliance, links: &LinkWatch) {
    for (p, changes) in app.ports.iter().zip(links.changes()) {
        let s = p.stats();
        println!(
            "port {} {}: rx {} tx {} missed {} rx_errors {} tx_errors {} rx_nombuf {} link_changes {changes}",
            p.id().0,
            p.info().name,
            s.rx_packets,
            s.tx_packets,
            s.rx_missed,
            s.rx_errors,
            s.tx_errors,
            s.rx_nombuf
        );
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => forward(args),
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
