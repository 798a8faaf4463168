"""The fleet around the appliance, shared by ci/e2e (harness.py) and ci/demo (demo.py).

A Layout names everything one run owns — namespaces and links (a prefix), addresses (a second
octet base), API port, instance, backends, policy — so the demo and the end-to-end run never
collide. Fleet builds the topology, runs the processes (model servers, decapsulators, the
control plane, the data plane), talks to the API, runs clients (curl, tests/e2e/streams.py),
and removes everything it made.

  <p>-cli (clients on lo: 10.N.K.10.. per region; 10.N.0.2 on the tap)
     │ tap <p>-up (uplink, appliance 10.N.0.1)              ▲ veth <p>-cli-r 10.(N+4).0.0/24
  switchyard-dataplane ── tap <p>-bk (backend, 10.(N+1).0.1) ── <p>-r (router .254) ─┘
                                                               │ veths 10.(N+3).I.0/24
     switchyard-control (root ns) ── veth <p>-ctl 10.(N+5).0.0/24 ┘ <p>-<backend>: a decapsulator
                                                                    + model_server.py on every VIP
                                                                    and on the backend's address

Backends decapsulate with the kernel's ipip and fou devices where the kernel has both, otherwise
with tests/tools/decap.py (AF_PACKET in, TUN out; IPIP and GUE alike).
"""
import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
MODEL_SERVER = os.path.join(REPO, "tests/tools/model_server.py")
DECAP = os.path.join(REPO, "tests/tools/decap.py")
STREAMS = os.path.join(HERE, "streams.py")
GUE_PORT = 6080


class Layout:
    """What one run owns. backends: name -> (short, index, model, pool or None)."""

    def __init__(self, *, prefix, net, instance, api, vips, port, backends, regions,
                 default_region, policy, macs, token_delay_ms, flows=65536):
        self.prefix, self.net, self.instance, self.api = prefix, net, instance, api
        self.vips, self.port, self.backends, self.policy = vips, port, backends, policy
        self.token_delay_ms = token_delay_ms
        self.flows = flows
        self.cli, self.router = f"{prefix}-cli", f"{prefix}-r"
        self.up_tap, self.bk_tap, self.ctl_veth = f"{prefix}-up", f"{prefix}-bk", f"{prefix}-ctl"
        self.uplink_addr = f"10.{net}.0.1"
        self.backend_addr = f"10.{net + 1}.0.1"
        self.gw_addr = f"10.{net + 1}.0.254"
        self.ctl_route = f"10.{net + 3}.0.0/16"
        self.uplink_mac, self.backend_mac, self.gw_mac = macs
        # regions: name -> (third octet, clients); the sources 10.N.K.10, 10.N.K.11, ...
        self.sources = {r: [f"10.{net}.{k}.{10 + j}" for j in range(n)]
                        for r, (k, n) in regions.items()}
        self.default_src = self.sources[default_region][0]
        self.namespaces = [self.cli, self.router] + [self.backend_ns(n) for n in backends]
        self.pools = collections.defaultdict(set)
        for name, (_s, _i, _m, pool) in backends.items():
            if pool:
                self.pools[pool].add(name)

    def backend_ns(self, name):
        return f"{self.prefix}-{self.backends[name][0]}"

    def address(self, name):
        return f"10.{self.net + 3}.{self.backends[name][1]}.2"

    def tokens_for(self, seconds):
        return int(seconds * 1000 / self.token_delay_ms)


def log(msg):
    sys.stderr.write(f"[{time.strftime('%T')}] {msg}\n")
    sys.stderr.flush()


class Fail(Exception):
    pass


def run(argv, check=True, timeout=60, capture=True):
    """Runs a command; returns CompletedProcess. check: raise Fail on a non-zero exit."""
    r = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise Fail(f"{' '.join(argv)}: exit {r.returncode}: {(r.stderr or '').strip()[-300:]}")
    return r


def ns(name, *argv, **kw):
    return run(["ip", "netns", "exec", name, *argv], **kw)


def ipn(name, args, **kw):
    return run(["ip", "-n", name, *args.split()], **kw)


# Every address here is local or in a namespace: never through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url, data=None, timeout=5):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with OPENER.open(req, timeout=timeout) as r:
        return r.read().decode()


