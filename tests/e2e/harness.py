#!/usr/bin/env python3
"""End-to-end scenarios with real clients around the real appliance (run by ci/e2e).

Builds a fleet of network namespaces around switchyard-dataplane (two net_tap ports) and
switchyard-control, runs each scenario with real clients (curl, ping, wrk, an ARP probe and
tests/e2e/streams.py, a many-stream SSE client) and prints TAP on stdout: `ok N - name` or
`not ok N - name`, the figures on `# ` lines under it, and a last line `N passed, M failed`.
Progress goes to stderr. Exit status 1 when any scenario failed.

  sye-cli (clients on lo: eu-west 10.70.1.0/24, us-east 10.70.2.0/24, ap-south 10.70.3.0/24,
          other 10.70.4.10; 10.70.0.2 on the tap)
     │ tap sye-up (uplink, appliance 10.70.0.1)              ▲ veth sye-cli-r 10.74.0.0/24
  switchyard-dataplane ── tap sye-bk (backend, 10.71.0.1) ── sye-r (router 10.71.0.254) ─┘
                                                               │ veths 10.73.N.0/24
     switchyard-control (root ns) ── veth sye-ctl 10.75.0.0/24 ┘ sye-eu1 … sye-mx2: a decapsulator
                                                                 + model_server.py on both VIPs
                                                                 and on the backend's own address

The topology and the processes are tests/e2e/topology.py's (ci/demo builds its fleet with the
same code, under other names); this file holds the e2e layout, the scenarios and the TAP
driver. Policy: tests/e2e/fleet.yaml (variants are single-line edits of it). Everything lives
in the work directory given by --work (logs, policies, the shared-memory directory); cleanup()
kills every process it started (by pid), deletes the namespaces and links, on any exit.

usage: harness.py --bin DIR --work DIR [--only NAME,NAME]
       harness.py cleanup --work DIR          (what ci/e2e's trap runs)
       harness.py arp-probe IFACE SENDER_IP TARGET_IP TIMEOUT   (inside a namespace)
"""
import argparse
import collections
import concurrent.futures
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import ecmp
from topology import (PY, Fail, Fleet, Layout, StreamRun, broken_summary, cleanup_command,
                      describe, http, ipn, log, ns, run, signals_ignore, signals_raise)

HERE = os.path.dirname(os.path.abspath(__file__))

# backend name -> (short, index, model, pool in fleet.yaml or None)
E2E = Layout(
    prefix="sye", net=70, instance="e2e", api="127.0.0.1:9187",
    vips=["203.0.113.70", "203.0.113.71"], port=8000,   # llama-70b, mixtral-8x7b
    backends={
        "eu-gpu-1": ("eu1", 1, "llama-70b", "llama-eu"),
        "eu-gpu-2": ("eu2", 2, "llama-70b", "llama-eu"),
        "us-gpu-1": ("us1", 3, "llama-70b", "llama-us"),
        "us-gpu-2": ("us2", 4, "llama-70b", "llama-us"),
        "us-gpu-3": ("us3", 5, "llama-70b", None),        # joins llama-us in churn-add
        "ap-gpu-1": ("ap1", 6, "llama-70b", "llama-ap"),
        "mx-gpu-1": ("mx1", 7, "mixtral-8x7b", "mixtral"),
        "mx-gpu-2": ("mx2", 8, "mixtral-8x7b", "mixtral"),
    },
    regions={"eu": (1, 4), "us": (2, 4), "ap": (3, 4), "other": (4, 1)},
    default_region="ap",           # the source of clients that do not pick one (ping, wrk)
    policy=os.path.join(HERE, "fleet.yaml"),
    macs=("02:5e:00:00:71:01", "02:5e:00:00:72:01", "02:5e:00:00:72:fe"),
    token_delay_ms=5,              # one token every 5 ms on every stream
)
L = E2E
CLI, ROUTER, UP_TAP, BK_TAP = L.cli, L.router, L.up_tap, L.bk_tap
VIP1, VIP2, PORT = L.vips[0], L.vips[1], L.port
UPLINK_ADDR, BACKEND_ADDR, GW_ADDR = L.uplink_addr, L.backend_addr, L.gw_addr
UPLINK_MAC, BACKEND_MAC = L.uplink_mac, L.backend_mac
TOKEN_DELAY_MS = L.token_delay_ms
tokens_for = L.tokens_for
BACKENDS, SRC, POOLS = L.backends, L.sources, L.pools
LLAMA = POOLS["llama-eu"] | POOLS["llama-us"] | POOLS["llama-ap"] | {"us-gpu-3"}

SCENARIOS = [
    "route-by-vip", "route-by-region", "arp", "icmp-echo", "pmtu", "throughput",
    "churn-add", "churn-remove", "churn-drain", "churn-reweight", "churn-reload",
    "churn-control-restart", "churn-dataplane-restart",
    "backend-death", "geo-failover", "residency-strict", "encap-gue",
    "ecmp-spread", "ecmp-same-backend", "bgp-node-loss", "bgp-withdraw-unhealthy",
]
# The scenarios on the two-node ECMP fleet: the e2e fleet's own data plane stays stopped from
# the first of them to the last (restarting it between them only to stop it again costs taps
# torn down and created under the kernel's rtnl lock each time).
ECMP_SCENARIOS = {"ecmp-spread", "ecmp-same-backend", "bgp-node-loss", "bgp-withdraw-unhealthy"}


class Result:
    def __init__(self):
        self.notes = []
        self.failures = []

    def note(self, text):
        self.notes.append(text)

    def check(self, cond, text):
        if not cond:
            self.failures.append(text)
        return cond


