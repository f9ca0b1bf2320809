#!/usr/bin/env python3
"""Summarize bench/compare.sh results: medians, spread and ratios.

Reads the JSON lines loadgen printed (label "server scenario round") and
prints one Markdown table per scenario: for each server the median of the
headline metric with its [min-max] over rounds, the error count, and the
CPU both sides used; then ratios against Dovecot. Standard library only.

usage: summarize.py RESULTS.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict

# scenario prefix -> (metric title, getter, higher_is_better)
METRICS = {
    "S1": ("sessions/s", lambda r: r["sessions_per_s"], True),
    "S2": ("logins/s", lambda r: r["sessions_per_s"], True),
    "S3": ("MB/s (RETR bodies)", lambda r: r["retr_mb_per_s"], True),
    "S4": ("KiB PSS per idle conn", lambda r: (r.get("server_memory_kib") or {}).get("pss_per_conn"), False),
    "S5": ("NOOP p50 ms", lambda r: r["latency_ms"].get("NOOP", {}).get("p50"), False),
}

# Secondary columns: title, getter.
SECONDARY = {
    "S1": ("session p99 ms", lambda r: r["latency_ms"].get("session", {}).get("p99")),
    "S2": ("PASS p99 ms", lambda r: r["latency_ms"].get("PASS", {}).get("p99")),
    "S3": ("RETR p99 ms", lambda r: r["latency_ms"].get("RETR", {}).get("p99")),
    "S4": ("KiB RSS per idle conn", lambda r: (r.get("server_memory_kib") or {}).get("rss_per_conn")),
    "S5": ("NOOP p99 ms", lambda r: r["latency_ms"].get("NOOP", {}).get("p99")),
}

def per(numerator_scale, denominator):
    """Server CPU per unit of work: steadier than throughput on a busy host,
    because waiting for a CPU costs time but not CPU."""
    def get(r):
        cpu = (r.get("cpu_s") or {}).get("server")
        units = denominator(r)
        return None if cpu is None or not units else cpu * numerator_scale / units
    return get


# scenario prefix -> (title, getter) for the server's CPU cost per unit.
COST = {
    "S1": ("server CPU ms/session", per(1e3, lambda r: r["sessions_ok"])),
    "S2": ("server CPU ms/login", per(1e3, lambda r: r["sessions_ok"])),
    "S3": ("server CPU s/GB", per(1e3, lambda r: r["retr_mb_per_s"] * r["elapsed_s"])),
    "S4": ("server CPU ms/login", per(1e3, lambda r: (r.get("idle") or {}).get("ready"))),
    "S5": ("server CPU us/NOOP", per(1e6, lambda r: r["commands"])),
}

SERVER_ORDER = ["pop3d", "dovecot", "null"]


def cpu_percent(r, side):
    cpu = r.get("cpu_s") or {}
    value, window = cpu.get(side), cpu.get("window_s")
    if value is None or not window:
        return None
    return 100.0 * value / window


def spread(values, fmt="{:.1f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a", None
    median = statistics.median(values)
    if len(values) == 1:
        return fmt.format(median), median
    return f"{fmt.format(median)} [{fmt.format(min(values))}-{fmt.format(max(values))}]", median


def fmt_for(value):
    return "{:.3f}" if value is not None and abs(value) < 10 else "{:.1f}"


def headline(runs, scenarios):
    """One line per scenario: the headline metric's median per server."""
    servers = sorted({s for _, s in runs}, key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)
    print("| scenario | metric | " + " | ".join(servers) + " | " +
          " | ".join(f"{s}/dovecot" for s in servers if s != "dovecot") + " |")
    print("|---|---|" + "---|" * (len(servers) + len([s for s in servers if s != "dovecot"])))
    rows = []
    for scenario in scenarios:
        title, get, _ = METRICS.get(scenario[:2], ("sessions/s", lambda r: r["sessions_per_s"], True))
        rows.append((scenario, title, get))
        if scenario[:2] in COST:
            cost_title, cost = COST[scenario[:2]]
            rows.append((scenario, cost_title, cost))
    for scenario, title, get in rows:
        medians = {}
        for server in servers:
            values = [v for v in (get(r) for r in runs.get((scenario, server), [])) if v is not None]
            medians[server] = statistics.median(values) if values else None
        cells = [fmt_for(m).format(m) if m is not None else "n/a" for m in medians.values()]
        base = medians.get("dovecot")
        ratios = [f"{medians[s] / base:.3g}x" if base and medians[s] is not None else "n/a"
                  for s in servers if s != "dovecot"]
        print(f"| {scenario} | {title} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


def main(path):
    runs = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            parts = r.get("label", "").split()
            if len(parts) < 2:
                continue
            runs[(parts[1], parts[0])].append(r)
    # In the order compare.sh ran them.
    scenarios = list(dict.fromkeys(s for s, _ in runs))
    headline(runs, scenarios)
    for scenario in scenarios:
        key = scenario[:2]
        title, get, higher_better = METRICS.get(key, ("sessions/s", lambda r: r["sessions_per_s"], True))
        second_title, second = SECONDARY.get(key, ("", lambda r: None))
        print(f"\n### {scenario}\n")
        cost_title, cost = COST.get(key, ("server CPU", lambda r: None))
        print(f"| server | {title} median [min-max] | {second_title} | {cost_title} | errors | runs "
              "| loadgen CPU % | server CPU % | host load |")
        print("|---|---|---|---|---|---|---|---|---|")
        medians = {}
        servers = sorted({s for sc, s in runs if sc == scenario},
                         key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)
        for server in servers:
            rs = runs[(scenario, server)]
            values = [get(r) for r in rs]
            first = next((v for v in values if v is not None), None)
            text, median = spread(values, fmt_for(first))
            medians[server] = median
            seconds = [second(r) for r in rs]
            first2 = next((v for v in seconds if v is not None), None)
            text2, _ = spread(seconds, fmt_for(first2))
            errors = sum(r["errors_total"] for r in rs)
            kinds = defaultdict(int)
            for r in rs:
                for k, v in r["errors"].items():
                    kinds[k] += v
            if kinds:
                errors = f"{errors} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})"
            lg, _ = spread([cpu_percent(r, "loadgen") for r in rs], "{:.0f}")
            sv, _ = spread([cpu_percent(r, "server") for r in rs], "{:.0f}")
            costs = [cost(r) for r in rs]
            cost_text, _ = spread(costs, fmt_for(next((v for v in costs if v is not None), None)))
            load, _ = spread([r.get("host_loadavg_1m") for r in rs], "{:.1f}")
            print(f"| {server} | {text} | {text2} | {cost_text} | {errors} | {len(rs)} | {lg} | {sv} | {load} |")
        base = medians.get("dovecot")
        if base:
            ratios = []
            for server, median in medians.items():
                if server != "dovecot" and median is not None:
                    ratio = median / base
                    better = ratio > 1 if higher_better else ratio < 1
                    ratios.append(f"{server}/dovecot = {ratio:.3g}x ({'better' if better else 'worse'})")
            if ratios:
                print(f"\nRatio of medians ({title}): " + "; ".join(ratios))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
