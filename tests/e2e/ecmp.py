"""Two appliance nodes behind an ECMP router that learns the VIPs over BGP (ci/e2e's ecmp-* and
bgp-* scenarios; docs/DEPLOY-ECMP.md).

  syb-c: clients 10.80.9.10.. on lo ── veth 10.80.8.0/24 ── syb-e: the edge router
      BIRD (AS 65000, `merge paths on`: kernel multipath routes), fib_multipath_hash_policy=1
      ├─ tap syb-aup 10.80.1.0/24 ── node a: switchyard-dataplane (uplink 10.80.1.1, backend
      │                               tap syb-abk 10.81.1.1 into sye-r) + switchyard-control
      ├─ tap syb-bup 10.80.2.0/24 ── node b: the same on 10.80.2.1 / syb-bbk 10.81.2.1
      ├─ veth 10.80.11.0/24 ── syb-a: node a's BIRD (AS 65001), BGP to the router over this
      │                        management veth, next hop 10.80.1.1 (the data plane's uplink)
      ├─ veth 10.80.12.0/24 ── syb-b: node b's BIRD
      └─ veth 10.80.7.0/24 ── sye-r, the e2e fleet's backend router: replies (direct server
                              return) come back this way
  Each node's control plane runs in the root namespace (instance ecmp-a / ecmp-b, API
  127.0.0.1:9191 / 9192, health checks through the e2e fleet's sye-ctl) and announces its VIPs
  with --bird-socket / --bird-routes. BGP timers: hold 3 s, keepalive 1 s.

The backends and model servers are the e2e fleet's (tests/e2e/harness.py); this fleet is built
on top of it at the first ecmp/bgp scenario and removed with it.
"""
import collections
import json
import os
import re
import signal
import time

from topology import (Fail, Fleet, http, ipn, log, ns, remove_eal_runtime_dir, run)

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "syb"
CLI, EDGE = f"{PREFIX}-c", f"{PREFIX}-e"
VIPS = ["203.0.113.70", "203.0.113.71"]
PORT = 8000
SOURCES = [f"10.80.9.{10 + i}" for i in range(24)]
HOLD, KEEPALIVE = 3, 1
ROUTER_AS, NODE_AS = 65000, 65001


class Node:
    def __init__(self, name, k):
        self.name, self.k = name, k
        self.ns = f"{PREFIX}-{name}"                 # the node's BIRD
        self.up_tap, self.bk_tap = f"{PREFIX}-{name}up", f"{PREFIX}-{name}bk"
        self.uplink = f"10.80.{k}.1"
        self.backend = f"10.81.{k}.1"
        self.gw = f"10.81.{k}.254"
        self.up_mac, self.bk_mac, self.gw_mac = (f"02:5e:00:00:8{k}:01", f"02:5e:00:00:8{k}:02",
                                                 f"02:5e:00:00:8{k}:fe")
        self.mgmt = f"10.80.1{k}.2"                  # node BIRD; the router is .1
        self.api = f"127.0.0.1:919{k}"
        self.instance = f"ecmp-{name}"
        self.ctl = self.dp = self.bird = None


NODES = [Node("a", 1), Node("b", 2)]
NAMESPACES = [CLI, EDGE] + [n.ns for n in NODES]


