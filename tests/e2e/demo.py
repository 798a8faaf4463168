#!/usr/bin/env python3
"""The README's first command (ci/demo): Switchyard in front of a small fleet, shown working.

The same topology code as ci/e2e (tests/e2e/topology.py) under the demo's own names: namespaces
and links syd-*, addresses 10.90-95.*, API 127.0.0.1:9180, instance demo, policy
configs/fleet-demo.yaml. What it shows, with real clients:

  1. requests per region and per backend (curl, each request a new TCP connection);
  2. `switchyard-control trace` of a client, and `switchyard-control show`;
  3. a churn: SSE streams (a token every 5 ms) from both regions while `apply` adds a backend,
     and the streams broken by it (none);
  4. live load: a GPU reporting a queue gets fewer new connections;
  5. a backend killed: its health check takes it out of every worker's table;
  6. `switchyard-control drain`: EU clients fail over to the US pool;
  7. the Prometheus endpoint and the data plane's counters;
  8. and that nothing is left behind.

usage: demo.py --bin DIR --work DIR
       demo.py cleanup --work DIR       (what ci/demo's trap runs)
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import time

from topology import (Fail, Fleet, Layout, StreamRun, broken_summary, cleanup_command, http, run,
                      signals_ignore, signals_raise)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

DEMO = Layout(
    prefix="syd", net=90, instance="demo", api="127.0.0.1:9180",
    vips=["203.0.113.10"], port=8000,
    backends={
        "eu-gpu-1": ("eu1", 1, "llama-70b", "llama-eu"),
        "eu-gpu-2": ("eu2", 2, "llama-70b", "llama-eu"),
        "us-gpu-1": ("us1", 3, "llama-70b", "llama-us"),
        "us-gpu-2": ("us2", 4, "llama-70b", None),        # joins llama-us during the churn
    },
    regions={"eu-west": (1, 2), "us-east": (2, 2)},
    default_region="eu-west",
    policy=os.path.join(REPO, "configs/fleet-demo.yaml"),
    macs=("02:5e:00:00:01:01", "02:5e:00:00:02:01", "02:5e:00:00:02:fe"),
    token_delay_ms=5,
)
L = DEMO
VIP = L.vips[0]


def step(title):
    print(f"\n==> {title} ({time.strftime('%T')})", flush=True)


def table(rows, header):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


class Demo(Fleet):
    def __init__(self, bin_dir, work):
        super().__init__(DEMO, bin_dir, work)

    def requests(self, per_source, regions=None):
        """per_source new connections from every client of each region; a table of answers."""
        per = collections.OrderedDict()
        for region, srcs in L.sources.items():
            if regions and region not in regions:
                continue
            seen, failed = self.ask(srcs, VIP, per_source)
            per[region] = (seen, failed)
        names = sorted({b for seen, _ in per.values() for b in seen})
        rows = [[region, sum(seen.values()) + failed] + [seen.get(b, 0) for b in names] + [failed]
                for region, (seen, failed) in per.items()]
        table(rows, ["region", "requests"] + names + ["failed"])
        return per

    def show_backends(self):
        out = run([self.ctl_bin, "show", "--api", L.api], check=False).stdout
        lines = out.splitlines()
        start = next((k for k, x in enumerate(lines) if x.startswith("POOL")), 0)
        print("\n".join("  " + x for x in lines[start:]))

    def admin(self, name, path, body):
        http(f"http://{L.address(name)}:{L.port}/admin/{path}", data=body.encode())

    def run_demo(self):
        step("the fleet: client, router and four backends in network namespaces; switchyard-"
             "control (configs/fleet-demo.yaml) and switchyard-dataplane on two net_tap ports")
        t0 = time.time()
        self.start()
        with open(self.dp.logpath) as f:
            for line in f:
                if re.match(r"^(port|worker|table)", line):
                    print("  " + line.rstrip())
        print(f"  fleet up in {time.time() - t0:.1f} s; backends decapsulate IPIP with "
              f"{self.decapsulator()}; us-gpu-2 is up but not in the policy yet")

        step(f"clients → VIP {VIP}:{L.port}, 4 new connections from each client address")
        print("  eu-west (10.90.1.0/24) → pool llama-eu (Maglev); us-east (10.90.2.0/24) → "
              "llama-us (round robin)")
        self.requests(4)

        step("switchyard-control trace: where does a client go, and why (asked of the workers)")
        client = L.sources["eu-west"][0]
        print(run([self.ctl_bin, "trace", f"{client}:40000", f"{VIP}:{L.port}", "--live",
                   "--api", L.api], check=False).stdout.rstrip())

        step("switchyard-control show")
        print(run([self.ctl_bin, "show", "--api", L.api], check=False).stdout.rstrip())

        step("churn: 40 SSE streams (a token every 5 ms for 8 s) while `apply` adds us-gpu-2 "
             "to llama-us")
        text = self.variant(("      - { address: 10.93.3.2, weight: 100, name: us-gpu-1 }\n",
                             "      - { address: 10.93.3.2, weight: 100, name: us-gpu-1 }\n"
                             "      - { address: 10.93.4.2, weight: 100, name: us-gpu-2 }\n"))
        groups = [f"{s},{VIP}:{L.port},10" for srcs in L.sources.values() for s in srcs]
        sr = StreamRun(self, groups, L.tokens_for(8))
        ready = sr.wait_ready(25)
        if ready["established"] != ready["streams"]:
            raise Fail(f"streams did not all establish: {ready}")
        time.sleep(1)
        out = self.apply(text, "add-us-gpu-2")
        print("\n".join("  " + x for x in out.splitlines()))
        streams = sr.wait(60)
        per = collections.Counter(s["first_backend"] for s in streams)
        broken = collections.Counter(s["first_backend"] for s in streams if s["broken"])
        table([[b, per[b], broken.get(b, 0)] for b in sorted(per, key=str)],
              ["backend", "streams", "broken"])
        tokens = sum(s["tokens"] for s in streams)
        print(f"  {len(streams)} streams, {tokens} tokens in order, broken: "
              f"{broken_summary(streams)}")
        print("  new connections after the change:")
        self.requests(3, regions=["us-east"])

        step("live load: eu-gpu-1 reports 10 waiting requests (vllm:num_requests_waiting)")
        self.admin("eu-gpu-1", "metrics", '{"vllm:num_requests_waiting": 10}')
        deadline = time.time() + 5
        while time.time() < deadline:
            b = self.backend_states()[("llama-eu", "eu-gpu-1")]
            if b.get("effective_weight", 100) < 50:
                break
            time.sleep(0.1)
        self.show_backends()
        print("  new eu-west connections now favour eu-gpu-2, in proportion to the effective "
              "weights:")
        self.requests(10, regions=["eu-west"])
        self.admin("eu-gpu-1", "metrics", '{"vllm:num_requests_waiting": 0}')

        step("eu-gpu-2 dies (its server is killed): the health check takes it out of every "
             "worker's table")
        t_kill = time.time()
        self.kill_server("eu-gpu-2")
        took = self.wait_states({"eu-gpu-2": "down"}, 10, "eu-gpu-2 down")
        print(f"  eu-gpu-2 down {took:.2f} s after the kill (interval 500ms, fall 2)")
        with open(self.ctl.logpath, errors="replace") as f:
            for line in f:
                if L.address("eu-gpu-2") in line and "-> down" in line:
                    print("  " + line.rstrip())
        self.requests(3, regions=["eu-west"])
        print(f"  ({time.time() - t_kill:.1f} s since the kill)")

        step("switchyard-control drain eu-gpu-1: recorded in the policy file, shown as a diff, "
             "published; eu-west has no backend left and fails over to llama-us")
        r = run([self.ctl_bin, "drain", "eu-gpu-1", "--yes", "--api", L.api, "--instance",
                 L.instance, "--shm-dir", self.shm], check=False, timeout=30)
        print("\n".join("  " + x for x in (r.stdout + r.stderr).strip().splitlines()))
        if r.returncode != 0:
            raise Fail(f"drain: exit {r.returncode}")
        with open(self.policy_file) as f:
            line = next((x.strip() for x in f if "10.93.1.2" in x), "")
        print(f"  the policy file now says: {line}")
        self.requests(3, regions=["eu-west"])

        step(f"switchyard-control capture: 8 packets to {VIP}:{L.port} while clients connect, "
             "written as pcapng and read back by tcpdump")
        pcap = os.path.join(self.work, "vip.pcapng")
        cap = subprocess.Popen(
            [self.ctl_bin, "capture", "--vip", VIP, "--port", str(L.port), "-c", "8",
             "--seconds", "10", "-s", "128", "-w", pcap, "--api", L.api, "--instance",
             L.instance, "--shm-dir", self.shm],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        self.requests(2, regions=["us-east"])
        out, _ = cap.communicate(timeout=20)
        print("\n".join("  " + x for x in out.strip().splitlines()))
        if cap.returncode != 0:
            raise Fail(f"capture: exit {cap.returncode}")
        r = run(["tcpdump", "-nr", pcap], check=False)
        print("\n".join("  " + x for x in r.stdout.strip().splitlines()))

        step("switchyard-control show stats: traffic per service, pool, backend and port")
        print(run([self.ctl_bin, "show", "stats", "--api", L.api], check=False).stdout.rstrip())

        step("Prometheus metrics (excerpt)")
        body = http(f"http://{L.api}/metrics")
        for line in body.splitlines():
            if re.match(r"^switchyard_(control_(live_generation|health_transitions_total|"
                        r"load_updates_total)|dataplane_(forwarded_ipip_v4|flow_inserts|"
                        r"flow_hits)_total|service_packets_total|backend_new_flows_total)",
                        line):
                print("  " + line)

        step("stop the data plane")
        self.stop_dataplane()
        with open(self.dp.logpath) as f:
            for line in f:
                if re.match(r"^(counter |RESULT)", line):
                    print("  " + line.rstrip())


def leftovers():
    """What of the demo's is still on the machine: namespaces, links, processes."""
    left = []
    names = run(["ip", "netns", "list"], check=False).stdout
    left += [f"namespace {n}" for n in L.namespaces if re.search(rf"^{n}\b", names, re.M)]
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    left += [f"link {n}" for n in (L.up_tap, L.bk_tap, L.ctl_veth) if f" {n}:" in links or
             f" {n}@" in links]
    ps = run(["ps", "-eo", "pid,args"], check=False).stdout
    for line in ps.splitlines():
        if ("--instance demo" in line or "--name eu-gpu" in line or "--name us-gpu" in line) \
                and "demo.py" not in line:
            left.append(f"process {line.strip()}")
    return left


def main():
    if cleanup_command(DEMO):
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    args = p.parse_args()

    signals_raise()
    d = Demo(args.bin, args.work)
    rc = 0
    try:
        d.run_demo()
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e})")
        rc = 130
    except (Fail, OSError, subprocess.SubprocessError) as e:
        print(f"\nthe demo failed: {e}\nlogs: {d.logs} (removed at exit)")
        for p in (d.dp, d.ctl):
            if p is not None:
                with open(p.logpath, errors="replace") as f:
                    print(f"--- {os.path.basename(p.logpath)} (tail)\n{f.read()[-1500:]}")
        rc = 1
    finally:
        signals_ignore()
        d.cleanup()
    step("clean up: processes stopped, namespaces and links removed")
    left = leftovers()
    for x in left:
        print(f"  LEFT BEHIND: {x}")
    if left:
        return 1
    print("  nothing of the demo's is left on the machine (ci/demo then removes its work "
          "directory and checks /dev/shm and the hugepages)")
    if rc == 0:
        print("\nSwitchyard balanced real TCP connections and streams across the fleet on DPDK "
              "(net_tap), with direct server return.")
    return rc


if __name__ == "__main__":
    sys.exit(main())
