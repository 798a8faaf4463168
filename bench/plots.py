"""PNG plots of a ci/bench report: packet rate against flows, backends, prefixes, services and
workers, forward baseline and full pipeline. Imported by bench/run.py (needs python3-matplotlib).
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _sizes(report: dict) -> str:
    sizes = report.get("traffic", {}).get("sizes", "64")
    share = report.get("traffic", {}).get("ipv6_share", 0)
    text = "64-byte frames" if sizes == "64" else f"frames {sizes}"
    return text + (f", {share:.0%} IPv6" if share else "")


def _sweep(sc: dict, name: str):
    xs, fwd, pipe = [], [], []
    for k, d in sc.get(name, {}).items():
        if not isinstance(d, dict) or "pipeline" not in d:
            continue
        xs.append(int(k))
        pipe.append(d["pipeline"]["median_mpps"])
        fwd.append(d["forward"]["median_mpps"] if "forward" in d else None)
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    return [xs[i] for i in order], [fwd[i] for i in order], [pipe[i] for i in order]


def _line(report: dict, name: str, xlabel: str, path: str, title: str) -> bool:
    sc = report["scenarios"]
    xs, fwd, pipe = _sweep(sc, name)
    if len(xs) < 2:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if all(f is not None for f in fwd):
        ax.plot(xs, fwd, "o-", label="forward (baseline)")
    else:
        ax.axhline(report["baseline_mpps"], color="C0", ls="--", label="forward (headline baseline)")
    ax.plot(xs, pipe, "s-", color="C1", label="full pipeline")
    for x, p in zip(xs, pipe):
        ax.annotate(f"{p:.1f}", (x, p), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Mpps (one worker, median)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _workers(report: dict, path: str) -> bool:
    w = report["scenarios"].get("workers")
    if not w:
        return False
    labels = ["1", "2"]
    fwd = [w[k]["forward"]["median_mpps"] for k in labels]
    pipe = [w[k]["pipeline"]["median_mpps"] for k in labels]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], fwd, 0.4, label="forward (baseline)")
    ax.bar([i + 0.2 for i in x], pipe, 0.4, label="full pipeline")
    for i in x:
        ax.annotate(f"{fwd[i]:.1f}", (i - 0.2, fwd[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax.annotate(f"{pipe[i]:.1f}", (i + 0.2, pipe[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(list(x), [f"{k} worker{'s' if k != '1' else ''}" for k in labels])
    ax.set_ylabel("Mpps (median)")
    flows = report["flows"]
    ax.set_title(f"Rate against workers ({flows} flows, {_sizes(report)}; {report['machine']['cpus']} CPUs)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(report: dict, out: str) -> list:
    written = []
    flows = report["flows"]
    for name, xlabel, title in [
        ("flows", "live flows", f"Rate against flows ({_sizes(report)}, one worker)"),
        ("backends", "backends in the Maglev pool(s)", f"Rate against backends ({flows} flows)"),
        ("prefixes", "geo prefixes (GeoIP database)", f"Rate against geo prefixes ({flows} flows)"),
        ("services", "services (VIPs)", f"Rate against services ({flows} flows)"),
    ]:
        path = os.path.join(out, f"{name}.png")
        if _line(report, name, xlabel, path, title):
            written.append(path)
    path = os.path.join(out, "workers.png")
    if _workers(report, path):
        written.append(path)
    return written
