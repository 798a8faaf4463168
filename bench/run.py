#!/usr/bin/python3
"""Runs the benchmark scenarios of ci/bench and writes the report: a table on stdout,
OUT/report.json, PNG plots in OUT/, and the RESULT line last.

    run.py --out DIR --bin DIR --tsc-hz HZ [--target DIR] [--quick] [--rounds N] [--seconds S]
           [--flows N] [--syn-share F] [--ipv6-share F] [--sizes SPEC] [--no-c] [--only NAME,...]

ci/bench builds the binaries (switchyard-dataplane, switchyard-control, bench-data, the C floor
iofwd and tsc_hz in OUT) and runs the Maglev criterion bench first; this script does the rest.

Every rate is measured the same way: a capture written by bench-data (bench/data) replayed forever by
net_pcap (infinite_rx preloads it into mbufs), net_null as the sink, one process at a time,
for a fixed time; the rate is the program's own RESULT line (packets it received and handled
over its run). Scenarios that are compared run alternating, round by round, in the same run,
and the figures that matter are ratios of medians: the machine is shared and noisy.

Scenarios (the default, `headline`, is 1M flows of 64-byte IPv4 TCP frames, one worker; it
always runs: the sweeps compare against it and the RESULT line is its figure):
  headline  C floor, forward baseline and full pipeline, alternating rounds
  workers   forward and pipeline with 1 and 2 workers (the capture split in two, as RSS would)
  flows     forward and pipeline at 1k, 100k, 1M, 4M flows
  backends  pipeline with 10, 100, 1k, 10k backends
  prefixes  pipeline with 100, 10k, 1M geo prefixes (a generated GeoIP database)
  services  pipeline with 1, 100, 1000 services (VIPs), flows spread over them
  mix       forward and pipeline on IMIX sizes, 30% IPv6, 100 services, 10k prefixes
  swap      table swaps under full load: the control plane applies policy changes (one backend
            removed, then restored) while the data plane forwards; publish->live latency per
            swap, packets lost, flows moved
  maglev    Maglev table build times (criterion estimates from control/benches/maglev.rs), and
            the rebuild of N = 1000 on 65537 slots against the paper's loop in C
            (bench/maglev_ref.c, compiled and run here; also N = 100 and 10000 unless --quick)
  memory    resident set, hugepages and flow-table bytes of every data-plane run
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["headline", "workers", "flows", "backends", "prefixes", "services", "mix", "swap", "maglev"]


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Data sets: generated once per parameter set and cached under OUT/data/<key>.


class Dataset:
    def __init__(self, out: str, gen: str, ctl: str, **params):
        self.params = params
        # The directory name ends up in --vdev=net_pcap0,rx_pcap=PATH: no commas in it.
        key = "-".join(f"{k}{v}" for k, v in sorted(params.items())).replace(",", "_").replace("/", "_")
        self.dir = os.path.join(out, "data", key)
        meta_path = os.path.join(self.dir, "meta.json")
        # Written again whenever the generator was rebuilt since.
        stale = not os.path.exists(meta_path) or os.path.getmtime(meta_path) < os.path.getmtime(gen)
        if stale:
            shutil.rmtree(self.dir, ignore_errors=True)
            args = [gen, "--dir", self.dir]
            for k, v in params.items():
                args += ["--" + k.replace("_", "-"), str(v)]
            t = time.monotonic()
            if subprocess.run(args).returncode != 0:
                raise SystemExit(f"bench-data failed for {key} (its message is above): {' '.join(args)}")
            log(f"  generated {key} in {time.monotonic() - t:.1f} s")
        self.meta = json.load(open(meta_path))
        self.pcaps = [os.path.join(self.dir, p) for p in self.meta["pcaps"]]
        self.settings = os.path.join(self.dir, "settings.yaml")
        self.table = os.path.join(self.dir, "table.bin")
        # Compiled every run (the compiler may have changed); its time is a figure of its own.
        t = time.monotonic()
        r = subprocess.run(
            [ctl, "compile", os.path.join(self.dir, "policy.yaml"), "-o", self.table],
            capture_output=True,
            text=True,
        )
        self.compile_seconds = time.monotonic() - t
        if r.returncode != 0:
            raise SystemExit(f"compile failed for {key}:\n{r.stdout}{r.stderr}")
        self.compile_output = r.stdout.strip()
        self.table_bytes = os.path.getsize(self.table)
        # What bench-data wrote into settings.yaml, and the data plane's flow-table insert rate.
        settings = self.meta["settings"]
        self.mbufs = settings["mbufs"]
        self.data_room = settings["data_room"]
        self.insert_rate = settings["insert_rate_per_worker"]


# ---------------------------------------------------------------------------------------------
# One data-plane run, with its memory sampled while it runs.


def meminfo() -> dict:
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def proc_status(pid: int) -> dict:
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def parse_output(text: str):
    """A data-plane program's output: the fields of its last RESULT line (None without one) and
    its `counter NAME VALUE` lines."""
    results = [l for l in text.splitlines() if l.startswith("RESULT ")]
    fields = dict(kv.split("=", 1) for kv in results[-1].split()[1:] if "=" in kv) if results else None
    counters = {m.group(1): int(m.group(2)) for m in re.finditer(r"^counter (\S+) (\d+)$", text, re.M)}
    return fields, counters


def eal_args(ds: Dataset, workers: int) -> list:
    # One worker: lcore 0 (main) on CPU 0, lcore 1 (worker) on CPU 1. Two workers on this 2-CPU
    # machine: the main lcore (which sleeps between 250 us ticks) shares CPU 1 with worker 2.
    lcores = ["-l", "0-1"] if workers == 1 else ["--lcores", "0@1,1@0,2@1"]
    rx = ",".join(f"rx_pcap={p}" for p in ds.pcaps)
    return lcores + [
        "--in-memory",
        "--no-pci",
        f"--vdev=net_pcap0,{rx},infinite_rx=1",
        "--vdev=net_null0,no-rx=1",
    ]


class Runner:
    def __init__(self, args):
        self.a = args
        self.dp = os.path.join(args.bin, "switchyard-dataplane")
        self.ctl = os.path.join(args.bin, "switchyard-control")
        self.gen = os.path.join(args.bin, "bench-data")
        self.iofwd = os.path.join(args.out, "iofwd")
        self.logs = os.path.join(args.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.seq = 0

    def command(self, kind: str, ds: Dataset, workers: int, seconds: float) -> list:
        eal = eal_args(ds, workers)
        if kind == "c_iofwd":
            # Its own EAL prefix: an --in-memory process without one leaves DPDK's default
            # runtime directory (/var/run/dpdk/rte); ci/bench removes this one at exit.
            return [self.iofwd, str(seconds), str(ds.mbufs), "--"] + eal + [
                "--file-prefix=switchyard-bench-iofwd"]
        if kind == "forward":
            return [self.dp, "forward", "--duration", str(seconds), "--config", ds.settings, "--"] + eal
        return [self.dp, "run", "--duration", str(seconds), "--table", ds.table, "--config", ds.settings, "--"] + eal

    def run(self, name: str, kind: str, ds: Dataset, workers: int = 1, seconds: float = None) -> dict:
        # Steady state: the first second is start-up, and a worker inserts new flows at most at
        # the connection table's insert rate (2M/s by default), so with many flows per worker
        # the first seconds carry throttled, stateless forwarding. Those seconds are skipped;
        # the run is lengthened so at least two measured seconds remain.
        per_worker = ds.meta["frames"] / workers
        skip = 1 + int(per_worker // ds.insert_rate)
        seconds = max(seconds or self.a.seconds, skip + 2)
        cmd = self.command(kind, ds, workers, seconds)
        env = dict(os.environ, IOFWD_DATA_ROOM=str(ds.data_room))
        self.seq += 1
        path = os.path.join(self.logs, f"{self.seq:03d}-{name}-{kind}-w{workers}.log")
        huge_before = meminfo()["HugePages_Free"]
        peak = {"VmRSS": 0, "RssAnon": 0, "huge_pages": 0}
        with open(path, "w") as f:
            f.write("# " + " ".join(cmd) + "\n")
            f.flush()
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            while p.poll() is None:
                st = proc_status(p.pid)
                for k in ("VmRSS", "RssAnon"):
                    peak[k] = max(peak[k], st.get(k, 0))
                peak["huge_pages"] = max(peak["huge_pages"], huge_before - meminfo()["HugePages_Free"])
                time.sleep(0.2)
        text = open(path).read()
        r, counters = parse_output(text)
        if p.returncode != 0 or r is None:
            raise SystemExit(f"{name}/{kind} failed (exit {p.returncode}); {path}:\n{text[-3000:]}")
        # The data plane prints `N pps` below 1 Mpps and `F Mpps` above.
        per_second = [float(x) / (1e6 if unit == "pps" else 1.0)
                      for x, unit in re.findall(r"^[\w-]+: rx ([0-9.]+) (M?pps)", text, re.M)]
        # Both programs print one rate line per second of the run.
        steady = per_second[skip:]
        if not steady:
            raise SystemExit(f"{name}/{kind}: fewer than {skip + 1} rate lines in {path}")
        flow_bytes = sum(int(m.group(1)) for m in re.finditer(r"flow tables: .* (\d+) bytes$", text, re.M))
        per_flow = re.search(r"flow tables: ipv4 \d+ flows x (\d+) B, ipv6 \d+ flows x (\d+) B", text)
        out = {
            "mpps": statistics.median(steady),
            "mpps_whole_run": float(r["mpps"]),
            "mpps_per_second": per_second,
            "warmup_seconds_skipped": skip,
            "rx_pkts": int(r["rx_pkts"]),
            "tx_pkts": int(r["tx_pkts"]),
            "dropped": int(r["dropped"]),
            "workers": workers,
            "seconds": seconds,
            "log": path,
            "memory": {
                "peak_rss_bytes": peak["VmRSS"] * 1024,
                "peak_anon_bytes": peak["RssAnon"] * 1024,
                "hugepages_2m": peak["huge_pages"],
                "flow_table_bytes": flow_bytes,
                "bytes_per_flow_v4": int(per_flow.group(1)) if per_flow else None,
                "bytes_per_flow_v6": int(per_flow.group(2)) if per_flow else None,
            },
        }
        if kind == "pipeline":
            out["counters"] = counters
            drops = {k: v for k, v in counters.items() if k.startswith("drop_")}
            if out["tx_pkts"] < 0.99 * out["rx_pkts"] or out["rx_pkts"] == 0:
                raise SystemExit(
                    f"{name}: the pipeline did not forward what it received (traffic does not match "
                    f"the policy): rx {out['rx_pkts']} tx {out['tx_pkts']} {drops}; {path}"
                )
        return out


def median(xs):
    return statistics.median(xs) if xs else None


def rounds(runner: Runner, name: str, plan: list, n: int) -> dict:
    """Runs `plan` ([(label, kind, ds, workers)]) n times, alternating; returns label -> runs."""
    runs = {label: [] for label, *_ in plan}
    for r in range(1, n + 1):
        parts = []
        for label, kind, ds, workers in plan:
            x = runner.run(name, kind, ds, workers)
            runs[label].append(x)
            parts.append(f"{label}={x['mpps']:.3f}")
        log(f"  {name} round {r}: " + " ".join(parts) + " Mpps")
    return runs


def summary(runs: list) -> dict:
    last = runs[-1]
    return {
        "mpps": [x["mpps"] for x in runs],
        "median_mpps": median([x["mpps"] for x in runs]),
        "memory": last["memory"],
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# Table swaps under load: control plane + data plane over shared memory, policy changes applied
# while the pipeline runs flat out.


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def swap_latency(runner: Runner, ds: Dataset, swaps: int) -> dict:
    work = os.path.join(runner.a.out, "swap")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    api = f"127.0.0.1:{free_port()}"
    instance = f"bench{os.getpid()}"
    base = open(os.path.join(ds.dir, "policy.yaml")).read()
    # The swaps alternately remove one backend and put it back: a new Maglev table for its
    # pool, a delta publish, every worker adopting it between two bursts. Flows are sticky:
    # the first removal moves the flows of that backend (about flows / pool size) and nothing
    # else; putting it back moves none, and later removals find no flow left on it.
    line = re.search(r"^ +- \{ address: ([0-9.]+), weight: 100 \}\n", base, re.M)
    if not line:
        raise SystemExit(f"{ds.dir}/policy.yaml: no backend line to remove for the swap scenario")
    removed = line.group(1)
    variants = [base, base[: line.start()] + base[line.end():]]
    pool_size = ds.meta["pools"][0]["backends"] if ds.meta.get("pools") else ds.params["backends"]
    policy = os.path.join(work, "policy.yaml")
    open(policy, "w").write(base)
    if ds.meta.get("geoip_database"):
        shutil.copy(os.path.join(ds.dir, ds.meta["geoip_database"]), work)
    ctl_log_path = os.path.join(work, "control.log")
    # The segment, generation files and rollout state in the scenario's own directory (removed
    # with it), never in /dev/shm where an interrupted run would leave them.
    shm = os.path.join(work, "shm")
    os.makedirs(shm)
    env = dict(os.environ, SWITCHYARD_SHM_DIR=shm)
    ctl = subprocess.Popen(
        [runner.ctl, "run", "--policy", policy, "--instance", instance, "--listen", api],
        stdout=open(ctl_log_path, "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    dp = None

    def fail(what: str) -> None:
        logs = "".join(f"\n--- {p}:\n{open(p).read()[-2000:]}" for p in (ctl_log_path, dp_log_path) if os.path.exists(p))
        raise SystemExit(f"swap: {what}{logs}")

    dp_log_path = os.path.join(work, "dataplane.log")
    try:
        seg = os.path.join(shm, f"switchyard-{instance}.ctl")
        for _ in range(100):
            if os.path.exists(seg) or ctl.poll() is not None:
                break
            time.sleep(0.1)
        if not os.path.exists(seg):
            fail("the control plane did not create its shared memory")
        duration = 6 + swaps * 0.5
        cmd = [runner.dp, "run", "--instance", instance, "--duration", str(duration), "--config", ds.settings, "--"]
        cmd += eal_args(ds, 1)
        dp = subprocess.Popen(cmd, stdout=open(dp_log_path, "w"), stderr=subprocess.STDOUT, env=env)
        for _ in range(100):
            if "table: generation" in open(dp_log_path).read() or dp.poll() is not None:
                break
            time.sleep(0.1)
        if "table: generation" not in open(dp_log_path).read():
            fail("the data plane did not take the control plane's table")
        time.sleep(2)  # flows established, full rate
        latencies, walls = [], []
        for i in range(swaps):
            path = os.path.join(work, f"policy-{i}.yaml")
            open(path, "w").write(variants[(i + 1) % 2])
            t = time.monotonic()
            r = subprocess.run([runner.ctl, "apply", path, "--api", api, "--yes", "--instance", instance, "--shm-dir", shm], capture_output=True, text=True)
            walls.append(time.monotonic() - t)
            m = re.search(r"live on every worker \(publish→live ([0-9.]+) ms\)", r.stdout)
            if r.returncode != 0 or not m:
                fail(f"apply {i} failed:\n{r.stdout}{r.stderr}")
            latencies.append(float(m.group(1)))
            time.sleep(0.2)
        try:
            dp.wait(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            fail(f"the data plane did not stop within {duration + 30:.0f} s")
        r, counters = parse_output(open(dp_log_path).read())
        if dp.returncode != 0 or r is None:
            fail(f"the data plane exited {dp.returncode} without a RESULT line")
    finally:
        for p in (dp, ctl):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    lat = sorted(latencies)
    return {
        "swaps": swaps,
        "publish_to_live_ms": latencies,
        "median_ms": median(lat),
        "p90_ms": lat[min(len(lat) - 1, int(0.9 * len(lat)))],
        "max_ms": lat[-1],
        "apply_wall_ms_median": 1000 * median(walls),
        "rx_pkts": int(r["rx_pkts"]),
        "tx_pkts": int(r["tx_pkts"]),
        "dropped": int(r["dropped"]),
        "mpps": float(r["mpps"]),
        "drop_counters": {k: v for k, v in counters.items() if k.startswith("drop_")},
        "removed_backend": removed,
        "pool_backends": pool_size,
        # Flows rescheduled because their backend left; expected: those on the removed backend.
        "flows_moved": counters.get("flow_backend_gone", 0) + counters.get("flow_backend_unhealthy", 0),
        "flows_on_removed_backend_expected": ds.meta["frames"] // max(1, pool_size),
        "flow_inserts": counters.get("flow_inserts", 0),
    }


# ---------------------------------------------------------------------------------------------
# Maglev build times: criterion's estimates from `cargo bench --bench maglev`.


def maglev_estimates(target: str, group: str = "maglev_build") -> list:
    root = os.path.join(target, "criterion", group)
    out = []
    if not os.path.isdir(root):
        return out
    for size_dir in sorted(os.listdir(root)):
        m = re.fullmatch(r"M=(\d+)", size_dir)
        if not m:
            continue
        for case in sorted(os.listdir(os.path.join(root, size_dir))):
            est = os.path.join(root, size_dir, case, "new", "estimates.json")
            n = re.match(r"N=(\d+)", case)
            if not n or not os.path.exists(est):
                continue
            e = json.load(open(est))
            out.append(
                {
                    "slots": int(m.group(1)),
                    "backends": int(n.group(1)),
                    "case": case,
                    "mean_ms": e["mean"]["point_estimate"] / 1e6,
                    "median_ms": e["median"]["point_estimate"] / 1e6,
                    "age_seconds": time.time() - os.path.getmtime(est),
                }
            )
    out.sort(key=lambda x: (x["backends"], x["slots"], x["case"]))
    return out


# The reference for the rebuild figure: the Maglev paper's population loop written plainly in C
# (bench/maglev_ref.c), compiled here twice (-O3, and -O3 -march=native); the faster of the two is
# the reference. It runs N backends on M = 65537 slots, the key set of control/benches/maglev.rs,
# and prints the median of its rounds; the Rust figure is criterion's median for the same pool
# from this run's `cargo bench` (ci/bench runs it just before this script). Both build the same
# table, which the program's checksum shows (maglev.rs pins it in a test).


def maglev_rebuild(out: str, gen: str, target: str, quick: bool, started_wall: float) -> dict:
    # The pool (N = 1000 on the default table size) and the checksum of the control plane's own
    # table for it, which the C reference must reproduce: bench-data --maglev-reference.
    ref = json.loads(subprocess.run([gen, "--maglev-reference"], capture_output=True, text=True, check=True).stdout)
    slots = ref["slots"]
    src = os.path.join(HERE, "maglev_ref.c")
    builds = {}
    for name, flags in (("O3", ["-O3"]), ("O3 -march=native", ["-O3", "-march=native"])):
        exe = os.path.join(out, "maglev_ref" + ("-native" if "native" in name else ""))
        cmd = ["cc", *flags, "-Wall", "-o", exe, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"maglev: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
        builds[name] = {"exe": exe, "command": " ".join(cmd)}
    rust = {m["backends"]: m for m in maglev_estimates(target) if m["slots"] == slots
            and m["case"] == f"N={m['backends']}"}
    paper = {m["backends"]: m for m in maglev_estimates(target, "maglev_build_paper")}
    sizes = [1000] if quick else [100, 1000, 10_000]
    rounds = 21 if quick else 51
    rows = []
    for n in sizes:
        c = {}
        for name, b in builds.items():
            r = subprocess.run([b["exe"], str(n), str(slots), str(rounds)], capture_output=True, text=True)
            fields, _ = parse_output(r.stdout)
            if r.returncode != 0 or fields is None:
                raise SystemExit(f"maglev: {b['exe']} {n} failed:\n{r.stdout}{r.stderr}")
            c[name] = {"median_us": float(fields["ns_per_build"]) / 1e3, "min_us": float(fields["min_ns"]) / 1e3,
                       "checksum": fields["checksum"]}
        if n == ref["backends"] and any(v["checksum"] != ref["checksum"] for v in c.values()):
            raise SystemExit(f"maglev: the C reference built another table ({c}); the control plane's: {ref['checksum']}")
        best = min(c, key=lambda k: c[k]["median_us"])
        row = {"backends": n, "slots": slots, "rounds": rounds, "c": c, "c_best": best,
               "c_reference_us": c[best]["median_us"]}
        est = rust.get(n)
        # Only this bench run's estimates count: ci/bench runs criterion just before this script,
        # so they are at most minutes older than its start (an hour is the cut-off).
        if est and time.time() - est["age_seconds"] >= started_wall - 3600:
            row["rust_us"] = est["median_ms"] * 1e3
            row["rust_age_seconds"] = est["age_seconds"]
            row["speedup"] = row["c_reference_us"] / row["rust_us"]
        if n in paper and time.time() - paper[n]["age_seconds"] >= started_wall - 3600:
            row["paper_in_rust_us"] = paper[n]["median_ms"] * 1e3
        rows.append(row)
        log(f"  maglev rebuild N={n} M={slots}: " + ", ".join(f"C {k} {v['median_us']:.0f} us" for k, v in c.items())
            + (f", rust {row['rust_us']:.0f} us" if "rust_us" in row else ", no rust estimate from this run"))
    return {"method": "median ns per build; C: bench/maglev_ref.c, rounds as given; rust: criterion median, "
                      "control/benches/maglev.rs maglev_build/M=65537/N=<n>",
            "compilers": {k: v["command"] for k, v in builds.items()},
            "cc_version": subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "rows": rows}


# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def mib(b) -> str:
    return f"{b / 2**20:.1f}" if b is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--target", default="target")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--flows", type=int)
    ap.add_argument("--syn-share", type=float, default=1.0)
    ap.add_argument("--ipv6-share", type=float, default=0.0)
    ap.add_argument("--sizes", default="64", help="64, imix, or a list such as 64x7,576x4,1518x1")
    ap.add_argument("--no-c", action="store_true")
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--tsc-hz", type=float, required=True)
    a = ap.parse_args()
    q = a.quick
    a.rounds = a.rounds or (2 if q else 3)
    a.seconds = a.seconds or (2.0 if q else 5.0)
    a.flows = a.flows or (100_000 if q else 1_000_000)
    sweep_rounds = 1 if q else 2
    only = set(a.only.split(","))
    unknown = only - set(ALL)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; known: {','.join(ALL)}")
    runner = Runner(a)
    started = time.monotonic()
    started_wall = time.time()
    base = dict(flows=a.flows, syn_share=a.syn_share, backends=1000)
    # Only when not the defaults, so the default data sets keep their cache keys.
    if a.ipv6_share:
        base["ipv6_share"] = a.ipv6_share
    if a.sizes != "64":
        base["sizes"] = a.sizes

    def data(**over) -> Dataset:
        return Dataset(a.out, runner.gen, runner.ctl, **dict(base, **over))

    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": os.environ.get("BENCH_GIT", "unknown"),
        "quick": q,
        "machine": {
            "hostname": platform.node(),
            "kernel": platform.release(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "tsc_hz": a.tsc_hz,
            "tsc_method": "rdtsc vs CLOCK_MONOTONIC_RAW over 200 ms, median of 5 (bench/tsc_hz.c)",
            "dpdk": os.environ.get("BENCH_DPDK"),
            "hugepages_total": meminfo()["HugePages_Total"],
        },
        "method": __doc__,
        "traffic": {"flows": a.flows, "syn_share": a.syn_share, "ipv6_share": a.ipv6_share, "sizes": a.sizes,
                    "backends": 1000},
        "rounds": a.rounds,
        "sweep_rounds": sweep_rounds,
        "seconds_per_round": a.seconds,
        "scenarios": {},
    }
    sc = report["scenarios"]

    # Headline: the default scenario, alternating C floor / forward / pipeline.
    frames = "64-byte frames" if a.sizes == "64" else f"frames {a.sizes}"
    v6 = f", {a.ipv6_share:.0%} IPv6" if a.ipv6_share else ""
    log(f"\n== headline: {a.flows} flows, {frames}{v6}, 1 worker, {a.rounds} rounds x {a.seconds:g} s")
    head_ds = data()
    plan = ([("c_iofwd", "c_iofwd", head_ds, 1)] if not a.no_c else []) + [
        ("forward", "forward", head_ds, 1),
        ("pipeline", "pipeline", head_ds, 1),
    ]
    head = rounds(runner, "headline", plan, a.rounds)
    sc["headline"] = {label: summary(runs) for label, runs in head.items()}
    sc["headline"]["dataset"] = head_ds.meta
    fwd1 = sc["headline"]["forward"]["median_mpps"]
    pipe1 = sc["headline"]["pipeline"]["median_mpps"]

    def pair(name, ds, kinds=("forward", "pipeline"), workers=1):
        plan = [(k, k, ds, workers) for k in kinds]
        return {k: summary(v) for k, v in rounds(runner, name, plan, sweep_rounds).items()}

    if "workers" in only:
        log("\n== workers: 1 and 2 workers (capture split in two, one per worker)")
        ds2 = data(queues=2)
        two = pair("workers-2", ds2, workers=2)
        sc["workers"] = {
            "1": {k: sc["headline"][k] for k in ("forward", "pipeline")},
            "2": two,
            "note": "2 CPUs: with 2 workers the main lcore shares CPU 1 with worker 2 (it sleeps between 250 us ticks)",
        }

    if "flows" in only:
        counts = [1000, 100_000] if q else [1000, 100_000, 1_000_000, 4_000_000]
        log(f"\n== flows: {counts}")
        sc["flows"] = {}
        for n in counts:
            if n == a.flows:
                sc["flows"][str(n)] = {k: sc["headline"][k] for k in ("forward", "pipeline")}
                continue
            sc["flows"][str(n)] = pair(f"flows-{n}", data(flows=n))

    sweep_fwd = fwd1  # the forward baseline of the base capture (same frames, same count)

    def sweep(name, key, values, default):
        log(f"\n== {name}: {values} (pipeline; forward baseline {sweep_fwd:.3f} Mpps from the headline)")
        out = {}
        for v in values:
            if v == default:
                out[str(v)] = {"pipeline": sc["headline"]["pipeline"], "compile_seconds": head_ds.compile_seconds,
                               "table_bytes": head_ds.table_bytes}
                continue
            ds = data(**{key: v})
            r = pair(f"{name}-{v}", ds, kinds=("pipeline",))
            r["compile_seconds"] = ds.compile_seconds
            r["table_bytes"] = ds.table_bytes
            out[str(v)] = r
        return out

    if "backends" in only:
        sc["backends"] = sweep("backends", "backends", [10, 1000] if q else [10, 100, 1000, 10_000], 1000)
    if "prefixes" in only:
        sc["prefixes"] = sweep("prefixes", "prefixes", [100, 10_000] if q else [100, 10_000, 1_048_576], None)
    if "services" in only:
        sc["services"] = sweep("services", "services", [1, 100] if q else [1, 100, 1000], 1)

    if "mix" in only and not q:
        log("\n== mix: IMIX sizes, 30% IPv6, 100 services, 10k prefixes")
        ds = data(sizes="imix", ipv6_share=0.3, services=100, prefixes=10_000)
        sc["mix"] = pair("mix", ds)
        sc["mix"]["dataset"] = ds.meta

    if "swap" in only:
        swaps = 10 if q else 40
        log(f"\n== swap: {swaps} policy changes applied under full load ({a.flows} flows)")
        sc["swap"] = swap_latency(runner, head_ds, swaps)

    if "maglev" in only:
        sc["maglev"] = maglev_estimates(a.target)
        log("\n== maglev: rebuild against the paper's loop in C (bench/maglev_ref.c)")
        sc["maglev_rebuild"] = maglev_rebuild(a.out, runner.gen, a.target, q, started_wall)

    report["elapsed_seconds"] = time.monotonic() - started
    ratio = pipe1 / fwd1
    cpp = a.tsc_hz / (pipe1 * 1e6)
    report.update(
        baseline_mpps=fwd1,
        pipeline_mpps=pipe1,
        ratio=ratio,
        cycles_per_packet=cpp,
        flows=a.flows,
        workers=1,
    )
    print_tables(report, a)
    json_path = os.path.join(a.out, "report.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    try:
        import plots

        for p in plots.write(report, a.out):
            log(f"plot: {p}")
    except ImportError as e:
        log(f"plots skipped: {e} (ci/bench installs python3-matplotlib)")
    log(f"report: {json_path}; {report['elapsed_seconds']:.0f} s")
    print(
        f"RESULT baseline_mpps={fwd1:.3f} pipeline_mpps={pipe1:.3f} ratio={ratio:.3f} "
        f"cycles_per_packet={cpp:.1f} flows={a.flows} workers=1"
    )


def print_tables(report: dict, a) -> None:
    sc = report["scenarios"]
    tsc = report["machine"]["tsc_hz"]
    fwd1 = report["baseline_mpps"]

    def cyc(mpps):
        return tsc / (mpps * 1e6)

    print()
    h = sc["headline"]
    print(f"headline ({a.flows} flows, sizes {a.sizes}, IPv6 share {a.ipv6_share:g}, 1 worker; Mpps per round, median)")
    for k in ("c_iofwd", "forward", "pipeline"):
        if k in h:
            s = h[k]
            print(f"  {k:<9} " + " ".join(f"{m:8.3f}" for m in s["mpps"]) + f"   median {s['median_mpps']:8.3f}"
                  f"   {cyc(s['median_mpps']):6.1f} cycles/pkt")
    if "c_iofwd" in h:
        print(f"  forward/c_iofwd {h['forward']['median_mpps'] / h['c_iofwd']['median_mpps']:.3f}")
    print(f"  pipeline/forward {report['ratio']:.3f}")

    def row(label, d, workers=1):
        f = d.get("forward", {}).get("median_mpps")
        p = d.get("pipeline", {}).get("median_mpps")
        mem = d.get("pipeline", {}).get("memory", {})
        ratio = p / f if f and p else (p / fwd1 if p else None)
        extra = ""
        if "compile_seconds" in d:
            extra = f"  compile {d['compile_seconds']:6.2f} s  table {mib(d['table_bytes']):>7} MiB"
        print(
            f"  {label:<10} {f'{f:9.3f}' if f else f'{chr(45):>9}'} {p:9.3f} {ratio:7.3f} {cyc(p) * workers:8.1f}"
            f"  {mib(mem.get('peak_rss_bytes')):>8} {mem.get('hugepages_2m', 0):>5} {mib(mem.get('flow_table_bytes')):>8}{extra}"
        )

    head = f"  {'':<10} {'fwd Mpps':>9} {'pipe Mpps':>9} {'ratio':>7} {'cyc/pkt':>8}  {'RSS MiB':>8} {'huge':>5} {'flow MiB':>8}"
    earlier = "pipeline only; ratio against the headline's forward baseline (same capture, earlier in this run)"
    for name, title in [
        ("workers", "workers (the capture split in two; cycles per packet per worker; 1 worker = the headline rounds)"),
        ("flows", "flows (forward and pipeline alternating at each point)"),
        ("backends", f"backends ({earlier})"),
        ("prefixes", f"geo prefixes ({earlier})"),
        ("services", f"services ({earlier})"),
    ]:
        if name in sc:
            print(f"\n{title}")
            print(head)
            for k, d in sc[name].items():
                if isinstance(d, dict) and "pipeline" in d:
                    row(k, d, int(k) if name == "workers" else 1)
    if "mix" in sc:
        print("\nmix (IMIX, 30% IPv6, 100 services, 10k prefixes)")
        print(head)
        row("mix", sc["mix"])
    if "swap" in sc:
        s = sc["swap"]
        print(
            f"\nswap: {s['swaps']} table swaps under load at {s['mpps']:.3f} Mpps: publish->live median "
            f"{s['median_ms']:.3f} ms, p90 {s['p90_ms']:.3f} ms, max {s['max_ms']:.3f} ms; apply (diff+compile+"
            f"publish+wait) median {s['apply_wall_ms_median']:.1f} ms; rx {s['rx_pkts']} tx {s['tx_pkts']} "
            f"dropped {s['dropped']} {s['drop_counters'] or ''}; each swap removed or restored backend "
            f"{s['removed_backend']}: flows moved {s['flows_moved']} (flows / pool size = "
            f"{s['flows_on_removed_backend_expected']})"
        )
    if sc.get("maglev"):
        print("\nMaglev build (criterion mean)")
        for m in sc["maglev"]:
            print(f"  N={m['backends']:<6} M={m['slots']:<8} {m['case'][len('N=' + str(m['backends'])):]:<16} {m['mean_ms']:9.3f} ms")
    if sc.get("maglev_rebuild"):
        print("\nMaglev rebuild against the paper's loop in C (medians, same run)")
        for r in sc["maglev_rebuild"]["rows"]:
            c = ", ".join(f"{k} {v['median_us']:.0f} us" for k, v in r["c"].items())
            if "rust_us" in r:
                print(f"  maglev rebuild N={r['backends']} M={r['slots']}: rust {r['rust_us']:.0f} us, "
                      f"C reference {r['c_reference_us']:.0f} us, speedup {r['speedup']:.2f}  (C: {c})")
            else:
                print(f"  maglev rebuild N={r['backends']} M={r['slots']}: no rust estimate from this run, C: {c}")
            if "paper_in_rust_us" in r:
                print(f"    the same loop transcribed into Rust: {r['paper_in_rust_us']:.0f} us")
    print()


if __name__ == "__main__":
    main()
