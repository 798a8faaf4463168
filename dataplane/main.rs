//! `switchyard-dataplane`: the data-plane appliance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use switchyard::appliance::Appliance;
use switchyard::dpdk::PortId;
use switchyard::forward::ForwardWorker;
use switchyard::runner;
use switchyard::settings::Settings;

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
    let report = runner::run(
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
        || {},
    )?;
    for p in &app.ports {
        let s = p.stats();
        println!(
            "port {} {}: rx {} tx {} missed {} rx_errors {} tx_errors {} rx_nombuf {}",
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
    drop(app);
    println!("{}", report.result_line("forward"));
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => forward(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