class StreamRun:
    """tests/e2e/streams.py in the client namespace, its JSON lines read in a thread."""

    def __init__(self, fleet, groups, tokens, retry_for=0.0, stall=8.0, ramp=1.0):
        argv = ["ip", "netns", "exec", fleet.L.cli, PY, STREAMS, "--tokens", str(tokens),
                "--stall", str(stall), "--retry-for", str(retry_for), "--ramp", str(ramp)]
        for g in groups:
            argv += ["--group", g]
        self.proc = fleet.spawn("streams", argv, stdout=subprocess.PIPE)
        self.ready = None
        self.end = None
        self.streams = []
        self.ready_evt = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            ev = obj.get("event")
            if ev == "ready":
                self.ready = obj
                self.ready_evt.set()
            elif ev == "stream":
                self.streams.append(obj)
            elif ev == "end":
                self.end = obj
        self.ready_evt.set()

    def wait_ready(self, timeout):
        self.ready_evt.wait(timeout)
        if not self.ready:
            raise Fail("the stream client did not report its streams established")
        return self.ready

    def wait(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Fail(f"the stream client did not finish within {timeout:.0f} s")
        self.thread.join(5)
        if not self.end:
            raise Fail(f"the stream client ended without a summary (exit {self.proc.returncode})")
        return self.streams


def describe(streams):
    c = collections.Counter(s["first_backend"] for s in streams)
    return ", ".join(f"{b} {n}" for b, n in sorted(c.items(), key=lambda kv: str(kv[0])))


def broken_summary(streams):
    b = [s for s in streams if s["broken"]]
    if not b:
        return "0"
    why = collections.Counter(s["attempts"][0]["outcome"] for s in b)
    return f"{len(b)} ({', '.join(f'{k} {v}' for k, v in sorted(why.items()))})"


def kernel_decap(bns, address):
    """The kernel's ipip device plus a fou GUE port in namespace bns, when the kernel has both."""
    if ipn(bns, f"tunnel add decap0 mode ipip local {address} remote any", check=False).returncode:
        return False
    if ipn(bns, f"fou add port {GUE_PORT} gue", check=False).returncode:
        ipn(bns, "tunnel del decap0", check=False)
        return False
    return True


class Fleet:
    def __init__(self, layout, bin_dir, work):
        self.L = layout
        self.ctl_bin = os.path.join(bin_dir, "switchyard-control")
        self.dp_bin = os.path.join(bin_dir, "switchyard-dataplane")
        self.work = work
        self.logs = os.path.join(work, "logs")
        self.shm = os.path.join(work, "shm")
        self.policy_file = os.path.join(work, "policy.yaml")
        for d in (self.logs, self.shm, os.path.join(work, "policies")):
            os.makedirs(d, exist_ok=True)
        self.env = dict(os.environ, SWITCHYARD_SHM_DIR=self.shm)
        self.procs = []          # every Popen started, for cleanup
        self.servers = {}        # backend name -> Popen
        self.decaps = {}         # backend name -> Popen of decap.py, or None (the kernel's)
        self.ctl = None
        self.dp = None
        with open(layout.policy) as f:
            self.base = f.read()
        self.current = self.base
        self.counter = 0

    # ---- processes ----------------------------------------------------------------------

    def spawn(self, tag, argv, stdout=None):
        self.counter += 1
        logf = open(os.path.join(self.logs, f"{self.counter:03d}-{tag}.log"), "w")
        p = subprocess.Popen(argv, stdout=stdout if stdout is not None else logf,
                             stderr=logf if stdout is not None else subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env,
                             text=True if stdout is not None else None)
        p.logpath = logf.name
        logf.close()
        self.procs.append(p)
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    @staticmethod
    def wait_log(p, pattern, timeout, what):
        deadline = time.time() + timeout
        rx = re.compile(pattern, re.M)
        while time.time() < deadline:
            with open(p.logpath, errors="replace") as f:
                if rx.search(f.read()):
                    return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        with open(p.logpath, errors="replace") as f:
            tail = f.read()[-600:]
        raise Fail(f"{what} did not start (exit {p.poll()}): {tail.strip()}")

    @staticmethod
    def stop(p, sig=signal.SIGTERM, timeout=5):
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        except ProcessLookupError:
            pass
        remove_eal_runtime_dir(p.pid)

    # ---- topology -----------------------------------------------------------------------

    @staticmethod
    def remove_topology(L):
        for n in L.namespaces:
            r = run(["ip", "netns", "pids", n], check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for n in L.namespaces:
            run(["ip", "netns", "del", n], check=False)
        for link in (L.ctl_veth, L.up_tap, L.bk_tap):
            run(["ip", "link", "del", link], check=False)
        run(["ip", "route", "del", L.ctl_route], check=False)

    def build_topology(self):
        L, n4, n5 = self.L, self.L.net + 4, self.L.net + 5
        self.remove_topology(L)
        for n in L.namespaces:
            run(["ip", "netns", "add", n])
            ipn(n, "link set lo up")
            ns(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
               "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.lo.rp_filter=0")
        # Clients: addresses on lo (they survive the tap going away when the data plane
        # restarts); the tap itself is wired in wire_tap().
        for addrs in L.sources.values():
            for a in addrs:
                ipn(L.cli, f"addr add {a}/32 dev lo")
        run(["ip", "link", "add", f"{L.prefix}-cli-r", "netns", L.cli, "type", "veth",
             "peer", "name", f"{L.prefix}-r-c", "netns", L.router])
        ipn(L.cli, f"addr add 10.{n4}.0.2/24 dev {L.prefix}-cli-r")
        ipn(L.cli, f"link set {L.prefix}-cli-r up")
        ipn(L.router, f"addr add 10.{n4}.0.1/24 dev {L.prefix}-r-c")
        ipn(L.router, f"link set {L.prefix}-r-c up")
        ipn(L.router, f"route add 10.{L.net}.0.0/16 via 10.{n4}.0.2")
        ns(L.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The control plane (root namespace) reaches the backends through the router: health
        # checks and scrapes come from its own host stack, not through the data plane.
        run(["ip", "link", "add", L.ctl_veth, "type", "veth", "peer", "name", f"{L.prefix}-r-h",
             "netns", L.router])
        run(["ip", "addr", "add", f"10.{n5}.0.1/24", "dev", L.ctl_veth])
        run(["ip", "link", "set", L.ctl_veth, "up"])
        ipn(L.router, f"addr add 10.{n5}.0.254/24 dev {L.prefix}-r-h")
        ipn(L.router, f"link set {L.prefix}-r-h up")
        run(["ip", "route", "add", L.ctl_route, "via", f"10.{n5}.0.254"])
        for name, (short, i, _model, _pool) in L.backends.items():
            bns, addr = L.backend_ns(name), L.address(name)
            run(["ip", "link", "add", bns, "netns", L.router, "type", "veth",
                 "peer", "name", "eth0", "netns", bns])
            ipn(L.router, f"addr add 10.{L.net + 3}.{i}.1/24 dev {bns}")
            ipn(L.router, f"link set {bns} up")
            ipn(bns, f"addr add {addr}/24 dev eth0")
            ipn(bns, "link set eth0 up")
            ipn(bns, f"route add default via 10.{L.net + 3}.{i}.1")
            for vip in L.vips:
                ipn(bns, f"addr add {vip}/32 dev lo")
            if kernel_decap(bns, addr):
                self.decaps[name] = None
            else:
                p = self.spawn(f"decap-{short}", ["ip", "netns", "exec", bns, PY, DECAP, "eth0",
                                                  "decap0"])
                self.wait_log(p, "^ready", 10, f"decap.py in {bns}")
                self.decaps[name] = p
            ipn(bns, "link set decap0 up")
            ns(bns, "sysctl", "-qw", "net.ipv4.conf.decap0.rp_filter=0")
        for name in L.backends:
            self.start_server(name, wait=False)
        for name in L.backends:
            self.wait_log(self.servers[name], "^ready", 10, f"model server {name}")

    def decapsulator(self):
        kinds = {"the kernel's ipip + fou" if p is None else "tests/tools/decap.py"
                 for p in self.decaps.values()}
        return ", ".join(sorted(kinds))

    def start_server(self, name, wait=True):
        L = self.L
        short, _i, model, _ = L.backends[name]
        listen = []
        for addr in L.vips + [L.address(name)]:
            listen += ["--listen", f"{addr}:{L.port}"]
        p = self.spawn(f"server-{short}", [
            "ip", "netns", "exec", L.backend_ns(name), PY, MODEL_SERVER, *listen,
            "--model", model, "--name", name, "--token-delay-ms", str(L.token_delay_ms),
            "--tokens", "5"])
        self.servers[name] = p
        if wait:
            self.wait_log(p, "^ready", 10, f"model server {name}")

    def kill_server(self, name, sig=signal.SIGKILL):
        p = self.servers[name]
        p.send_signal(sig)
        p.wait(5)

    def start_control(self):
        self.ctl = self.spawn("control", [
            self.ctl_bin, "run", "--policy", self.policy_file, "--instance", self.L.instance,
            "--listen", self.L.api, "--shm-dir", self.shm, "--watch-interval-ms", "0",
            "--start-wait", "2s"])
        self.wait_log(self.ctl, "API listening", 15, "switchyard-control")

    def start_dataplane(self):
        """Starts the data plane and moves its two taps into the client and router namespaces."""
        L = self.L
        conf = os.path.join(self.work, "appliance.yaml")
        with open(conf, "w") as f:
            f.write("ports:\n  - { device: net_tap0, role: uplink }\n"
                    "  - { device: net_tap1, role: backend }\n"
                    "mempool: { mbufs: 8191 }\n"
                    f"flow_table: {{ ipv4_flows: {L.flows}, ipv6_flows: 4096 }}\n")
        self.dp = self.spawn("dataplane", [
            self.dp_bin, "run", "--instance", L.instance, "--config", conf, "--", "-l", "0-1",
            "--in-memory", "--no-pci", f"--vdev=net_tap0,iface={L.up_tap}",
            f"--vdev=net_tap1,iface={L.bk_tap}"])
        # Wire the taps once the data plane has started its ports (its "table:" line): moving
        # a tap to another namespace while DPDK still configures it by name races with it.
        self.wait_log(self.dp, "^table: ", 20, "switchyard-dataplane")
        for tap in (L.up_tap, L.bk_tap):
            self.wire_tap(tap)

    def wire_tap(self, tap):
        L = self.L
        if tap == L.up_tap:
            run(["ip", "link", "set", tap, "netns", L.cli])
            ipn(L.cli, f"addr add 10.{L.net}.0.2/24 dev {tap}")
            ipn(L.cli, f"link set {tap} mtu 1500 up")
            for vip in L.vips:
                ipn(L.cli, f"route add {vip}/32 via {L.uplink_addr} dev {tap} src {L.default_src}")
        else:
            run(["ip", "link", "set", tap, "netns", L.router])
            ipn(L.router, f"link set {tap} address {L.gw_mac}")
            ipn(L.router, f"addr add {L.gw_addr}/24 dev {tap}")
            ipn(L.router, f"link set {tap} up")

    def stop_dataplane(self):
        self.stop(self.dp, signal.SIGINT, timeout=10)

    def start(self):
        """The whole fleet: topology, servers, control plane, data plane, every backend up."""
        with open(self.policy_file, "w") as f:
            f.write(self.base)
        self.build_topology()
        self.start_control()
        self.start_dataplane()
        self.wait_all_up(15)

    def cleanup(self):
        for p in reversed(self.procs):
            if p is self.dp:
                continue
            self.stop(p, signal.SIGTERM, timeout=3)
        self.stop(self.dp, signal.SIGINT, timeout=10)
        self.remove_topology(self.L)

    # ---- control plane ------------------------------------------------------------------

    def state(self):
        return json.loads(http(f"http://{self.L.api}/v1/state"))

    def backend_states(self):
        out = {}
        for pool in self.state()["pools"]:
            for b in pool["backends"]:
                out[(pool["name"], b.get("name"))] = b
        return out

    def wait_states(self, want, timeout, what):
        """want: {backend name: state} for every pool holding it. Returns seconds waited."""
        t0 = time.time()
        last = None
        while time.time() - t0 < timeout:
            try:
                st = self.backend_states()
                last = {k: v["state"] for k, v in st.items()}
                if all(v["state"] == want[k[1]] for k, v in st.items() if k[1] in want):
                    return time.time() - t0
            except OSError:
                pass
            time.sleep(0.1)
        raise Fail(f"{what}: backends not {want} after {timeout} s (last seen {last})")

    def wait_all_up(self, timeout=10):
        names = set()
        for line in self.current.splitlines():
            m = re.search(r"name: ([a-z0-9-]+) \}", line)
            if m and m[1] in self.L.backends:
                names.add(m[1])
        return self.wait_states({n: "up" for n in names}, timeout, "fleet")

    def generation(self):
        g = self.state()["generation"]
        return g["current"], g["live"]

    def counters(self):
        text = http(f"http://{self.L.api}/metrics")
        out = collections.Counter()
        for m in re.finditer(r'^switchyard_dataplane_([a-zA-Z0-9_]+)_total\{worker="\d+"\} (\d+)',
                             text, re.M):
            out[m[1]] += int(m[2])
        for m in re.finditer(r"^(switchyard_control_[a-z_]+) (\S+)$", text, re.M):
            out[m[1]] = float(m[2])
        return out

    def wait_counters_fresh(self):
        # The data plane mirrors its counters into the segment about every 0.5 ms; the
        # control plane reads the segment on each scrape. A short pause covers both.
        time.sleep(0.3)
        return self.counters()

    def apply(self, text, label):
        path = os.path.join(self.work, "policies", f"{label}.yaml")
        with open(path, "w") as f:
            f.write(text)
        # --instance and --shm-dir as the daemon's: the CLI reads its API token from there.
        r = run([self.ctl_bin, "apply", path, "--yes", "--api", self.L.api,
                 "--instance", self.L.instance, "--shm-dir", self.shm], check=False, timeout=30)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or not re.search(r"live on every worker|unchanged", out):
            raise Fail(f"apply {label}: exit {r.returncode}: {out[-400:]}")
        self.current = text
        return out

    def variant(self, *edits):
        text = self.base
        for old, new in edits:
            if text.count(old) != 1:
                raise Fail(f"policy edit: {old!r} is not exactly once in {self.L.policy}")
            text = text.replace(old, new)
        return text

    def restore(self, dataplane=True):
        """Back to the base fleet: every process running (the data plane only if `dataplane`),
        the base policy live, all up."""
        if dataplane and (self.dp is None or self.dp.poll() is not None):
            self.start_dataplane()
        if self.ctl is None or self.ctl.poll() is not None:
            self.start_control()
        for name, p in self.servers.items():
            if p.poll() is not None:
                self.start_server(name)
        if self.current != self.base:
            self.apply(self.base, "base")
        self.wait_all_up(15)

    # ---- clients ------------------------------------------------------------------------

    def curl(self, src, vip, n, path="/whoami", timeout=3, parallel=False):
        """n new connections (Connection: close) from src; returns [(status, backend)]."""
        argv = ["ip", "netns", "exec", self.L.cli, "curl", "--noproxy", "*", "-sS", "-m",
                str(timeout), "--interface", src, "-H", "Connection: close",
                "-w", "%{http_code} %header{x-backend}\n"]
        if parallel:
            argv += ["-Z", "--parallel-immediate", "--parallel-max", str(n)]
        for _ in range(n):
            argv += ["-o", "/dev/null", f"http://{vip}:{self.L.port}{path}"]
        r = run(argv, check=False, timeout=timeout * n + 10)
        out = []
        for line in r.stdout.splitlines():
            parts = line.split(" ", 1)
            out.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))
        while len(out) < n:
            out.append(("000", ""))
        return out

    def ask(self, srcs, vip, per_src):
        """Backends answering per_src new connections from each source: Counter, failures."""
        seen = collections.Counter()
        failed = 0
        for s in srcs:
            for code, backend in self.curl(s, vip, per_src):
                if code == "200" and backend:
                    seen[backend] += 1
                else:
                    failed += 1
        return seen, failed


def cleanup_command(layout):
    """`SCRIPT cleanup --work DIR` (what a wrapper's trap runs): True when that was the command."""
    if len(sys.argv) < 2 or sys.argv[1] != "cleanup":
        return False
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--work", required=True)
    cleanup_from_pidfile(layout, p.parse_args().work)
    return True


def signals_raise():
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so a run unwinds into its cleanup."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def signals_ignore():
    """No interruption of the cleanup itself."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def cleanup_from_pidfile(layout, work):
    """The fallback a wrapper's trap runs: kill what the fleet recorded, remove the topology."""
    try:
        with open(os.path.join(work, "pids")) as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(k in cmd for k in ("switchyard-", "model_server.py", "decap.py", "streams.py")):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in pids:
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        remove_eal_runtime_dir(pid)
    Fleet.remove_topology(layout)


def remove_eal_runtime_dir(pid):
    """An --in-memory data plane's EAL runtime directory (/var/run/dpdk/switchyard-PID): one
    that was killed cannot remove its own."""
    shutil.rmtree(f"/var/run/dpdk/switchyard-{pid}", ignore_errors=True)