def remove(main_router):
    """Everything this fleet adds: namespaces (and the veths and taps in them), the veth into
    the e2e router, its route."""
    for n in NAMESPACES:
        r = run(["ip", "netns", "pids", n], check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for n in NAMESPACES:
        run(["ip", "netns", "del", n], check=False)
    for node in NODES:
        for tap in (node.up_tap, node.bk_tap):
            run(["ip", "link", "del", tap], check=False)
            run(["ip", "-n", main_router, "link", "del", tap], check=False)
    run(["ip", "-n", main_router, "link", "del", f"{PREFIX}-r-e"], check=False)


class Ecmp:
    def __init__(self, h):
        self.h = h                       # the e2e Fleet: spawn, logs, binaries, backends
        self.work = os.path.join(h.work, "ecmp")
        os.makedirs(self.work, exist_ok=True)
        with open(os.path.join(HERE, "ecmp.yaml")) as f:
            self.policy_text = f.read()
        self.edge_bird = None
        self.up = False

    # ---- topology -----------------------------------------------------------------------

    def build(self):
        r = self.h.L.router
        remove(r)
        for n in NAMESPACES:
            run(["ip", "netns", "add", n])
            ipn(n, "link set lo up")
            ns(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
               "net.ipv4.conf.default.rp_filter=0")
        for s in SOURCES:
            ipn(CLI, f"addr add {s}/32 dev lo")
        self.veth(CLI, f"{PREFIX}-c-e", "10.80.8.2", EDGE, f"{PREFIX}-e-c", "10.80.8.1")
        ipn(CLI, "route add default via 10.80.8.1")
        ns(EDGE, "sysctl", "-qw", "net.ipv4.ip_forward=1",
           "net.ipv4.fib_multipath_hash_policy=1")
        ipn(EDGE, "route add 10.80.9.0/24 via 10.80.8.2")
        # Replies from the backends: sye-r → syb-e → clients.
        self.veth(EDGE, f"{PREFIX}-e-r", "10.80.7.1", r, f"{PREFIX}-r-e", "10.80.7.2")
        ipn(r, "route add 10.80.9.0/24 via 10.80.7.1")
        for node in NODES:
            self.veth(node.ns, f"{PREFIX}-{node.name}-m", node.mgmt, EDGE,
                      f"{PREFIX}-e-{node.name}", f"10.80.1{node.k}.1")

    @staticmethod
    def veth(ns_a, a, addr_a, ns_b, b, addr_b):
        run(["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b,
             "netns", ns_b])
        ipn(ns_a, f"addr add {addr_a}/24 dev {a}")
        ipn(ns_a, f"link set {a} up")
        ipn(ns_b, f"addr add {addr_b}/24 dev {b}")
        ipn(ns_b, f"link set {b} up")

    # ---- BIRD ---------------------------------------------------------------------------

    def bird_conf(self, node):
        timers = (f"hold time {HOLD}; keepalive time {KEEPALIVE}; connect delay time 1; "
                  f"connect retry time 1; error wait time 1, 2;")
        if node is None:
            peers = "".join(
                f"protocol bgp node_{n.name} from nodes {{ neighbor {n.mgmt} as {NODE_AS}; }}\n"
                for n in NODES)
            return (f"router id 10.80.8.1;\nprotocol device {{ scan time 1; }}\n"
                    f"protocol kernel {{ scan time 1; ipv4 {{ import none; export all; }}; merge paths on; }}\n"
                    f"template bgp nodes {{\n  local as {ROUTER_AS}; {timers}\n"
                    f"  ipv4 {{ import all; export none; }};\n}}\n{peers}")
        return (f"router id {node.mgmt};\nprotocol device {{ scan time 1; }}\n"
                f"include \"{self.routes_file(node)}\";\n"
                f"protocol bgp edge {{\n  local {node.mgmt} as {NODE_AS};\n"
                f"  neighbor 10.80.1{node.k}.1 as {ROUTER_AS};\n  {timers}\n"
                f"  ipv4 {{ import none; export filter {{\n"
                f"    if proto = \"switchyard4\" then {{ bgp_next_hop = {node.uplink}; accept; }}\n"
                f"    reject;\n  }}; }};\n}}\n")

    def routes_file(self, node):
        return os.path.join(self.work, f"vips-{node.name}.conf")

    def socket(self, node):
        return os.path.join(self.work, f"bird-{node.name if node else 'edge'}.ctl")

    def start_bird(self, node):
        tag = node.name if node else "edge"
        conf = os.path.join(self.work, f"bird-{tag}.conf")
        with open(conf, "w") as f:
            f.write(self.bird_conf(node))
        if node is not None and not os.path.exists(self.routes_file(node)):
            # Nothing announced until the control plane says so.
            with open(self.routes_file(node), "w") as f:
                f.write("protocol static switchyard4 { ipv4; }\nprotocol static switchyard6 { ipv6; }\n")
        # -f: in the foreground, so the pid is the daemon's and the harness can stop it.
        p = self.h.spawn(f"bird-{tag}", [
            "ip", "netns", "exec", node.ns if node else EDGE, "bird", "-f", "-c", conf,
            "-s", self.socket(node), "-P", os.path.join(self.work, f"bird-{tag}.pid")])
        deadline = time.time() + 10
        while time.time() < deadline:
            if run(["birdc", "-s", self.socket(node), "show", "status"], check=False).returncode == 0:
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise Fail(f"bird ({tag}) did not start: see {p.logpath}")

    # ---- nodes --------------------------------------------------------------------------

    def node_policy(self, node):
        text = self.policy_text
        for k, v in (("@UP_MAC@", node.up_mac), ("@UP_ADDR@", node.uplink),
                     ("@BK_MAC@", node.bk_mac), ("@BK_ADDR@", node.backend),
                     ("@GW_ADDR@", node.gw), ("@GW_MAC@", node.gw_mac)):
            text = text.replace(k, v)
        path = os.path.join(self.work, f"policy-{node.name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_dataplane(self, node):
        conf = os.path.join(self.work, f"appliance-{node.name}.yaml")
        with open(conf, "w") as f:
            f.write("ports:\n  - { device: net_tap0, role: uplink }\n"
                    "  - { device: net_tap1, role: backend }\n"
                    "mempool: { mbufs: 8191 }\n"
                    "flow_table: { ipv4_flows: 16384, ipv6_flows: 1024 }\n")
        # One polling worker per core: node a's on core 1, node b's on core 0.
        lcores = ["-l", "0-1"] if node.k == 1 else ["-l", "0-1", "--main-lcore", "1"]
        node.dp = self.h.spawn(f"dataplane-{node.name}", [
            self.h.dp_bin, "run", "--instance", node.instance, "--config", conf, "--", *lcores,
            "--in-memory", "--no-pci", f"--vdev=net_tap0,iface={node.up_tap}",
            f"--vdev=net_tap1,iface={node.bk_tap}"])
        Fleet.wait_log(node.dp, "^table: ", 20, f"switchyard-dataplane (node {node.name})")
        r = self.h.L.router
        run(["ip", "link", "set", node.up_tap, "netns", EDGE])
        ipn(EDGE, f"addr add 10.80.{node.k}.254/24 dev {node.up_tap}")
        ipn(EDGE, f"link set {node.up_tap} up")
        if self.edge_bird is not None and self.edge_bird.poll() is None:
            # The tap is new to the router: a route the node announced before it was there had
            # a next hop on no interface and was dropped. Ask the node for its routes again
            # (BGP route refresh). A router whose link to a node stays (a NIC, not a tap) never
            # needs this.
            run(["birdc", "-s", self.socket(None), "reload", "in", f"node_{node.name}"],
                check=False)
        run(["ip", "link", "set", node.bk_tap, "netns", r])
        ipn(r, f"link set {node.bk_tap} address {node.gw_mac}")
        ipn(r, f"addr add {node.gw}/24 dev {node.bk_tap}")
        ipn(r, f"link set {node.bk_tap} up")

    def start_control(self, node):
        node.ctl = self.h.spawn(f"control-{node.name}", [
            self.h.ctl_bin, "run", "--policy", self.node_policy(node), "--instance", node.instance,
            "--listen", node.api, "--shm-dir", self.h.shm, "--watch-interval-ms", "0",
            "--start-wait", "2s", "--bird-socket", self.socket(node),
            "--bird-routes", self.routes_file(node), "--bgp-community", f"{NODE_AS}:{node.k}"])
        Fleet.wait_log(node.ctl, "API listening", 15, f"switchyard-control (node {node.name})")

    def start(self):
        t0 = time.time()
        self.build()
        for node in NODES:
            self.start_dataplane(node)
        self.edge_bird = self.start_bird(None)
        for node in NODES:
            node.bird = self.start_bird(node)
            self.start_control(node)
        self.up = True
        self.wait_routes({v: 2 for v in VIPS}, 20, "the fleet's start")
        log(f"ecmp: two nodes announced both VIPs in {time.time() - t0:.1f} s")

    def restore(self):
        """Both nodes running and announcing every VIP (after a scenario killed something)."""
        for node in NODES:
            if node.dp is None or node.dp.poll() is not None:
                if node.dp is not None:
                    remove_eal_runtime_dir(node.dp.pid)
                self.start_dataplane(node)
            if node.ctl is None or node.ctl.poll() is not None:
                self.start_control(node)
            run([self.h.ctl_bin, "node", "undrain", "--api", node.api, "--instance",
                 node.instance, "--shm-dir", self.h.shm, "--wait", "10s"], check=False)
        self.wait_routes({v: 2 for v in VIPS}, 20, "restore")

    def stop(self):
        """Stops every process (each tried, whatever the others do) and removes the topology."""
        procs = [(p, signal.SIGTERM) for n in NODES for p in (n.ctl, n.bird)]
        procs += [(n.dp, signal.SIGINT) for n in NODES] + [(self.edge_bird, signal.SIGTERM)]
        for p, sig in procs:
            try:
                Fleet.stop(p, sig, timeout=10)
            except Exception as ex:  # noqa: BLE001 - a stuck process must not keep the rest
                log(f"ecmp: stopping pid {p.pid}: {ex}")
                try:
                    p.kill()
                except OSError:
                    pass
        remove(self.h.L.router)
        self.up = False

    # ---- observing ----------------------------------------------------------------------

    @staticmethod
    def nexthops(vip):
        """The router's kernel route to vip: the list of next-hop addresses (empty: none)."""
        out = ipn(EDGE, f"route show {vip}/32", check=False).stdout
        return re.findall(r"via (\S+)", out)

    def wait_routes(self, want, timeout, what, poll=0.02):
        """want: {vip: number of next hops}. Returns seconds waited."""
        t0 = time.time()
        while True:
            have = {v: len(self.nexthops(v)) for v in want}
            if have == want:
                return time.time() - t0
            if time.time() - t0 > timeout:
                raise Fail(f"{what}: router routes {have}, expected {want} after {timeout} s; "
                           f"{self.bgp_summary()}")
            time.sleep(poll)

    def learned_from(self, node):
        """VIP routes the router's BIRD holds from node's BGP session."""
        out = run(["birdc", "-s", self.socket(None), "show", "route", "protocol",
                   f"node_{node.name}"], check=False).stdout
        return len(re.findall(r"^\S+/32\s", out, re.M))

    def bgp_summary(self):
        out = run(["birdc", "-s", self.socket(None), "show", "protocols"], check=False).stdout
        return " / ".join(l.strip() for l in out.splitlines() if l.startswith("node_"))

    @staticmethod
    def state(node):
        return json.loads(http(f"http://{node.api}/v1/state"))

    @staticmethod
    def counters(node):
        text = http(f"http://{node.api}/metrics")
        out = collections.Counter()
        for m in re.finditer(r'^switchyard_dataplane_([a-zA-Z0-9_]+)_total\{worker="\d+"\} (\d+)',
                             text, re.M):
            out[m[1]] += int(m[2])
        return out

    @staticmethod
    def flows(node):
        """Client "addr:port" → backend, from the node's connection tables."""
        view = json.loads(http(f"http://{node.api}/v1/flows?limit=256", timeout=10))
        return {f["client"]: f["backend"] for f in view["flows"]}

    def node_status(self, node):
        r = run([self.h.ctl_bin, "node", "status", "--instance", node.instance, "--shm-dir",
                 self.h.shm], check=False)
        return r.stdout + r.stderr

    def curl(self, src, vip, n=1, sport=None, timeout=3):
        """n new connections from src (optionally from a fixed source port): [(code, backend)]."""
        argv = ["ip", "netns", "exec", CLI, "curl", "--noproxy", "*", "-sS", "-m", str(timeout),
                "--interface", src, "-H", "Connection: close",
                "-w", "%{http_code} %header{x-backend}\n"]
        if sport:
            argv += ["--local-port", str(sport)]
        for _ in range(n):
            argv += ["-o", "/dev/null", f"http://{vip}:{PORT}/whoami"]
        r = run(argv, check=False, timeout=timeout * n + 10)
        out = [tuple((line.split(" ", 1) + [""])[:2]) for line in r.stdout.splitlines()]
        out = [(c, b.strip()) for c, b in out]
        return out + [("000", "")] * (n - len(out))

    def whoami(self, tuples, vip, timeout=3):
        """One connection per (src, sport), one after the other, from one client process:
        {(src, sport): the backend that answered, or None}. Each connection ends with a reset
        (SO_LINGER 0), so the same 5-tuple can be used again at once (no TIME_WAIT)."""
        code = f"""
import json, socket, struct, sys
out = {{}}
for src, sport in json.loads(sys.argv[1]):
    backend = None
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout({timeout})
        s.bind((src, sport))
        s.connect(("{vip}", {PORT}))
        s.sendall(b"GET /whoami HTTP/1.1\\r\\nHost: {vip}\\r\\n\\r\\n")
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        for line in data.decode(errors="replace").split("\\r\\n"):
            if line.lower().startswith("x-backend:"):
                backend = line.split(":", 1)[1].strip()
    except OSError:
        pass
    out[f"{{src}}:{{sport}}"] = backend
print(json.dumps(out))
"""
        r = run(["ip", "netns", "exec", CLI, "python3", "-c", code, json.dumps(tuples)],
                check=False, timeout=(timeout + 1) * len(tuples) + 20)
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise Fail(f"the client printed no answer: {r.stderr.strip()[-300:]}")

    def route_get(self, src, sport, vip):
        """The node the router's multipath hash picks for this 5-tuple."""
        out = ipn(EDGE, f"route get {vip} from {src} iif {PREFIX}-e-c ipproto tcp sport {sport} "
                  f"dport {PORT}", check=False).stdout
        m = re.search(r"via (\S+)", out)
        return {n.uplink: n.name for n in NODES}.get(m[1] if m else None)

    def client(self):
        """What StreamRun needs of a fleet: the client namespace and spawn()."""
        class Client:
            L = type("L", (), {"cli": CLI})
            spawn = staticmethod(self.h.spawn)
        return Client()
