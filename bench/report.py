#!/usr/bin/env python3
"""Summarises a ci/bench run: reads the per-round logs that ci/bench wrote, prints the table,
writes report.json, and prints the RESULT line last.

    report.py LOG_DIR REPORT_JSON   (metadata comes from BENCH_* environment variables)

Log files are LOG_DIR/<scenario>-r<round>.log holding each program's stdout; the scenarios are
c_iofwd (bench/iofwd.c), forward (switchyard-dataplane forward) and pipeline
(switchyard-dataplane run --table). The ratio is pipeline over forward, of medians.
cycles_per_packet = TSC Hz / pipeline packets per second (median), i.e. the worker lcore's TSC
cycles per packet at full load (one worker; the worker polls, so every cycle is spent on packets).
"""
import json
import os
import platform
import re
import statistics
import sys

SCENARIOS = [
    ("c_iofwd", "C rx->tx loop (bench/iofwd.c), floor"),
    ("forward", "switchyard-dataplane forward (baseline)"),
    ("pipeline", "switchyard-dataplane run --table (full pipeline)"),
]


def fields(line: str) -> dict:
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def parse_log(path: str) -> dict:
    text = open(path).read()
    results = [l for l in text.splitlines() if l.startswith("RESULT ")]
    if not results:
        raise SystemExit(f"{path}: no RESULT line; the run failed:\n{text[-3000:]}")
    r = fields(results[-1])
    counters = {}
    for m in re.finditer(r"^counter (\S+) (\d+)$", text, re.M):
        counters[m.group(1)] = int(m.group(2))
    return {
        "mpps": float(r["mpps"]),
        "rx_pkts": int(r["rx_pkts"]),
        "tx_pkts": int(r["tx_pkts"]),
        "dropped": int(r["dropped"]),
        "counters": counters,
    }


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    log_dir, out = sys.argv[1], sys.argv[2]
    env = os.environ
    rounds = int(env["BENCH_ROUNDS"])
    tsc_hz = float(env["BENCH_TSC_HZ"])
    flows = int(env["BENCH_FLOWS"])
    scen = {}
    for name, desc in SCENARIOS:
        runs = []
        for r in range(1, rounds + 1):
            path = os.path.join(log_dir, f"{name}-r{r}.log")
            if os.path.exists(path):
                runs.append(parse_log(path))
        if runs:
            scen[name] = {
                "description": desc,
                "command": env.get(f"BENCH_CMD_{name.upper()}", ""),
                "rounds": runs,
                "mpps": [x["mpps"] for x in runs],
                "median_mpps": statistics.median(x["mpps"] for x in runs),
            }
    base = scen["forward"]["median_mpps"]
    pipe = scen["pipeline"]["median_mpps"]
    ratio = pipe / base
    cpp = tsc_hz / (pipe * 1e6)

    # The pipeline must forward (encapsulate) what it receives; a rate of drops means the traffic
    # does not match the policy.
    problems = []
    for i, x in enumerate(scen["pipeline"]["rounds"], 1):
        if x["rx_pkts"] == 0 or x["tx_pkts"] < 0.99 * x["rx_pkts"]:
            drops = {k: v for k, v in x["counters"].items() if k.startswith("drop_")}
            problems.append(
                f"pipeline round {i}: rx {x['rx_pkts']} tx {x['tx_pkts']} dropped {x['dropped']} {drops}"
            )

    w = max(len(n) for n, _ in SCENARIOS)
    print()
    print(f"{'scenario':<{w}}  " + "  ".join(f"{'r' + str(r):>8}" for r in range(1, rounds + 1)) + f"  {'median':>8}  Mpps")
    for name, _ in SCENARIOS:
        if name in scen:
            s = scen[name]
            print(f"{name:<{w}}  " + "  ".join(f"{m:8.3f}" for m in s["mpps"]) + f"  {s['median_mpps']:8.3f}")
    last = scen["pipeline"]["rounds"][-1]
    print(
        f"pipeline/forward {ratio:.3f}; {cpp:.1f} TSC cycles/packet at {tsc_hz / 1e9:.3f} GHz; "
        f"{flows} flows, last round: rx {last['rx_pkts']} tx {last['tx_pkts']} dropped {last['dropped']}, "
        f"flow inserts {last['counters'].get('flow_inserts', 0)} throttled {last['counters'].get('flow_insert_throttled', 0)}"
    )
    if "c_iofwd" in scen:
        print(f"forward/c_iofwd {base / scen['c_iofwd']['median_mpps']:.3f}")

    report = {
        "date": env.get("BENCH_DATE"),
        "git_commit": env.get("BENCH_GIT"),
        "machine": {
            "hostname": platform.node(),
            "kernel": platform.release(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "tsc_hz": tsc_hz,
            "tsc_method": "rdtsc vs CLOCK_MONOTONIC_RAW over 200 ms, median of 5 (bench/tsc_hz.c)",
            "dpdk": env.get("BENCH_DPDK"),
        },
        "traffic": {
            "flows": flows,
            "frame_bytes": 64,
            "syn_share": float(env["BENCH_SYN_SHARE"]),
            "backends": int(env["BENCH_BACKENDS"]),
            "generator": env.get("BENCH_CMD_GEN"),
            "capture": env.get("BENCH_CAPTURE"),
        },
        "workers": 1,
        "rounds": rounds,
        "seconds_per_round": float(env["BENCH_SECONDS"]),
        "scenarios": scen,
        "baseline_mpps": base,
        "pipeline_mpps": pipe,
        "ratio": ratio,
        "cycles_per_packet": cpp,
        "problems": problems,
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"report: {out}")
    if problems:
        print("ERROR: the pipeline did not forward what it received; the traffic does not match the policy:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    print(
        f"RESULT baseline_mpps={base:.3f} pipeline_mpps={pipe:.3f} ratio={ratio:.3f} "
        f"cycles_per_packet={cpp:.1f} flows={flows} workers=1"
    )


if __name__ == "__main__":
    main()