class Harness(Fleet):
    def __init__(self, bin_dir, work):
        super().__init__(E2E, bin_dir, work)
        self.ecmp_fleet = None

    # ---- scenarios ----------------------------------------------------------------------

    def s_route_by_vip(self, r):
        srcs = [SRC["eu"][0], SRC["us"][0], SRC["ap"][0], SRC["other"][0]]
        for vip, allowed, model in ((VIP1, LLAMA, "llama-70b"), (VIP2, POOLS["mixtral"], "mixtral-8x7b")):
            seen, failed = self.ask(srcs, vip, 4)
            r.note(f"{vip}:{PORT} ({model}) from 4 regions, 16 connections: {dict(seen)}, failed {failed}")
            r.check(failed == 0, f"{vip}: {failed} of 16 connections failed")
            wrong = {b: n for b, n in seen.items() if b not in allowed}
            r.check(not wrong, f"{vip} reached another model's backends: {wrong}")
            # The model behind the VIP, as the client sees it.
            body = ns(CLI, "curl", "--noproxy", "*", "-sS", "-m", "3", "--interface", srcs[0],
                      f"http://{vip}:{PORT}/v1/models", check=False).stdout
            r.check(f'"id": "{model}"' in body, f"{vip}/v1/models does not list {model}: {body[:200]}")
        seen, _ = self.ask(SRC["other"], VIP2, 8)
        r.check(set(seen) == POOLS["mixtral"], f"round robin over mixtral did not use both backends: {dict(seen)}")

    def s_route_by_region(self, r):
        expect = {"eu": POOLS["llama-eu"], "us": POOLS["llama-us"], "ap": POOLS["llama-ap"],
                  "other": POOLS["llama-us"]}
        for region, pool in expect.items():
            seen, failed = self.ask(SRC[region], VIP1, 16 // len(SRC[region]))
            r.note(f"{region} ({', '.join(SRC[region][:1])}…) → {dict(seen)}, failed {failed}")
            r.check(failed == 0, f"{region}: {failed} connections failed")
            r.check(set(seen) == pool,
                    f"{region} clients reached {dict(seen)}, expected exactly {sorted(pool)}")

    def s_arp(self, r):
        c0 = self.wait_counters_fresh()

        def probe(nsname, iface, sender, target):
            out = ns(nsname, PY, os.path.abspath(__file__), "arp-probe", iface, sender, target,
                     "1.0", check=False).stdout.strip()
            return out or "error"

        ours = probe(CLI, UP_TAP, "10.70.0.2", UPLINK_ADDR)
        other = probe(CLI, UP_TAP, "10.70.0.2", "10.70.0.99")
        back = probe(ROUTER, BK_TAP, GW_ADDR, BACKEND_ADDR)
        r.note(f"who-has {UPLINK_ADDR} (uplink) → {ours}; {BACKEND_ADDR} (backend side) → {back}; "
               f"10.70.0.99 (not ours) → {other}")
        r.check(ours == UPLINK_MAC, f"ARP for {UPLINK_ADDR} answered {ours}, expected {UPLINK_MAC}")
        r.check(back == BACKEND_MAC, f"ARP for {BACKEND_ADDR} answered {back}, expected {BACKEND_MAC}")
        r.check(other == "none", f"ARP for an address the appliance does not own answered {other}")
        # The kernel's own resolution: flush, talk, read the neighbour table.
        ipn(CLI, f"neigh flush dev {UP_TAP}")
        ns(CLI, "ping", "-c", "1", "-W", "1", UPLINK_ADDR, check=False)
        neigh = ipn(CLI, f"neigh show {UPLINK_ADDR} dev {UP_TAP}", check=False).stdout.strip()
        r.note(f"ip neigh: {neigh}")
        r.check(f"lladdr {UPLINK_MAC}" in neigh and "FAILED" not in neigh and "INCOMPLETE" not in neigh,
                f"the client's kernel did not resolve {UPLINK_ADDR} to {UPLINK_MAC}: {neigh!r}")
        c1 = self.wait_counters_fresh()
        d = c1["arp_reply_sent"] - c0["arp_reply_sent"]
        r.note(f"arp_reply_sent +{d}")
        r.check(d >= 3, f"arp_reply_sent rose by {d}, expected at least 3")

    def s_icmp_echo(self, r):
        c0 = self.wait_counters_fresh()
        total = 0
        for target in (VIP1, VIP2, UPLINK_ADDR):
            out = ns(CLI, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", SRC["eu"][0], target,
                     check=False).stdout
            m = re.search(r"(\d+) received", out)
            got = int(m[1]) if m else 0
            rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
            total += got
            r.note(f"ping {target}: {got}/3 answered" + (f", avg {rtt[1]} ms" if rtt else ""))
            r.check(got == 3, f"ping {target}: {got} of 3 answered")
        c1 = self.wait_counters_fresh()
        d = c1["icmp_echo_reply_sent"] - c0["icmp_echo_reply_sent"]
        r.note(f"icmp_echo_reply_sent +{d}")
        r.check(d >= total and d >= 9, f"icmp_echo_reply_sent rose by {d}, expected ≥ 9")

    def s_pmtu(self, r):
        src = SRC["eu"][0]
        mtu = re.search(r"mtu (\d+)", ipn(CLI, f"link show {UP_TAP}").stdout)
        ipn(CLI, "route flush cache")
        before = ipn(CLI, f"route get {VIP1} from {src}").stdout.strip()
        r.check("mtu 1480" not in before, f"the route cache knew the smaller MTU before: {before}")
        c0 = self.wait_counters_fresh()
        words = 150000
        body = json.dumps({"model": "llama-70b", "max_tokens": 1,
                           "messages": [{"role": "user", "content": "w " * words}]})
        path = os.path.join(self.work, "upload.json")
        with open(path, "w") as f:
            f.write(body)
        t0 = time.time()
        res = ns(CLI, "curl", "--noproxy", "*", "-sS", "-m", "30", "--interface", src, "-H",
                 "Content-Type: application/json", "--data-binary", f"@{path}",
                 "-w", "\n%{http_code} %{size_upload}", f"http://{VIP1}:{PORT}/v1/chat/completions",
                 check=False)
        dt = time.time() - t0
        lines = res.stdout.strip().splitlines()
        status = lines[-1] if lines else ""
        try:
            answer = json.loads("\n".join(lines[:-1]))
            prompt = answer["usage"]["prompt_tokens"]
        except (ValueError, KeyError, TypeError):
            prompt = None
        after = ipn(CLI, f"route get {VIP1} from {src}").stdout.strip()
        c1 = self.wait_counters_fresh()
        d = c1["icmp_frag_needed_sent"] - c0["icmp_frag_needed_sent"]
        learnt = re.search(r"mtu (\d+)", after)
        r.note(f"client link MTU {mtu[1] if mtu else '?'}, backend_mtu 1500, IPIP +20: upload of "
               f"{len(body)} bytes → {status} in {dt:.2f} s; server counted {prompt} prompt words")
        r.note(f"route cache after: {' '.join(after.split())}; icmp_frag_needed_sent +{d}")
        r.check(status.startswith("200 "), f"the upload did not complete: {status!r} {res.stderr.strip()[:200]}")
        r.check(prompt == words, f"the server received {prompt} words of {words}")
        r.check(d >= 1, "the appliance sent no frag-needed")
        r.check(learnt is not None and int(learnt[1]) == 1480,
                f"the client's route cache did not learn MTU 1480: {after!r}")

    def s_throughput(self, r):
        if run(["which", "wrk"], check=False).returncode != 0:
            r.check(False, "wrk is not installed (ci/setup installs the Debian package wrk)")
            return
        ap = "ap-gpu-1"

        def served():
            return json.loads(http(f"http://{L.address(ap)}:{PORT}/admin/state"))["requests_served"]

        def wrk(nsname, url):
            out = ns(nsname, "wrk", "-t1", "-c8", "-d4s", url, check=False, timeout=30).stdout
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
            reqs = re.search(r"(\d+) requests in", out)
            errs = re.search(r"Socket errors: (.*)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            lat = re.search(r"Latency\s+(\S+)", out)
            return (float(rps[1]) if rps else 0.0, int(reqs[1]) if reqs else 0,
                    errs[1].strip() if errs else "", int(non2xx[1]) if non2xx else 0,
                    lat[1] if lat else "?")

        n0 = served()
        via = wrk(CLI, f"http://{VIP1}:{PORT}/whoami")
        n1 = served()
        direct = wrk(ROUTER, f"http://{L.address(ap)}:{PORT}/whoami")
        ratio = via[0] / direct[0] if direct[0] else 0
        r.note(f"wrk -t1 -c8 -d4s GET /whoami: through the appliance {via[0]:.0f} req/s "
               f"(avg latency {via[4]}), directly to {ap} from the router {direct[0]:.0f} req/s "
               f"(avg latency {direct[4]}); ratio {ratio:.2f}")
        r.note("through the appliance: client → tap → data plane → IPIP → router → decap.py "
               "(userspace) → server; the reply comes back directly")
        r.check(via[1] >= 100, f"only {via[1]} requests through the appliance")
        r.check(not via[2] and via[3] == 0, f"errors through the appliance: {via[2]} non-2xx {via[3]}")
        r.check(not direct[2] and direct[3] == 0, f"errors direct: {direct[2]} non-2xx {direct[3]}")
        r.check(n1 - n0 >= via[1], f"{ap} served {n1 - n0} requests, wrk counted {via[1]} "
                                   f"(the ap-south client must reach only {ap})")

    # churn: one stream set across the llama-eu, llama-us (Maglev) and mixtral (round robin)
    # pools; the change is applied once every stream is established.

    def churn_groups(self, eu=12, us=10, mx=8):
        g = [f"{s},{VIP1}:{PORT},{eu}" for s in SRC["eu"]]
        g += [f"{s},{VIP1}:{PORT},{us}" for s in SRC["us"]]
        g += [f"{s},{VIP2}:{PORT},{mx}" for s in SRC["eu"][:2] + SRC["us"][:2]]
        return g

    def churn(self, r, change, affected, seconds=10, assert_affected=True, groups=None):
        """Runs a stream set, calls change() mid-stream, tallies broken streams.

        affected: backend names the change touches; every other stream must survive. With
        assert_affected the affected ones must survive too (drain, reweight, reload...).
        """
        flaps0 = self.counters()["switchyard_control_health_transitions_total"]
        tokens = tokens_for(seconds)
        sr = StreamRun(self, groups or self.churn_groups(), tokens)
        ready = sr.wait_ready(25)
        if ready["failed"] or ready["established"] != ready["streams"]:
            sr.wait(seconds + 30)
            raise Fail(f"streams did not all establish: {ready}")
        time.sleep(1.5)
        t_change = time.time()
        info = change()
        t_done = time.time()
        streams = sr.wait(seconds + 40)
        aff = [s for s in streams if s["first_backend"] in affected]
        una = [s for s in streams if s["first_backend"] not in affected]
        r.note(f"{len(streams)} streams × {tokens} tokens, one every {TOKEN_DELAY_MS} ms "
               f"({describe(streams)}); change at "
               f"+{t_change - ready['t']:.1f} s after all established, took {t_done - t_change:.2f} s")
        if info:
            r.note(info)
        flaps = self.counters()["switchyard_control_health_transitions_total"]
        # A restarted control plane counts from 0 again.
        flaps = flaps - flaps0 if flaps >= flaps0 else flaps
        r.note(f"broken on unaffected backends: {broken_summary(una)} of {len(una)}; on affected "
               f"backends ({', '.join(sorted(affected)) or 'none'}): {broken_summary(aff)} of "
               f"{len(aff)}; health transitions meanwhile: {flaps:.0f}")
        gaps = [max((s["max_gap"] for s in x if not s["broken"]), default=0) for x in (una, aff)]
        r.note(f"longest pause between two tokens of a stream that completed: unaffected "
               f"{gaps[0] * 1000:.0f} ms, affected {gaps[1] * 1000:.0f} ms")
        r.check(not any(s["broken"] for s in una),
                f"{sum(s['broken'] for s in una)} streams broken on unaffected backends")
        if assert_affected:
            r.check(not any(s["broken"] for s in aff),
                    f"{sum(s['broken'] for s in aff)} streams broken on affected backends")
        return streams

    def s_churn_add(self, r):
        text = self.variant(("      - { address: 10.73.4.2, weight: 100, name: us-gpu-2 }\n",
                             "      - { address: 10.73.4.2, weight: 100, name: us-gpu-2 }\n"
                             "      - { address: 10.73.5.2, weight: 100, name: us-gpu-3 }\n"))
        self.churn(r, lambda: "apply: " + self.apply(text, "add").splitlines()[-1],
                   {"us-gpu-3"})
        seen, failed = self.ask(SRC["us"], VIP1, 6)
        r.note(f"new us-east connections after: {dict(seen)}")
        r.check("us-gpu-3" in seen and failed == 0, f"no new connection reached the added us-gpu-3: {dict(seen)}")

    def s_churn_remove(self, r):
        text = self.variant(("      - { address: 10.73.4.2, weight: 100, name: us-gpu-2 }\n", ""))
        streams = self.churn(r, lambda: "apply: " + self.apply(text, "remove").splitlines()[-1],
                             {"us-gpu-2"}, assert_affected=False)
        aff = [s for s in streams if s["first_backend"] == "us-gpu-2"]
        r.note("expected: the streams of the removed us-gpu-2 break (their next packet is "
               "rescheduled to a backend that has no such connection and resets it)")
        r.check(len(aff) > 0, "no stream was on us-gpu-2: the scenario tested nothing")
        seen, failed = self.ask(SRC["us"], VIP1, 4)
        r.note(f"new us-east connections after: {dict(seen)}")
        r.check("us-gpu-2" not in seen and failed == 0, f"new connections after the removal: {dict(seen)}, failed {failed}")

    def s_churn_drain(self, r):
        text = self.variant(("address: 10.73.2.2, weight: 100,", "address: 10.73.2.2, weight: 0,"))
        streams = self.churn(r, lambda: "apply: " + self.apply(text, "drain").splitlines()[-1],
                             {"eu-gpu-2"})
        r.check(any(s["first_backend"] == "eu-gpu-2" for s in streams), "no stream on eu-gpu-2")
        seen, failed = self.ask(SRC["eu"], VIP1, 4)
        r.note(f"new eu-west connections while drained: {dict(seen)}")
        r.check(set(seen) == {"eu-gpu-1"} and failed == 0, f"drained eu-gpu-2 still gets new flows: {dict(seen)}")

    def s_churn_reweight(self, r):
        text = self.variant(("address: 10.73.2.2, weight: 100,", "address: 10.73.2.2, weight: 25,"))
        self.churn(r, lambda: "apply: " + self.apply(text, "reweight").splitlines()[-1],
                   {"eu-gpu-2"})
        w = self.backend_states()[("llama-eu", "eu-gpu-2")]
        seen, _ = self.ask(SRC["eu"], VIP1, 6)
        r.note(f"eu-gpu-2 weight {w.get('weight')} effective {w.get('effective_weight')}; "
               f"new eu-west connections: {dict(seen)}")
        r.check(w.get("effective_weight") == 25, f"eu-gpu-2 effective weight {w.get('effective_weight')}, expected 25")

    def s_churn_reload(self, r):
        text = self.variant(("address: 10.73.4.2, weight: 100,", "address: 10.73.4.2, weight: 50,"))
        c0 = self.counters()
        g0 = self.generation()

        def change():
            with open(self.policy_file + ".tmp", "w") as f:
                f.write(text)
            os.rename(self.policy_file + ".tmp", self.policy_file)
            self.current = text
            self.ctl.send_signal(signal.SIGHUP)
            t0 = time.time()
            while time.time() - t0 < 10:
                cur, live = self.generation()
                if cur > g0[0] and live == cur:
                    return f"SIGHUP: generation {g0[1]} → {live} live in {time.time() - t0:.2f} s"
                time.sleep(0.05)
            raise Fail(f"SIGHUP reload: no new live generation after 10 s (was {g0})")

        self.churn(r, change, {"us-gpu-2"})
        c1 = self.counters()
        d = c1["switchyard_control_reloads_total"] - c0["switchyard_control_reloads_total"]
        w = self.backend_states()[("llama-us", "us-gpu-2")]
        r.note(f"switchyard_control_reloads_total +{d:.0f}; us-gpu-2 weight {w.get('weight')}")
        r.check(d == 1, f"reloads_total rose by {d}, expected 1")
        r.check(w.get("weight") == 50, f"us-gpu-2 weight {w.get('weight')} after the reload, expected 50")

    def s_churn_control_restart(self, r):
        g0 = self.generation()
        info = {}

        def change():
            t0 = time.time()
            self.stop(self.ctl, signal.SIGTERM)
            rc = self.ctl.returncode
            self.start_control()
            dt = time.time() - t0
            with open(self.ctl.logpath, errors="replace") as f:
                logtext = f.read()
            nothing = "nothing to publish" in logtext
            info["nothing"] = nothing
            return (f"control plane stopped (exit {rc}) and started again in {dt:.2f} s; "
                    f"generation before {g0[1]}, after {self.generation()[1]}; "
                    f"{'published nothing' if nothing else 'published a generation'}")

        self.churn(r, change, set())
        r.check(info.get("nothing"), "the restarted control plane published a generation "
                                     "(docs/CONTROL.md: identical tables publish nothing)")
        st = self.state()
        r.check(st["dataplane"]["running"], "the restarted control plane does not see the data plane")
        self.wait_all_up(5)

    def s_churn_dataplane_restart(self, r):
        maglev = POOLS["llama-eu"] | POOLS["llama-us"]
        info = {}

        def change():
            t0 = time.time()
            self.stop_dataplane()
            rc = self.dp.returncode
            t1 = time.time()
            self.start_dataplane()
            t2 = time.time()
            info["t_down"], info["t_up"] = t0, t2
            return (f"data plane stopped (exit {rc}) in {t1 - t0:.2f} s, started and wired again in "
                    f"{t2 - t1:.2f} s (no connection table: everything in flight misses)")

        streams = self.churn(r, change, POOLS["mixtral"], seconds=20, assert_affected=False)
        c = self.wait_counters_fresh()
        mag = [s for s in streams if s["first_backend"] in maglev]
        rr = [s for s in streams if s["first_backend"] in POOLS["mixtral"]]
        recovered = [s for s in mag if not s["broken"]]
        rr_broken = sum(s["broken"] for s in rr)
        r.note(f"Maglev (llama-eu, llama-us): {len(recovered)} of {len(mag)} streams recovered "
               f"without a connection table; round robin (mixtral): {rr_broken} of {len(rr)} broken")
        r.note(f"new data plane: flow_non_syn_miss {c['flow_non_syn_miss']}, flow_inserts "
               f"{c['flow_inserts']}")
        r.note("expected: every Maglev stream recovers (same policy and health, so the same table "
               "sends each flow to its backend again) — asserted; round robin reschedules with "
               "fresh per-worker cursors, so some of its streams break and some land back by "
               "chance — asserted 0 < broken < total")
        r.check(len(recovered) == len(mag) and mag, f"Maglev recovered {len(recovered)} of {len(mag)}")
        r.check(c["flow_non_syn_miss"] >= len(mag),
                f"flow_non_syn_miss {c['flow_non_syn_miss']} < {len(mag)} Maglev streams: "
                "the flows did not come back through the scheduler")
        r.check(0 < rr_broken < len(rr), f"round robin: {rr_broken} of {len(rr)} broken")

    def s_backend_death(self, r):
        victim, other = "eu-gpu-2", "eu-gpu-1"
        sr = StreamRun(self, [f"{s},{VIP1}:{PORT},12" for s in SRC["eu"]], tokens_for(10),
                       retry_for=30)
        ready = sr.wait_ready(25)
        if ready["established"] != ready["streams"]:
            raise Fail(f"streams did not all establish: {ready}")
        time.sleep(1.5)
        t_kill = time.time()
        self.kill_server(victim)
        down = self.wait_states({victim: "down"}, 10, "backend-death")
        streams = sr.wait(60)
        vict = [s for s in streams if s["first_backend"] == victim]
        rest = [s for s in streams if s["first_backend"] != victim]
        ok = [s for s in vict if s["completed"] and s["backend"] != victim]
        tries = [len(s["attempts"]) for s in vict]
        rec = [s["attempts"][-1]["t_start"] - t_kill for s in ok]
        r.note(f"{len(streams)} eu-west streams ({describe(streams)}); {victim} killed (SIGKILL), "
               f"health check down after {down:.2f} s")
        r.note(f"{victim}'s streams: {len(vict)} broken ({broken_summary(vict)}), {len(ok)} "
               f"reconnected and completed on {dict(collections.Counter(s['backend'] for s in ok))}, "
               f"attempts max {max(tries) if tries else 0}, last reconnect +{max(rec) if rec else 0:.2f} s")
        r.note(f"{other}'s streams: {len(rest)}, broken {broken_summary(rest)}")
        r.check(len(vict) > 0, f"no stream was on {victim}")
        r.check(len(ok) == len(vict), f"{len(vict) - len(ok)} of {victim}'s clients did not complete elsewhere")
        r.check(not any(s["broken"] for s in rest), f"streams on {other} broke")

    def s_geo_failover(self, r):
        eu, us = sorted(POOLS["llama-eu"]), sorted(POOLS["llama-us"])
        before, _ = self.ask(SRC["eu"], VIP1, 3)
        r.check(set(before) <= POOLS["llama-eu"] and before, f"before: eu-west reached {dict(before)}")
        t0 = time.time()
        for b in eu:
            self.kill_server(b, signal.SIGTERM)
        d1 = self.wait_states({b: "down" for b in eu}, 10, "geo-failover")
        s1, f1 = self.ask(SRC["eu"], VIP1, 3)
        r.note(f"llama-eu killed: down after {d1:.2f} s; eu-west → {dict(s1)}, failed {f1}")
        r.check(f1 == 0 and s1 and set(s1) <= POOLS["llama-us"],
                f"with llama-eu down eu-west reached {dict(s1)} (failed {f1}), expected llama-us")
        for b in us:
            self.kill_server(b, signal.SIGTERM)
        d2 = self.wait_states({b: "down" for b in us}, 10, "geo-failover")
        s2, f2 = self.ask(SRC["eu"], VIP1, 3)
        r.note(f"llama-us killed too: down after {d2:.2f} s; eu-west → {dict(s2)}, failed {f2}")
        r.check(f2 == 0 and set(s2) == POOLS["llama-ap"],
                f"with llama-eu and llama-us down eu-west reached {dict(s2)} (failed {f2}), expected llama-ap")
        for b in eu + us:
            self.start_server(b)
        d3 = self.wait_states({b: "up" for b in eu + us}, 10, "geo-failover")
        s3, f3 = self.ask(SRC["eu"], VIP1, 3)
        r.note(f"servers back: up after {d3:.2f} s; eu-west → {dict(s3)} (whole run {time.time() - t0:.1f} s)")
        r.check(f3 == 0 and set(s3) <= POOLS["llama-eu"] and s3, f"after recovery eu-west reached {dict(s3)}")

    def s_residency_strict(self, r):
        ap = "ap-gpu-1"
        s0, f0 = self.ask(SRC["ap"], VIP1, 2)
        r.check(set(s0) == {ap} and f0 == 0, f"before: ap-south reached {dict(s0)}, failed {f0}")
        self.kill_server(ap, signal.SIGTERM)
        d = self.wait_states({ap: "down"}, 10, "residency-strict")
        c0 = self.wait_counters_fresh()
        # 3 connections from each ap-south source, all at once: each SYN (and its retransmit
        # 1 s later) should be dropped by the data plane within curl's 2 s.
        with concurrent.futures.ThreadPoolExecutor(len(SRC["ap"])) as pool:
            res = sum(pool.map(lambda s: self.curl(s, VIP1, 3, timeout=2, parallel=True),
                               SRC["ap"]), [])
        c1 = self.wait_counters_fresh()
        answered = [b for code, b in res if code != "000"]
        drops = c1["drop_no_healthy_backend"] - c0["drop_no_healthy_backend"]
        us_ok, _ = self.ask(SRC["us"][:1], VIP1, 2)
        r.note(f"{ap} killed, down after {d:.2f} s; {len(res)} ap-south connections: "
               f"{len(res) - len(answered)} failed, answered by {answered or 'nobody'}; "
               f"drop_no_healthy_backend +{drops}; other regions' pools healthy: us-east → {dict(us_ok)}")
        r.check(not answered, f"ap-south connections were answered outside ap-south: {answered}")
        r.check(drops >= len(res), f"drop_no_healthy_backend rose by {drops}, expected ≥ {len(res)} SYNs dropped")
        r.check(bool(us_ok), "control: us-east reached nothing, so the fallback pools were not healthy")
        self.start_server(ap)
        d2 = self.wait_states({ap: "up"}, 10, "residency-strict")
        s2, f2 = self.ask(SRC["ap"], VIP1, 2)
        r.note(f"{ap} back: up after {d2:.2f} s; ap-south → {dict(s2)}")
        r.check(set(s2) == {ap} and f2 == 0, f"after recovery ap-south reached {dict(s2)}")

    def s_encap_gue(self, r):
        text = self.variant(("encap: ipip", "encap: gue"))
        out = self.apply(text, "gue")
        c0 = self.wait_counters_fresh()
        bad = []
        total = 0
        for region in ("eu", "us", "ap", "other"):
            for vip, pools in ((VIP1, None), (VIP2, POOLS["mixtral"])):
                seen, failed = self.ask(SRC[region][:1], vip, 3)
                total += 3
                if failed or not seen or (pools and not set(seen) <= pools):
                    bad.append(f"{region}→{vip}: {dict(seen)} failed {failed}")
        sr = StreamRun(self, [f"{SRC['eu'][0]},{VIP1}:{PORT},8", f"{SRC['us'][0]},{VIP1}:{PORT},8",
                              f"{SRC['other'][0]},{VIP2}:{PORT},8"], tokens_for(3), ramp=0.3)
        streams = sr.wait(30)
        c1 = self.wait_counters_fresh()
        gue = c1["forwarded_gue_v4"] - c0["forwarded_gue_v4"]
        ipip = c1["forwarded_ipip_v4"] - c0["forwarded_ipip_v4"]
        r.note(f"apply encap: gue → {out.splitlines()[-1]}")
        r.note(f"{total} curl connections over both VIPs from 4 regions, {len(streams)} SSE streams "
               f"× {tokens_for(3)} tokens ({describe(streams)}): broken {broken_summary(streams)}; "
               f"forwarded_gue_v4 +{gue}, forwarded_ipip_v4 +{ipip}")
        r.check(not bad, "; ".join(bad))
        r.check(not any(s["broken"] for s in streams), "streams broke under GUE")
        r.check(gue > 0 and ipip == 0, f"GUE +{gue}, IPIP +{ipip}: traffic was not GUE-encapsulated")

    # ---- scale-out: two nodes behind an ECMP router that learns the VIPs over BGP ----------

    def ecmp(self):
        """The two-node ECMP fleet (tests/e2e/ecmp.py), started at its first scenario. The
        e2e fleet's own data plane is stopped meanwhile (restore() starts it again): three
        polling data planes on two cores starve the routers and clients."""
        if self.ecmp_fleet is None:
            fleet = ecmp.Ecmp(self)
            self.stop_dataplane()
            try:
                fleet.start()
            except BaseException:
                fleet.stop()
                raise
            self.ecmp_fleet = fleet
        else:
            self.stop_dataplane()
            self.ecmp_fleet.restore()
        return self.ecmp_fleet

    def cleanup(self):
        if self.ecmp_fleet is not None:
            self.ecmp_fleet.stop()
        super().cleanup()

    def s_ecmp_spread(self, r):
        e = self.ecmp()
        uplinks = sorted(n.uplink for n in ecmp.NODES)
        for vip in ecmp.VIPS:
            hops = sorted(e.nexthops(vip))
            r.note(f"router: {vip}/32 via {', '.join(hops)}")
            r.check(hops == uplinks, f"{vip}: the router's route goes via {hops}, not both nodes {uplinks}")
        learned = run(["birdc", "-s", e.socket(None), "show", "route", "all"], check=False).stdout
        for n in ecmp.NODES:
            r.check(f"({ecmp.NODE_AS},{n.k})" in learned,
                    f"the router did not get node {n.name}'s community ({ecmp.NODE_AS},{n.k})")
        digests = {n.name: e.state(n)["generation"]["digest"] for n in ecmp.NODES}
        r.note(f"table digests: {digests}")
        r.check(len(set(digests.values())) == 1 and all(digests.values()),
                f"the nodes' tables differ: {digests}")
        before = {n.name: e.counters(n)["flow_inserts"] for n in ecmp.NODES}
        seen, failed = collections.Counter(), 0
        for src in ecmp.SOURCES:
            for vip in ecmp.VIPS:
                for code, backend in e.curl(src, vip, 2):
                    if code == "200" and backend:
                        seen[backend] += 1
                    else:
                        failed += 1
        total = len(ecmp.SOURCES) * len(ecmp.VIPS) * 2
        time.sleep(0.3)
        per_node = {n.name: e.counters(n)["flow_inserts"] - before[n.name] for n in ecmp.NODES}
        r.note(f"{total} connections from {len(ecmp.SOURCES)} sources: per node {per_node}, "
               f"per backend {dict(sorted(seen.items()))}, failed {failed}")
        r.check(failed == 0, f"{failed} of {total} connections failed")
        r.check(sum(per_node.values()) == total,
                f"the nodes counted {sum(per_node.values())} new flows for {total} connections")
        r.check(all(v >= total // 5 for v in per_node.values()),
                f"connections not spread across the nodes: {per_node}")

    def s_ecmp_same_backend(self, r):
        """The same 5-tuple forced through node a, then node b (a policy-routing rule on the
        router per source), reaches the same backend: both nodes compiled the same Maglev table."""
        e = self.ecmp()
        tuples = [(src, 42000 + i) for i, src in enumerate(ecmp.SOURCES[:16])]
        answers = {}
        try:
            for n in ecmp.NODES:
                table = 100 + n.k
                ipn(ecmp.EDGE, f"route replace {ecmp.VIPS[0]}/32 via {n.uplink} table {table}")
                for src, _ in tuples:
                    ipn(ecmp.EDGE, f"rule add from {src} iif {ecmp.PREFIX}-e-c lookup {table} pref 100")
                try:
                    answers[n.name] = e.whoami(tuples, ecmp.VIPS[0])
                finally:
                    for src, _ in tuples:
                        ipn(ecmp.EDGE, f"rule del from {src} iif {ecmp.PREFIX}-e-c pref 100", check=False)
        finally:
            for n in ecmp.NODES:
                ipn(ecmp.EDGE, f"route flush table {100 + n.k}", check=False)
        pairs = [(f"{s}:{p}", answers["a"].get(f"{s}:{p}"), answers["b"].get(f"{s}:{p}"))
                 for s, p in tuples]
        failed = sum((a is None) + (b is None) for _, a, b in pairs)
        same = sum(a is not None and a == b for _, a, b in pairs)
        backends = collections.Counter(a for _, a, _b in pairs)
        r.note(f"16 five-tuples, each through node a then node b: {same} reached the same backend; "
               f"backends {dict(sorted(backends.items()))}")
        for t, a, b in pairs:
            if a != b:
                r.note(f"{t}: node a → {a}, node b → {b}")
        r.check(failed == 0, f"{failed} connections failed")
        r.check(same == 16, f"only {same} of 16 five-tuples reached the same backend through both nodes")
        r.check(len(backends) >= 2, f"every tuple hashed to one backend ({dict(backends)}): not a test of the table")
        # A flow that moves mid-stream: established through node a, then sent through node b,
        # which has no entry for it (flow_non_syn_miss) and places it by the same table.
        src = ecmp.SOURCES[20]
        b = ecmp.NODES[1]
        for n in ecmp.NODES:
            ipn(ecmp.EDGE, f"route replace {ecmp.VIPS[0]}/32 via {n.uplink} table {100 + n.k}")
        ipn(ecmp.EDGE, f"rule add from {src} iif {ecmp.PREFIX}-e-c lookup 101 pref 100")
        miss0 = e.counters(b)["flow_non_syn_miss"]
        try:
            st = StreamRun(e.client(), [f"{src},{ecmp.VIPS[0]}:{ecmp.PORT},4"], tokens_for(4))
            st.wait_ready(15)
            ipn(ecmp.EDGE, f"rule del from {src} iif {ecmp.PREFIX}-e-c lookup 101 pref 100")
            ipn(ecmp.EDGE, f"rule add from {src} iif {ecmp.PREFIX}-e-c lookup 102 pref 100")
            streams = st.wait(30)
        finally:
            ipn(ecmp.EDGE, f"rule del from {src} iif {ecmp.PREFIX}-e-c pref 100", check=False)
            for n in ecmp.NODES:
                ipn(ecmp.EDGE, f"route flush table {100 + n.k}", check=False)
        miss = e.counters(b)["flow_non_syn_miss"] - miss0
        r.note(f"4 streams moved from node a to node b mid-stream: broken {broken_summary(streams)}, "
               f"node b flow_non_syn_miss +{miss}")
        r.check(not any(s["broken"] for s in streams), f"moved streams broke: {broken_summary(streams)}")
        r.check(miss >= 4, f"node b counted {miss} non-SYN misses for 4 moved streams")

    def s_bgp_node_loss(self, r):
        e = self.ecmp()
        a, b = ecmp.NODES
        vip = ecmp.VIPS[0]
        groups = [f"{s},{vip}:{ecmp.PORT},2" for s in ecmp.SOURCES[:12]]
        st = StreamRun(e.client(), groups, tokens_for(6))
        st.wait_ready(20)
        on_a = e.flows(a)
        t0 = time.time()
        a.dp.send_signal(signal.SIGKILL)
        a.dp.wait(5)
        kernel_route = bgp_withdrawn = None
        while time.time() - t0 < 10 and (kernel_route is None or bgp_withdrawn is None):
            if kernel_route is None and all(len(e.nexthops(v)) == 1 for v in ecmp.VIPS):
                kernel_route = time.time() - t0
            if bgp_withdrawn is None and e.learned_from(a) == 0:
                bgp_withdrawn = time.time() - t0
            time.sleep(0.005)
        r.check(kernel_route is not None and bgp_withdrawn is not None,
                f"after 10 s: kernel route {kernel_route}, BGP withdrawal {bgp_withdrawn}; {e.bgp_summary()}")
        withdrawn = max(kernel_route or 99, bgp_withdrawn or 99)
        r.note(f"node a's data plane SIGKILLed: the router's kernel route lost node a after "
               f"{(kernel_route or 0) * 1000:.0f} ms (the tap went with the process), its BIRD had "
               f"node a's BGP withdrawal after {(bgp_withdrawn or 0) * 1000:.0f} ms (BGP hold "
               f"{ecmp.HOLD} s, keepalive {ecmp.KEEPALIVE} s: the announcer withdrew, the session stayed up: "
               f"{e.bgp_summary()})")
        try:
            status = json.loads(open(os.path.join(self.shm, f"switchyard-{a.instance}.announce.json")).read())
            configured = status["configured_at_ms"] / 1000 - t0
            r.note(f"node a's announcer had BIRD withdraw them (birdc configure done) "
                   f"{configured * 1000:.0f} ms after the kill")
        except (OSError, ValueError, KeyError) as ex:
            r.failures.append(f"node a's announce status: {ex}")
        r.check(withdrawn < 2.0, f"withdrawal took {withdrawn:.2f} s")
        r.check(e.nexthops(vip) == [b.uplink] or e.nexthops(vip) == [],
                f"after the withdrawal the router routes {vip} via {e.nexthops(vip)}")
        fresh = [c for s in ecmp.SOURCES for c, _ in e.curl(s, vip, 1)]
        r.note(f"new connections after the loss: {fresh.count('200')} of {len(fresh)} answered")
        r.check(fresh.count("200") == len(fresh), f"new connections failed: {fresh}")
        streams = st.wait(40)
        lost = [s for s in streams if f"{s['src']}:{s['attempts'][0]['sport']}" in on_a]
        other = [s for s in streams if s not in lost]
        r.note(f"{len(streams)} streams (Maglev): {len(lost)} on node a, broken {broken_summary(lost)}; "
               f"{len(other)} on node b, broken {broken_summary(other)}; "
               f"longest pause {max(s['attempts'][0]['max_gap'] for s in streams):.2f} s")
        r.check(lost and other, f"the streams did not use both nodes ({len(lost)} on a)")
        r.check(not any(s["broken"] for s in other), f"streams on node b broke: {broken_summary(other)}")
        r.check(not any(s["broken"] for s in lost),
                f"streams on the lost node broke although node b has the same table: {broken_summary(lost)}")
        # Node added back: the router spreads flows over both again; those rehashed to node a
        # reach it without a connection-table entry.
        # Longer streams: they must outlive node a's start.
        st = StreamRun(e.client(), groups, tokens_for(12))
        st.wait_ready(20)
        Fleet.stop(a.dp)
        t1 = time.time()
        e.start_dataplane(a)
        back = e.wait_routes({v: 2 for v in ecmp.VIPS}, 20, "node a back")
        time.sleep(0.5)
        moved = e.flows(a)
        streams = st.wait(60)
        onto_a = [s for s in streams if f"{s['src']}:{s['attempts'][0]['sport']}" in moved]
        r.note(f"node a's data plane restarted: announced again {back:.1f} s after it started "
               f"({time.time() - t1:.1f} s in all); of {len(streams)} streams {len(onto_a)} moved "
               f"to node a, broken {broken_summary(onto_a)}; broken in all {broken_summary(streams)}")
        r.check(onto_a, "no stream moved to node a when it came back: not a test of node add")
        r.check(not any(s["broken"] for s in streams), f"streams broke when node a came back: {broken_summary(streams)}")

    def s_bgp_withdraw_unhealthy(self, r):
        e = self.ecmp()
        vip2 = ecmp.VIPS[1]
        for name in ("mx-gpu-1", "mx-gpu-2"):
            self.kill_server(name)
        gone = e.wait_routes({vip2: 0, ecmp.VIPS[0]: 2}, 15, f"{vip2} with every backend down")
        r.note(f"mixtral's two backends killed: {vip2} withdrawn by both nodes in {gone:.1f} s "
               f"(health: interval 500 ms, timeout 500 ms, fall 3); {ecmp.VIPS[0]} still via both")
        for n in ecmp.NODES:
            status = e.node_status(n)
            r.check(re.search(rf"{re.escape(vip2)}\s+withdrawn: no healthy backend", status),
                    f"node {n.name} status does not say why: {status.strip()}")
        code = e.curl(ecmp.SOURCES[0], vip2, 1, timeout=2)[0][0]
        r.check(code == "000", f"{vip2} still answered ({code})")
        for name in ("mx-gpu-1", "mx-gpu-2"):
            self.start_server(name)
        back = e.wait_routes({vip2: 2}, 15, f"{vip2} with its backends back")
        r.note(f"backends restarted: {vip2} announced by both nodes again in {back:.1f} s")
        # Operator drain of one node: every VIP withdrawn from it, then back.
        b = ecmp.NODES[1]
        out = run([self.ctl_bin, "node", "drain", "--api", b.api, "--instance", b.instance,
                   "--shm-dir", self.shm, "--wait", "10s", "--quiet", "1s"], check=False)
        hops = {v: e.nexthops(v) for v in ecmp.VIPS}
        r.note(f"node drain of node b: exit {out.returncode}, router {hops}; "
               f"{out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()}")
        r.check(out.returncode == 0 and all(h == [ecmp.NODES[0].uplink] for h in hops.values()),
                f"node drain did not leave only node a: {hops} {out.stderr.strip()}")
        run([self.ctl_bin, "node", "undrain", "--api", b.api, "--instance", b.instance,
             "--shm-dir", self.shm, "--wait", "10s"])
        e.wait_routes({v: 2 for v in ecmp.VIPS}, 10, "undrain")

def arp_probe(iface, sender, target, timeout):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0))
    mac = s.getsockname()[4]
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(sender) + \
        b"\0" * 6 + socket.inet_aton(target)
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            frame = s.recv(2048)
        except socket.timeout:
            break
        if len(frame) < 42 or frame[12:14] != b"\x08\x06":
            continue
        op = struct.unpack("!H", frame[20:22])[0]
        if op == 2 and frame[28:32] == socket.inet_aton(target):
            print(":".join(f"{b:02x}" for b in frame[22:28]))
            return
    print("none")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "arp-probe":
        arp_probe(*sys.argv[2:6])
        return 0
    if cleanup_command(E2E):
        ecmp.remove(E2E.router)
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--only", default="")
    args = p.parse_args()
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)}; the scenarios: {', '.join(SCENARIOS)}")
    names = [n for n in SCENARIOS if not only or n in only]

    signals_raise()

    t_start = time.time()
    h = Harness(args.bin, args.work)
    passed = failed = 0
    progress = os.path.join(args.work, "progress")
    print(f"1..{len(names)}", flush=True)
    started = False
    try:
        log("fleet: namespaces, backends, control plane, data plane")
        h.start()
        log(f"fleet up in {time.time() - t_start:.1f} s (decapsulation: {h.decapsulator()})")
        started = True
        for k, name in enumerate(names, 1):
            r = Result()
            t0 = time.time()
            log(f"scenario {name}")
            try:
                getattr(h, "s_" + name.replace("-", "_"))(r)
            except Fail as e:
                r.failures.append(str(e))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a harness bug must show as a failure, not stop the run
                r.failures.append(f"{type(e).__name__}: {e}")
            following = names[k] if k < len(names) else None
            try:
                h.restore(dataplane=following is not None and following not in ECMP_SCENARIOS)
            except Exception as e:
                r.failures.append(f"restoring the base fleet after {name}: {e}")
            ok = not r.failures
            passed += ok
            failed += not ok
            print(f"{'ok' if ok else 'not ok'} {k} - {name}", flush=True)
            for line in r.notes:
                print(f"# {line}")
            for line in r.failures:
                print(f"# FAILED: {line}")
            print(f"# ({time.time() - t0:.1f} s)", flush=True)
            with open(progress, "w") as f:
                f.write(f"{passed} {failed}\n")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        print(f"# interrupted ({e})")
        failed += 1
    except Exception as e:  # Fail, or a missing binary, a command that is not there...
        if started:
            log(f"harness error: {e}")
            print(f"# harness error: {type(e).__name__}: {e}")
            failed += 1
        else:
            log(f"setup failed: {e}")
            for k, name in enumerate(names, 1):
                print(f"not ok {k} - {name}\n# FAILED: the fleet could not be set up: {e}")
            failed = len(names)
    finally:
        signals_ignore()
        h.cleanup()
        keep = os.environ.get("E2E_KEEP_LOGS")
        if keep:
            subprocess.run(["cp", "-r", h.logs, h.work + "/policies", keep], check=False)
    t0 = float(os.environ.get("E2E_T0", t_start))
    print(f"# run time {time.time() - t_start:.0f} s for the scenarios, {time.time() - t0:.0f} s "
          f"with the build")
    print(f"{passed} passed, {failed} failed", flush=True)
    with open(progress, "w") as f:
        f.write("done\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
