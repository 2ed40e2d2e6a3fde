#!/usr/bin/env python3
"""Tabulates the shardmq-bench JSON reports of one `benches/compare` run.

    report.py summary RUN/<broker>.<scenario>.try<n> STARTED   one progress line
    report.py write RUN RESULTS.md results.png                 the results page and chart

A run directory holds meta.txt (key=value lines written by the script) and,
per attempt at a scenario, <broker>.<scenario>.try<n>.status ("ok" or why
not), .json (shardmq-bench --json, when ok) and .foreign (cores other
people's processes used meanwhile, from cpuwatch.py). The tables show the
best attempt of each scenario. <broker>.<scenario>.perf.* is the perf pass
of a fleet, churn or voice scenario: only its system call and io_uring
submission counts are used, since tracing slows the broker down.
"""

import itertools
import json
import math
import os
import sys
import time

BROKERS = ["shardmq", "shardmq-2shards", "mosquitto", "mosquitto-nodelay", "rumqttd", "baseline"]
BROKER_NAMES = {
    "shardmq": "shardmq (1 shard)",
    "shardmq-2shards": "shardmq (2 shards, unpinned)",
    "mosquitto": "mosquitto",
    "mosquitto-nodelay": "mosquitto, TCP_NODELAY",
    "rumqttd": "rumqttd",
    "baseline": "baseline router",
}
MOSQUITTOS = ("mosquitto", "mosquitto-nodelay")
LOAD_SCENARIOS = ["p2p-q0", "fanout-q0", "p2p-q1", "p2p-q2", "latency"]
SCENARIO_NAMES = {
    "p2p-q0": "p2p 50 pairs, QoS 0",
    "fanout-q0": "fan-out 1 → 100, QoS 0",
    "p2p-q1": "p2p 50 pairs, QoS 1, window 32",
    "p2p-q2": "p2p 50 pairs, QoS 2, window 32",
    "latency": "latency, 10k msg/s over 10 pairs, QoS 0",
    "conns": "idle connections",
    "fleet-q0": "fleet 4,000 → 4,000 at 5 msg/s each, QoS 0",
    "fleet-q1": "fleet 4,000 → 4,000 at 5 msg/s each, QoS 1",
    "churn": "connection churn, 100 clients",
    "voice": "voice, 400 devices",
    "voice-1000": "voice, 1,000 devices",
    "tls-p2p-q0": "TLS, p2p 50 pairs, QoS 0",
    "tls-p2p-q1": "TLS, p2p 50 pairs, QoS 1, window 32",
    "tls-conns": "TLS, idle connections",
    "ws-p2p-q0": "WebSocket, p2p 50 pairs, QoS 0",
    "ws-p2p-q1": "WebSocket, p2p 50 pairs, QoS 1, window 32",
    "wss-p2p-q0": "WebSocket over TLS, p2p 50 pairs, QoS 0",
    "wss-p2p-q1": "WebSocket over TLS, p2p 50 pairs, QoS 1, window 32",
}
SHORT_NAMES = {
    "latency": "10k msg/s",
    "p2p-q0": "p2p QoS 0",
    "fanout-q0": "fan-out 1→100 QoS 0",
    "p2p-q1": "p2p QoS 1",
    "p2p-q2": "p2p QoS 2",
    "fleet-q0": "fleet QoS 0",
    "fleet-q1": "fleet QoS 1",
}
FLEET_SCENARIOS = ["fleet-q0", "fleet-q1"]
VOICE_SCENARIOS = ["voice", "voice-1000"]
# MQTT over TLS and WebSocket: <transport>-<plain scenario>.
SECURE_SCENARIOS = [
    "tls-p2p-q0", "tls-p2p-q1", "ws-p2p-q0", "ws-p2p-q1", "wss-p2p-q0", "wss-p2p-q1", "tls-conns"
]
IDLE_SCENARIOS = ("conns", "tls-conns")
# Scenarios whose headline figure is better when lower.
LOWER_IS_BETTER = ("latency", "conns", "tls-conns", "fleet-q0", "fleet-q1", "voice", "voice-1000")
# The voice shape of issue 9: 400 devices streaming 100 frames each way,
# and what the Node reference gateway (which cannot be installed here) and
# shardmq spent on it then, as the table states them.
VOICE_SHAPE_DEVICES = 400
VOICE_SHAPE_FRAMES = 100
VOICE_SHAPE_DATAGRAMS = VOICE_SHAPE_DEVICES * VOICE_SHAPE_FRAMES * 2
NODE_VOICE_CPU_S = 7.7
NODE_VOICE_LOST_PCT = 1.1
SHARDMQ_VOICE_CPU_S_BEFORE = 2.9
# Issue 9's voice target: gateway CPU per datagram at most this share of Node's.
VOICE_TARGET = 0.2
# Issue 9's voice round-trip target.
VOICE_RTT_P99_US = 20_000
# A generator above this share of its core, with a broker below it, set the
# pace itself.
SATURATED = 0.9
# Other people's processes using more cores than this during a run disturb it
# (the script's threshold for trying again).
DISTURBED = 0.10


class Run:
    def __init__(self, path):
        self.path = path
        self.meta = {}
        with open(os.path.join(path, "meta.txt"), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                self.meta[key] = value
        self.brokers = [b for b in BROKERS if b in self.meta.get("brokers", "").split()]
        self.scenarios = self.meta.get("scenarios", "").split()
        self._attempts = {}

    def attempts(self, broker, scenario):
        """Every attempt in order, as dicts: status ("ok" or why not),
        report (the JSON, when ok), load and top (other people's CPU)."""
        key = (broker, scenario)
        if key in self._attempts:
            return self._attempts[key]
        out = []
        for n in itertools.count():
            base = os.path.join(self.path, f"{broker}.{scenario}.try{n}")
            try:
                with open(base + ".status", encoding="utf-8") as f:
                    status = f.read().strip()
            except FileNotFoundError:
                break
            report = None
            if status == "ok":
                try:
                    with open(base + ".json", encoding="utf-8") as f:
                        report = json.load(f)
                except (OSError, ValueError) as e:
                    status = f"unreadable JSON report: {e}"
            load, top = foreign_load(base)
            out.append({"status": status, "report": report, "load": load, "top": top})
        self._attempts[key] = out
        return out

    def chosen(self, broker, scenario):
        """The attempt the tables show: the best one that worked (other
        load only ever makes a broker look worse), else the last failure;
        None when the scenario was not run."""
        tries = self.attempts(broker, scenario)
        worked = [t for t in tries if t["report"] is not None]
        if not worked:
            return tries[-1] if tries else None
        return max(worked, key=lambda t: score(scenario, t["report"]))

    def result(self, broker, scenario):
        """(status, report): status is "ok", a failure reason, or None when not run."""
        t = self.chosen(broker, scenario)
        return (None, None) if t is None else (t["status"], t["report"])

    def report(self, broker, scenario):
        return self.result(broker, scenario)[1]

    def note(self, broker, scenario):
        """What a reader should know about the attempts behind a row, or None:
        the chosen one was disturbed, or the attempts disagree (by over 25%,
        or some failed)."""
        tries = self.attempts(broker, scenario)
        t = self.chosen(broker, scenario)
        parts = []
        if t and t["load"] is not None and t["load"] > DISTURBED:
            parts.append(
                f"‡ other people's processes used {t['load']:.2f} cores during it "
                f"({t['top'].replace(',', ', ')})"
            )
        if len(tries) > 1:
            what, metric, fmt = headline(scenario)
            values = [metric(a["report"]) if a["report"] is not None else None for a in tries]
            known = [v for v in values if v is not None]
            agree = len(known) == len(values) and min(known) > 0 and max(known) / min(known) <= 1.25
            if not agree:
                shown = " / ".join("failed" if v is None else fmt(v) for v in values)
                loads = " / ".join("?" if a["load"] is None else f"{a['load']:.2f}" for a in tries)
                parts.append(f"{len(tries)} attempts: {what} {shown}, with other processes at {loads} cores")
        return "; ".join(parts) or None

    def reference(self, scenario):
        """(broker, report) of the better mosquitto run: lower p99 for the
        latency scenario, more delivered/s for the others."""
        runs = [(b, self.report(b, scenario)) for b in MOSQUITTOS]
        runs = [(b, r) for b, r in runs if r is not None]
        if scenario in IDLE_SCENARIOS:
            runs = [(b, r) for b, r in runs if b == "mosquitto"]
        if not runs:
            return None, None
        if scenario == "latency":
            return min(runs, key=lambda br: p99(br[1]) if p99(br[1]) is not None else math.inf)
        if scenario in FLEET_SCENARIOS:
            # The steady one first (see `kept_up`), then the cheaper.
            return min(
                runs,
                key=lambda br: (
                    not kept_up(scenario, br[1]),
                    cpu_per_million(br[1]) if cpu_per_million(br[1]) is not None else math.inf,
                ),
            )
        if scenario == "churn":
            return max(runs, key=lambda br: cycles(br[1]) or 0)
        return max(runs, key=lambda br: delivered(br[1]) or 0)

    def base(self, scenario):
        return self.reference(scenario)[1]

    def best_mosquitto(self, scenario, metric):
        """(broker, value) of the mosquitto run with the lower `metric`,
        among those in a steady state if any was (see `kept_up`)."""
        values = [(b, self.report(b, scenario)) for b in MOSQUITTOS]
        values = [(b, metric(r), kept_up(scenario, r)) for b, r in values if r is not None]
        values = [v for v in values if v[1] is not None]
        if not values:
            return None, None
        b, v, _ = min(values, key=lambda bvk: (not bvk[2], bvk[1]))
        return b, v

    def perf(self, broker, scenario):
        """The kernel_events of the perf pass, or None."""
        base = os.path.join(self.path, f"{broker}.{scenario}.perf")
        try:
            with open(base + ".status", encoding="utf-8") as f:
                if f.read().strip() != "ok":
                    return None
            with open(base + ".json", encoding="utf-8") as f:
                return dig(json.load(f), "server", "kernel_events")
        except (OSError, ValueError):
            return None


# --- figures -------------------------------------------------------------------


def dig(report, *keys):
    """report[k1][k2]..., or None where anything is missing."""
    value = report
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def delivered(report):
    return dig(report, "delivered_per_s")


def cpu_per_million(report):
    # Nothing delivered leaves the broker's CPU with nothing to divide by.
    if not delivered(report):
        return None
    return dig(report, "server", "cpu_s_per_million_delivered")


def latency(report, key):
    # Without samples (a saturated broker delivers nothing sent in the window
    # before the drain ends) the percentiles read 0: no figure.
    if not dig(report, "latency", "samples"):
        return None
    return dig(report, "latency", key)


def p99(report):
    return latency(report, "p99_us")


def rss_span(r):
    """The broker's RSS before and after an idle-connections run."""
    before = dig(r, "server", "before", "vm_rss_kib")
    after = dig(r, "server", "after", "vm_rss_kib")
    return "—" if before is None or after is None else f"{before / 1024:.1f} → {after / 1024:.1f} MiB"


def rss_per_conn(report):
    return dig(report, "server", "rss_bytes_per_conn")


def cycles(report):
    return dig(report, "cycles_per_s")


def cpu_per_cycle(report):
    """Broker CPU ms per 1,000 churn cycles."""
    if not dig(report, "cycles"):
        return None
    return dig(report, "server", "cpu_ms_per_thousand_cycles")


def cycles_per_core(report):
    """Churn cycles per second of broker CPU: the rate one busy broker core
    would sustain, whether or not this run kept it busy."""
    per_thousand = cpu_per_cycle(report)
    return None if not per_thousand else 1e6 / per_thousand


def voice_cpu(report):
    """Gateway CPU µs per datagram (both directions)."""
    packets = (dig(report, "up_sent_per_s") or 0) + (dig(report, "down_received_per_s") or 0)
    if not packets:
        return None
    return dig(report, "server", "cpu_s_per_million_packets")


def kernel_share(report):
    """Share of the broker's CPU time spent in the kernel, or None."""
    user, system = dig(report, "server", "user_s"), dig(report, "server", "system_s")
    if user is None or system is None or user + system <= 0:
        return None
    return system / (user + system)


def split_cell(per_unit, report):
    """A per-unit CPU figure as user / kernel, with the kernel's share."""
    share = kernel_share(report)
    if per_unit is None or share is None:
        return "—"
    return f"{fmt_cpu(per_unit * (1 - share))} / {fmt_cpu(per_unit * share)} ({100 * share:.0f}% kernel)"


def events_cell(events, key):
    value = dig(events, key) if events else None
    return "—" if value is None else f"{value:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def cell(text):
    """Free text made safe for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def count(value):
    return "—" if value is None else f"{value:,.0f}"


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}×"


def fmt_us(value):
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} µs"
    if value < 1_000_000:
        return f"{value / 1000:.3g} ms"
    return f"{value / 1_000_000:.3g} s"


def fmt_cpu(value):
    return "—" if value is None else f"{value:.3g}"


def loss(report):
    i = report.get("integrity") or {}
    lost, expected = i.get("lost"), i.get("expected")
    if lost is None:
        return "—"
    if lost and expected:
        return f"{lost:,} ({100 * lost / expected:.2g}%)"
    return f"{lost:,}"


def headline(scenario):
    """(name, metric, format) of a scenario's main figure."""
    if scenario == "latency":
        return "p99", p99, fmt_us
    if scenario in IDLE_SCENARIOS:
        return "RSS/connection", rss_per_conn, lambda v: f"{count(v)} B"
    if scenario in FLEET_SCENARIOS:
        return "broker CPU µs/msg", cpu_per_million, fmt_cpu
    if scenario == "churn":
        return "cycles/s", cycles, count
    if scenario in VOICE_SCENARIOS:
        return "gateway CPU µs/datagram", voice_cpu, fmt_cpu
    return "delivered/s", delivered, count


def kept_up(scenario, report):
    """Whether a fixed-load run was in a steady state: the fleet broker
    delivered at least 95% of the offered rate, the voice gateway lost
    nothing in the window. A broker that falls behind spends less per
    message (each wake-up finds more to do), so such a run is no figure of
    the steady state."""
    if scenario in FLEET_SCENARIOS:
        rate = dig(report, "config", "rate_per_publisher") or 0
        offered = rate * (dig(report, "config", "publishers") or 0)
        return offered > 0 and (delivered(report) or 0) >= 0.95 * offered
    if scenario in VOICE_SCENARIOS:
        return dig(report, "up", "window_lost") == 0 and dig(report, "down", "window_lost") == 0
    return True


def score(scenario, report):
    """Higher is better: a steady state first (see `kept_up`), then
    delivered/s or cycles/s, or less p99, RSS per connection or CPU per
    message."""
    _, metric, _ = headline(scenario)
    value = metric(report)
    if value is None:
        return (False, -math.inf)
    return (kept_up(scenario, report), -value if scenario in LOWER_IS_BETTER else value)


# --- progress line ---------------------------------------------------------------


def foreign_load(base):
    """(cores, "name:cores,...") other processes used during a run, or (None, "")."""
    try:
        with open(base + ".foreign", encoding="utf-8") as f:
            cores, _, top = f.read().strip().partition(" ")
        return float(cores), top
    except (OSError, ValueError):
        return None, ""


def summary(base, started):
    broker, scenario = os.path.basename(base).split(".")[:2]
    with open(base + ".status", encoding="utf-8") as f:
        status = f.read().strip()
    took = ""
    try:
        took = f" ({time.time() - float(started):.0f} s)"
    except ValueError:
        pass
    load, top = foreign_load(base)
    if load is not None and load > DISTURBED:
        took += f"; other processes used {load:.2f} cores ({top.replace(',', ', ')})"
    head = f"    {broker:17} {scenario:10}"
    if status != "ok":
        print(f"{head} FAILED: {status}{took}")
        return
    with open(base + ".json", encoding="utf-8") as f:
        r = json.load(f)
    if scenario in IDLE_SCENARIOS:
        print(
            f"{head} {r.get('established', 0):,}/{r.get('requested', 0):,} connections, "
            f"RSS/conn {count(rss_per_conn(r))} B{took}"
        )
        return
    if scenario == "churn":
        print(
            f"{head} cycles/s {count(cycles(r)):>8}  connect p99 "
            f"{fmt_us(dig(r, 'connect_latency', 'p99_us')):>9}  CPU ms/1k cycles "
            f"{fmt_cpu(cpu_per_cycle(r)):>6}  errors {sum((r.get('errors') or {}).values())}{took}"
        )
        return
    if scenario in VOICE_SCENARIOS:
        print(
            f"{head} {dig(r, 'config', 'devices')} devices  CPU µs/datagram {fmt_cpu(voice_cpu(r)):>6}  "
            f"lost up {dig(r, 'up', 'window_lost')} down {dig(r, 'down', 'window_lost')}  "
            f"RTT p99 {fmt_us(dig(r, 'rtt', 'p99_us'))}  generator "
            f"{dig(r, 'bench', 'cores') or 0:.2f} cores{took}"
        )
        return
    i = r.get("integrity") or {}
    print(
        f"{head} delivered/s {count(delivered(r)):>11}  p99 {fmt_us(p99(r)):>9}  "
        f"CPU s/1M {fmt_cpu(cpu_per_million(r)):>6}  lost {i.get('lost', '?')} "
        f"dup {i.get('duplicated', '?')}{took}"
    )


# --- RESULTS.md --------------------------------------------------------------------


def load_table(run):
    rows = [
        "| Scenario | Broker | delivered/s | × mosquitto | published/s | p50 | p99 | p99.9 "
        "| lost | dup | broker CPU s / 1M delivered | × mosquitto | cores: broker / generator |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for scenario in LOAD_SCENARIOS:
        if scenario not in run.scenarios:
            continue
        ref, base = run.reference(scenario)
        for broker in run.brokers:
            status, r = run.result(broker, scenario)
            if status is None:
                continue
            name = SCENARIO_NAMES[scenario]
            if r is None:
                rows.append(f"| {name} | {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 10)
                continue
            gen_cores, broker_cores = dig(r, "bench", "cores"), dig(r, "server", "cores")
            cores = " / ".join("—" if c is None else f"{c:.2f}" for c in (broker_cores, gen_cores))
            if (
                scenario != "latency"
                and gen_cores is not None
                and broker_cores is not None
                and gen_cores >= SATURATED > broker_cores
            ):
                cores += " †"
            note = run.note(broker, scenario)
            if note and note.startswith("‡"):
                cores += " ‡"
            i = r.get("integrity") or {}
            mark = " ◆" if broker == ref else ""
            rows.append(
                f"| {name} | {BROKER_NAMES[broker]}{mark} | {count(delivered(r))} "
                f"| {fmt_ratio(ratio(delivered(r), delivered(base)))} "
                f"| {count(dig(r, 'published_per_s'))} "
                f"| {fmt_us(latency(r, 'p50_us'))} | {fmt_us(p99(r))} "
                f"| {fmt_us(latency(r, 'p999_us'))} "
                f"| {loss(r)} | {count(i.get('duplicated'))} "
                f"| {fmt_cpu(cpu_per_million(r))} "
                f"| {fmt_ratio(ratio(cpu_per_million(r), cpu_per_million(base)))} | {cores} |"
            )
            extra = [note] if note else []
            if i.get("reordered"):
                extra.append(f"{i['reordered']:,} reordered")
            if i.get("unacked"):
                extra.append(f"{i['unacked']:,} never acknowledged")
            errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
            if errors:
                extra.append("generator saw " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
            if extra:
                notes.append(f"- {name}, {BROKER_NAMES[broker]}: " + "; ".join(extra) + ".")
    return rows, notes


def conns_table(run):
    if "conns" not in run.scenarios:
        return [], []
    rows = [
        "| Broker | established | held to the end | connects/s | RSS / connection "
        "| anonymous / connection | × mosquitto (RSS) | broker RSS before → after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    base = run.base("conns")
    for broker in run.brokers:
        status, r = run.result(broker, "conns")
        if status is None:
            continue
        if r is None:
            rows.append(f"| {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 6)
            continue
        span = rss_span(r)
        note = run.note(broker, "conns")
        if note:
            notes.append(f"- idle connections, {BROKER_NAMES[broker]}: {note}.")
        rows.append(
            f"| {BROKER_NAMES[broker]} | {count(r.get('established'))} of {count(r.get('requested'))} "
            f"| {count(r.get('held'))} | {count(r.get('connects_per_s'))} "
            f"| {count(rss_per_conn(r))} B | {count(dig(r, 'server', 'anonymous_bytes_per_conn'))} B "
            f"| {fmt_ratio(ratio(rss_per_conn(r), rss_per_conn(base)))} | {span} |"
        )
        errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
        if errors:
            notes.append(
                f"- idle connections, {BROKER_NAMES[broker]}: generator saw "
                + ", ".join(f"{k} ×{v}" for k, v in errors.items())
                + "."
            )
    return rows, notes


def secure_table(run):
    """MQTT over TLS, WebSocket and both: throughput and CPU per message
    against mosquitto on the same transport, and against the same broker
    over plain TCP when the run has that scenario too; idle connections
    over TLS."""
    scenarios = [sc for sc in SECURE_SCENARIOS if sc in run.scenarios and sc != "tls-conns"]
    rows, notes = [], []
    if scenarios:
        rows += [
            "| Scenario | Broker | delivered/s | × mosquitto | × own TCP | broker CPU µs / msg "
            "| × mosquitto | × own TCP | p50 | p99 | lost | cores: broker / generator |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
    for scenario in scenarios:
        plain = scenario.split("-", 1)[1]
        ref, base = run.reference(scenario)
        for broker in run.brokers:
            status, r = run.result(broker, scenario)
            if status is None:
                continue
            name = SCENARIO_NAMES[scenario]
            if r is None:
                rows.append(f"| {name} | {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 9)
                continue
            tcp = run.report(broker, plain)
            gen_cores, broker_cores = dig(r, "bench", "cores"), dig(r, "server", "cores")
            cores = " / ".join("—" if c is None else f"{c:.2f}" for c in (broker_cores, gen_cores))
            if gen_cores is not None and broker_cores is not None and gen_cores >= SATURATED > broker_cores:
                cores += " †"
            note = run.note(broker, scenario)
            if note and note.startswith("‡"):
                cores += " ‡"
            mark = " ◆" if broker == ref else ""
            rows.append(
                f"| {name} | {BROKER_NAMES[broker]}{mark} | {count(delivered(r))} "
                f"| {fmt_ratio(ratio(delivered(r), delivered(base)))} "
                f"| {fmt_ratio(ratio(delivered(r), delivered(tcp)))} "
                f"| {fmt_cpu(cpu_per_million(r))} "
                f"| {fmt_ratio(ratio(cpu_per_million(r), cpu_per_million(base)))} "
                f"| {fmt_ratio(ratio(cpu_per_million(r), cpu_per_million(tcp)))} "
                f"| {fmt_us(latency(r, 'p50_us'))} | {fmt_us(p99(r))} | {loss(r)} | {cores} |"
            )
            extra = [note] if note else []
            errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
            if errors:
                extra.append("generator saw " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
            if extra:
                notes.append(f"- {name}, {BROKER_NAMES[broker]}: " + "; ".join(extra) + ".")
    if "tls-conns" in run.scenarios:
        if rows:
            rows.append("")
        rows += [
            "| Idle connections over TLS | established | connects/s | RSS / connection "
            "| × mosquitto | × own TCP | broker RSS before → after |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        base = run.base("tls-conns")
        for broker in run.brokers:
            status, r = run.result(broker, "tls-conns")
            if status is None:
                continue
            if r is None:
                rows.append(f"| {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 5)
                continue
            span = rss_span(r)
            tcp = run.report(broker, "conns")
            rows.append(
                f"| {BROKER_NAMES[broker]} | {count(r.get('established'))} of {count(r.get('requested'))} "
                f"| {count(r.get('connects_per_s'))} | {count(rss_per_conn(r))} B "
                f"| {fmt_ratio(ratio(rss_per_conn(r), rss_per_conn(base)))} "
                f"| {fmt_ratio(ratio(rss_per_conn(r), rss_per_conn(tcp)))} | {span} |"
            )
            note = run.note(broker, "tls-conns")
            if note:
                notes.append(f"- idle connections over TLS, {BROKER_NAMES[broker]}: {note}.")
    return rows, notes


def fleet_table(run):
    """The fleet scenarios: CPU per message, where it goes, latency, loss."""
    scenarios = [sc for sc in FLEET_SCENARIOS if sc in run.scenarios]
    if not scenarios:
        return [], []
    rows = [
        "| Scenario | Broker | delivered/s | broker CPU µs / msg | × mosquitto | × baseline router "
        "| user / kernel µs / msg | syscalls / msg | io_uring submissions / msg | p50 | p99 | p99.9 "
        "| lost | dup | cores: broker / generator |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    floor = run.report("baseline", "fleet-q0")
    for scenario in scenarios:
        ref, base = run.reference(scenario)
        name = SCENARIO_NAMES[scenario]
        for broker in run.brokers:
            status, r = run.result(broker, scenario)
            if status is None:
                continue
            if r is None:
                rows.append(f"| {name} | {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 12)
                continue
            cpu = cpu_per_million(r)
            gen_cores, broker_cores = dig(r, "bench", "cores"), dig(r, "server", "cores")
            cores = " / ".join("—" if c is None else f"{c:.2f}" for c in (broker_cores, gen_cores))
            if gen_cores is not None and gen_cores >= SATURATED:
                cores += " †"
            note = run.note(broker, scenario)
            if note and note.startswith("‡"):
                cores += " ‡"
            events = run.perf(broker, scenario)
            i = r.get("integrity") or {}
            mark = " ◆" if broker == ref else ""
            against_floor = ratio(cpu, cpu_per_million(floor)) if scenario == "fleet-q0" else None
            rows.append(
                f"| {name} | {BROKER_NAMES[broker]}{mark} | {count(delivered(r))} | {fmt_cpu(cpu)} "
                f"| {fmt_ratio(ratio(cpu, cpu_per_million(base)))} | {fmt_ratio(against_floor)} "
                f"| {split_cell(cpu, r)} | {events_cell(events, 'syscalls_per_message')} "
                f"| {events_cell(events, 'io_uring_submissions_per_message')} "
                f"| {fmt_us(latency(r, 'p50_us'))} | {fmt_us(p99(r))} | {fmt_us(latency(r, 'p999_us'))} "
                f"| {loss(r)} | {count(i.get('duplicated'))} | {cores} |"
            )
            extra = [note] if note else []
            if not kept_up(scenario, r):
                cores += " §"
                extra.append(
                    f"§ delivered {count(delivered(r))}/s of the "
                    f"{count(dig(r, 'config', 'rate_per_publisher') * dig(r, 'config', 'publishers'))}/s "
                    "offered: it fell behind, so this is no steady state"
                )
                rows[-1] = rows[-1].rsplit("| ", 1)[0] + f"| {cores} |"
            if i.get("unacked"):
                extra.append(f"{i['unacked']:,} never acknowledged")
            errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
            if errors:
                extra.append("generator saw " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
            if extra:
                notes.append(f"- {name}, {BROKER_NAMES[broker]}: " + "; ".join(extra) + ".")
    return rows, notes


def churn_table(run):
    if "churn" not in run.scenarios:
        return [], []
    rows = [
        "| Broker | cycles/s | × mosquitto | connect p50 | connect p99 | cycle p99 "
        "| broker CPU ms / 1,000 cycles | × mosquitto | cycles per broker core-second "
        "| user / kernel ms / 1,000 cycles | syscalls / cycle | errors | cores: broker / generator |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    base = run.base("churn")
    for broker in run.brokers:
        status, r = run.result(broker, "churn")
        if status is None:
            continue
        if r is None:
            rows.append(f"| {BROKER_NAMES[broker]} | **failed**: {cell(status)} |" + " |" * 11)
            continue
        errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
        gen_cores, broker_cores = dig(r, "bench_cores"), dig(r, "server", "cores")
        cores = " / ".join("—" if c is None else f"{c:.2f}" for c in (broker_cores, gen_cores))
        if gen_cores is not None and broker_cores is not None and gen_cores >= SATURATED > broker_cores:
            cores += " †"
        note = run.note(broker, "churn")
        if note and note.startswith("‡"):
            cores += " ‡"
        rows.append(
            f"| {BROKER_NAMES[broker]} | {count(cycles(r))} | {fmt_ratio(ratio(cycles(r), cycles(base)))} "
            f"| {fmt_us(dig(r, 'connect_latency', 'p50_us'))} | {fmt_us(dig(r, 'connect_latency', 'p99_us'))} "
            f"| {fmt_us(dig(r, 'cycle_latency', 'p99_us'))} | {fmt_cpu(cpu_per_cycle(r))} "
            f"| {fmt_ratio(ratio(cpu_per_cycle(r), cpu_per_cycle(base)))} | {count(cycles_per_core(r))} "
            f"| {split_cell(cpu_per_cycle(r), r)} "
            f"| {events_cell(run.perf(broker, 'churn'), 'syscalls_per_message')} "
            f"| {count(sum(errors.values()))} | {cores} |"
        )
        extra = [note] if note else []
        if errors:
            extra.append("generator saw " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
        if extra:
            notes.append(f"- connection churn, {BROKER_NAMES[broker]}: " + "; ".join(extra) + ".")
    return rows, notes


def shape_cpu_s(report):
    """Gateway CPU-seconds for issue 9's voice shape, from CPU per datagram."""
    per = voice_cpu(report)
    return None if per is None else per * VOICE_SHAPE_DATAGRAMS / 1e6


def flow_loss(report, direction):
    f = dig(report, direction) or {}
    lost, expected = f.get("window_lost"), f.get("window_expected")
    if lost is None:
        return "—"
    if lost and expected:
        return f"{lost:,} of {expected:,} ({100 * lost / expected:.2g}%)"
    return f"{lost:,} of {count(expected)}"


def generator_paced(report):
    """Whether the voice generator, not the gateway, set the pace."""
    cores = dig(report, "bench", "cores")
    return cores is not None and cores >= SATURATED


def voice_table(run):
    scenarios = [sc for sc in VOICE_SCENARIOS if sc in run.scenarios]
    if not scenarios or "shardmq" not in run.brokers:
        return [], []
    node_per = NODE_VOICE_CPU_S * 1e6 / VOICE_SHAPE_DATAGRAMS
    before_per = SHARDMQ_VOICE_CPU_S_BEFORE * 1e6 / VOICE_SHAPE_DATAGRAMS
    rows = [
        "| Gateway | devices in conversation | datagrams/s (up + down) | gateway CPU µs / datagram "
        f"| CPU-s for {VOICE_SHAPE_DEVICES} devices × {VOICE_SHAPE_FRAMES} frames each way | × Node "
        "| user / kernel µs / datagram | syscalls / datagram | io_uring submissions / datagram "
        "| lost up (window) | lost down (window) | RTT p50 | RTT p99 | cores: gateway / generator |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| Node reference gateway (issue 9's figures, not measured here) | {VOICE_SHAPE_DEVICES} | — "
        f"| {node_per:.3g} | {NODE_VOICE_CPU_S:g} | 1.00× | — | — | — "
        f"| {NODE_VOICE_LOST_PCT:g}% (both ways) | — | — | — | — |",
        f"| shardmq before issue 9 (issue 9's figures) | {VOICE_SHAPE_DEVICES} | — | {before_per:.3g} "
        f"| {SHARDMQ_VOICE_CPU_S_BEFORE:g} | {fmt_ratio(SHARDMQ_VOICE_CPU_S_BEFORE / NODE_VOICE_CPU_S)} "
        "| — | — | — | none | none | — | — | — |",
    ]
    notes = []
    for scenario in scenarios:
        status, r = run.result("shardmq", scenario)
        if status is None:
            continue
        name = f"shardmq, {SCENARIO_NAMES[scenario].split(', ', 1)[1]}"
        if r is None:
            rows.append(f"| {name} | **failed**: {cell(status)} |" + " |" * 12)
            continue
        per = voice_cpu(r)
        events = run.perf("shardmq", scenario)
        gen = dig(r, "bench", "cores")
        cores = " / ".join(
            "—" if c is None else f"{c:.2f}" for c in (dig(r, "server", "cores"), gen)
        )
        if generator_paced(r):
            cores += " †"
        note = run.note("shardmq", scenario)
        if note and note.startswith("‡"):
            cores += " ‡"
        packets = (dig(r, "up_sent_per_s") or 0) + (dig(r, "down_received_per_s") or 0)
        rows.append(
            f"| {name} | {count(dig(r, 'in_conversation'))} of {count(dig(r, 'config', 'devices'))} "
            f"| {count(packets)} | {fmt_cpu(per)} | {fmt_cpu(shape_cpu_s(r))} "
            f"| {fmt_ratio(ratio(per, node_per))} | {split_cell(per, r)} "
            f"| {events_cell(events, 'syscalls_per_message')} "
            f"| {events_cell(events, 'io_uring_submissions_per_message')} "
            f"| {flow_loss(r, 'up')} | {flow_loss(r, 'down')} "
            f"| {fmt_us(dig(r, 'rtt', 'p50_us'))} | {fmt_us(dig(r, 'rtt', 'p99_us'))} | {cores} |"
        )
        extra = [note] if note else []
        lag = dig(r, "send_lag", "p99_us")
        if generator_paced(r):
            extra.append(
                f"† the generator used {gen:.2f} of its core: it, not the gateway, set the pace "
                f"(send lag p99 {fmt_us(lag)})"
            )
        errors = {k: v for k, v in (r.get("errors") or {}).items() if v}
        if errors:
            extra.append("generator saw " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
        if extra:
            notes.append(f"- {name}: " + "; ".join(extra) + ".")
    return rows, notes


def targets9(run):
    """Issue 9's targets, for shardmq (1 shard)."""
    rows = ["| Target (issue 9) | Measured | Verdict |", "|---|---|---|"]
    if "fleet-q0" in run.scenarios and "baseline" in run.brokers:
        s, b = run.report("shardmq", "fleet-q0"), run.report("baseline", "fleet-q0")
        r = ratio(cpu_per_million(s), cpu_per_million(b))
        rows.append(
            f"| fleet QoS 0: broker CPU per delivered message ≤ the baseline router's "
            f"| {fmt_cpu(cpu_per_million(s))} vs {fmt_cpu(cpu_per_million(b))} µs ({fmt_ratio(r)}) "
            f"| {verdict_at_most(r, 1.0)} |"
        )
    if "fleet-q1" in run.scenarios:
        s = run.report("shardmq", "fleet-q1")
        who, m = run.best_mosquitto("fleet-q1", cpu_per_million)
        r = ratio(cpu_per_million(s), m)
        rows.append(
            f"| fleet QoS 1: broker CPU per delivered message ≤ 0.6× mosquitto's "
            f"| {fmt_cpu(cpu_per_million(s))} vs {fmt_cpu(m)} µs ({fmt_ratio(r)}"
            f"{f', {BROKER_NAMES[who]}' if who else ''}) | {verdict_at_most(r, 0.6)} |"
        )
    for scenario in FLEET_SCENARIOS:
        if scenario not in run.scenarios:
            continue
        s = run.report("shardmq", scenario)
        who, m = run.best_mosquitto(scenario, p99)
        r = ratio(p99(s), m)
        gen = dig(s, "bench", "cores") if s else None
        busy = f"; the generator used {gen:.2f} of its core" if gen is not None and gen >= SATURATED else ""
        rows.append(
            f"| {SHORT_NAMES[scenario]}: p99 latency ≤ mosquitto's | {fmt_us(p99(s))} vs {fmt_us(m)} "
            f"({fmt_ratio(r)}{f', {BROKER_NAMES[who]}' if who else ''}){busy} | {verdict_at_most(r, 1.0)} |"
        )
    for scenario in FLEET_SCENARIOS:
        status, s = run.result("shardmq", scenario)
        if status is None:
            continue
        what = f"{SHORT_NAMES[scenario]}: zero lost or duplicated"
        if s is None:
            rows.append(f"| {what} | {cell(status)} | no figure |")
            continue
        i = s.get("integrity") or {}
        clean = i.get("lost") == 0 and i.get("duplicated") == 0
        rows.append(
            f"| {what} | lost {count(i.get('lost'))}, duplicated {count(i.get('duplicated'))} "
            f"of {count(i.get('expected'))} | {'**PASS**' if clean else '**MISS**'} |"
        )
    if "conns" in run.scenarios:
        s, m = run.report("shardmq", "conns"), run.base("conns")
        r = ratio(rss_per_conn(s), rss_per_conn(m))
        n = count(s.get("requested")) if s else "—"
        rows.append(
            f"| RSS per idle connection ≤ 0.8× mosquitto's (at {n}) "
            f"| {count(rss_per_conn(s))} B vs {count(rss_per_conn(m))} B ({fmt_ratio(r)}) "
            f"| {verdict_at_most(r, 0.8)} |"
        )
    if "churn" in run.scenarios:
        s, m = run.report("shardmq", "churn"), run.base("churn")
        rows.append(
            f"| connection churn: cycles per second per core against mosquitto, stated "
            f"| {count(cycles(s))} vs {count(cycles(m))} cycles/s ({fmt_ratio(ratio(cycles(s), cycles(m)))}); "
            f"per broker core-second {count(cycles_per_core(s))} vs {count(cycles_per_core(m))} "
            f"({fmt_ratio(ratio(cycles_per_core(s), cycles_per_core(m)))}) "
            f"| {'stated' if s is not None and m is not None else 'no figure'} |"
        )
    if "voice" in run.scenarios and "shardmq" in run.brokers:
        s = run.report("shardmq", "voice")
        node_per = NODE_VOICE_CPU_S * 1e6 / VOICE_SHAPE_DATAGRAMS
        r = ratio(voice_cpu(s), node_per)
        paced = " (the generator set the pace)" if s is not None and generator_paced(s) else ""
        rows.append(
            f"| voice: gateway CPU per relayed datagram ≤ {VOICE_TARGET:g}× the Node reference gateway's "
            f"(≤ {NODE_VOICE_CPU_S * VOICE_TARGET:.3g} CPU-s for {VOICE_SHAPE_DEVICES} devices × "
            f"{VOICE_SHAPE_FRAMES} frames each way) "
            f"| {fmt_cpu(voice_cpu(s))} vs {node_per:.3g} µs ({fmt_ratio(r)}; "
            f"{fmt_cpu(shape_cpu_s(s))} CPU-s){paced} | {verdict_at_most(r, VOICE_TARGET)} |"
        )
    for scenario in VOICE_SCENARIOS:
        if scenario not in run.scenarios or "shardmq" not in run.brokers:
            continue
        status, s = run.result("shardmq", scenario)
        what = (
            f"voice, {SCENARIO_NAMES[scenario].split(', ', 1)[1]}: zero loss and round-trip p99 "
            f"< {fmt_us(VOICE_RTT_P99_US)}"
        )
        if s is None:
            rows.append(f"| {what} | {cell(status or 'not run')} | no figure |")
            continue
        lost = (dig(s, "up", "window_lost") or 0) + (dig(s, "down", "window_lost") or 0)
        rtt = dig(s, "rtt", "p99_us")
        ok = lost == 0 and rtt is not None and rtt < VOICE_RTT_P99_US
        paced = "; the generator set the pace" if generator_paced(s) else ""
        rows.append(
            f"| {what} | lost {count(lost)} in the window, RTT p99 {fmt_us(rtt)}{paced} "
            f"| {'**PASS**' if ok else '**MISS**'} |"
        )
    return rows if len(rows) > 2 else []


def verdict_at_least(value, target):
    if value is None:
        return "no figure"
    if value <= 0:
        return "**MISS**: nothing delivered"
    if value >= target:
        return f"**PASS** ({100 * (value / target - 1):.0f}% above)"
    return f"**MISS** by {100 * (1 - value / target):.0f}% (needs {target / value:.2f}× more)"


def verdict_at_most(value, target):
    if value is None:
        return "no figure"
    if value <= target:
        return f"**PASS** ({100 * (1 - value / target):.0f}% below)"
    return f"**MISS** by {100 * (value / target - 1):.0f}% (needs {value / target:.2f}× less)"


def targets(run):
    rows = ["| Target (issue 3) | Measured | Verdict |", "|---|---|---|"]

    def both(scenario):
        return run.report("shardmq", scenario), run.base(scenario)

    for scenario, goal in (("p2p-q0", 4.0), ("fanout-q0", 4.0), ("p2p-q1", 2.5)):
        if scenario not in run.scenarios:
            continue
        s, m = both(scenario)
        r = ratio(delivered(s), delivered(m))
        tries = run.attempts("shardmq", scenario)
        stalled = sum(1 for t in tries if t["report"] is not None and not delivered(t["report"]))
        caveat = f"; {stalled} of {len(tries)} attempts delivered nothing" if stalled and r else ""
        rows.append(
            f"| {SCENARIO_NAMES[scenario]}: delivered/s ≥ {goal:g}× mosquitto "
            f"| {fmt_ratio(r)} ({count(delivered(s))} vs {count(delivered(m))}{caveat}) "
            f"| {verdict_at_least(r, goal)} |"
        )
    if "latency" in run.scenarios:
        s, m = both("latency")
        r = ratio(p99(s), p99(m))
        rows.append(
            f"| p99 latency at 10k msg/s ≤ mosquitto | {fmt_us(p99(s))} vs {fmt_us(p99(m))} "
            f"({fmt_ratio(r)}) | {verdict_at_most(r, 1.0)} |"
        )
    # At a light fixed load too, not only flat out.
    for scenario in ("p2p-q0", "fanout-q0", "p2p-q1", "latency"):
        if scenario not in run.scenarios:
            continue
        s, m = both(scenario)
        r = ratio(cpu_per_million(s), cpu_per_million(m))
        rows.append(
            f"| broker CPU per delivered message ≤ 0.25× mosquitto ({SHORT_NAMES[scenario]}) "
            f"| {fmt_ratio(r)} ({fmt_cpu(cpu_per_million(s))} vs {fmt_cpu(cpu_per_million(m))} s / 1M) "
            f"| {verdict_at_most(r, 0.25)} |"
        )
    if "conns" in run.scenarios:
        s, m = both("conns")
        r = ratio(rss_per_conn(s), rss_per_conn(m))
        n = count(s.get("requested")) if s else "—"
        rows.append(
            f"| RSS per idle connection ≤ mosquitto (at {n}) "
            f"| {count(rss_per_conn(s))} B vs {count(rss_per_conn(m))} B ({fmt_ratio(r)}) "
            f"| {verdict_at_most(r, 1.0)} |"
        )
    for broker in ("shardmq", "shardmq-2shards"):
        for scenario in ("p2p-q1", "p2p-q2"):
            status, s = run.result(broker, scenario)
            if status is None:
                continue
            what = f"zero lost or duplicated, {SHORT_NAMES[scenario]}, {BROKER_NAMES[broker]}"
            if s is None:
                rows.append(f"| {what} | {cell(status)} | no figure |")
                continue
            i = s.get("integrity") or {}
            lost, dup = i.get("lost"), i.get("duplicated")
            clean = lost == 0 and dup == 0
            rows.append(
                f"| {what} | lost {count(lost)}, duplicated {count(dup)} of {count(i.get('expected'))} "
                f"| {'**PASS**' if clean else '**MISS**'} |"
            )
    return rows


def saturated_generator(report):
    """Whether the generator used ≥ SATURATED of its core while the broker did not."""
    gen, broker = dig(report, "bench", "cores"), dig(report, "server", "cores")
    return gen is not None and broker is not None and gen >= SATURATED > broker


def against_baseline(run):
    """shardmq (1 shard) next to the baseline router, QoS 0 throughput scenarios."""
    if "baseline" not in run.brokers:
        return []
    rows = [
        "| Scenario | shardmq delivered/s | baseline delivered/s "
        "| shardmq as a fraction of the baseline router | broker CPU s / 1M delivered: shardmq / baseline "
        "| shardmq CPU per message × baseline | cores, shardmq: broker / generator "
        "| cores, baseline: broker / generator |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    paced = False
    for scenario in ("p2p-q0", "fanout-q0"):
        if scenario not in run.scenarios:
            continue
        s, b = run.report("shardmq", scenario), run.report("baseline", scenario)
        if run.result("baseline", scenario)[0] is None:
            continue
        cores = []
        for r in (s, b):
            if r is None:
                cores.append("—")
                continue
            pair = (dig(r, "server", "cores"), dig(r, "bench", "cores"))
            c = " / ".join("—" if v is None else f"{v:.2f}" for v in pair)
            if saturated_generator(r):
                c += " †"
                paced = True
            cores.append(c)
        # Missing reports (a failed run) read as no figure.
        rows.append(
            f"| {SCENARIO_NAMES[scenario]} | {count(delivered(s))} | {count(delivered(b))} "
            f"| {fmt_ratio(ratio(delivered(s), delivered(b)))} "
            f"| {fmt_cpu(cpu_per_million(s))} / {fmt_cpu(cpu_per_million(b))} "
            f"| {fmt_ratio(ratio(cpu_per_million(s), cpu_per_million(b)))} "
            f"| {cores[0]} | {cores[1]} |"
        )
    if len(rows) == 2:
        return []
    text = [
        "`benches/router_baseline.rs` is the floor: one thread on core 0, epoll, exact topics only, "
        "each QoS 0 PUBLISH appended as the bytes that came in to every subscriber's buffer, one "
        "write per connection per round; no sessions, wildcards, QoS 1/2, retained messages or "
        "limits beyond a 1 MiB outbox per connection (like shardmq's `max_outbox_bytes`). What it "
        "spends is about the least a router on one core spends on these scenarios.",
        "",
        *rows,
    ]
    if paced:
        text += [
            "",
            "† the generator used ≥ 90% of its core while the broker did not: delivered/s is then the "
            "generator's pace, not the router's, and broker CPU per delivered message is the figure "
            "to compare.",
        ]
    return text


def cross_shard(run):
    if "shardmq-2shards" not in run.brokers:
        return []
    lines = []
    for scenario in ("p2p-q0", "p2p-q1"):
        if scenario not in run.scenarios:
            continue
        one = run.report("shardmq", scenario)
        two = run.report("shardmq-2shards", scenario)
        name = SCENARIO_NAMES[scenario]
        if run.result("shardmq-2shards", scenario)[0] is None:
            continue
        if one is None or two is None:
            lines.append(f"- {name}: not measured, a run failed (see the table).")
            continue
        if not delivered(one) or not delivered(two):
            lines.append(
                f"- {name}: not measured, shardmq with {'1 shard' if not delivered(one) else '2 shards'} "
                f"delivered nothing in the window (1 shard {count(delivered(one))}/s, 2 shards "
                f"{count(delivered(two))}/s)."
            )
            continue
        d = ratio(delivered(two), delivered(one))
        c = ratio(cpu_per_million(two), cpu_per_million(one))
        lost = dig(two, "integrity", "lost")
        caveat = (
            f" Two shards lost {count(lost)} of {count(dig(two, 'integrity', 'expected'))} messages here "
            f"(one shard: {count(dig(one, 'integrity', 'lost'))})."
            if lost and not two.get("loss_allowed", scenario.endswith("q0"))
            else ""
        )
        lines.append(
            f"- {name}: 2 unpinned shards deliver {count(delivered(two))}/s against "
            f"{count(delivered(one))}/s for 1 pinned shard ({fmt_ratio(d)}) and spend "
            f"{fmt_cpu(cpu_per_million(two))} against {fmt_cpu(cpu_per_million(one))} s of broker CPU "
            f"per million delivered ({fmt_ratio(c)}"
            + (f", {100 * (c - 1):+.0f}% per message)." if c is not None else ").")
            + caveat
        )
    if lines:
        lines.append(
            "\nWith two shards about half of the pairs have publisher and subscriber on different "
            "shards, so a message crosses the shard mesh. The two shards share the two cores with the "
            "generator, so delivered/s says little about scaling here; broker CPU per message is the "
            "figure that states the cost of cross-shard delivery."
        )
    return lines


def write(run_path, md_path, png_path):
    run = Run(run_path)
    m = run.meta
    quick = m.get("quick") == "1"
    load_rows, load_notes = load_table(run)
    conn_rows, conn_notes = conns_table(run)
    fleet_rows, fleet_notes = fleet_table(run)
    churn_rows, churn_notes = churn_table(run)
    voice_rows, voice_notes = voice_table(run)
    secure_rows, secure_notes = secure_table(run)
    # The script runs from the repository root.
    rel_run = os.path.relpath(run_path)

    out = ["# shardmq, mosquitto and rumqttd side by side", ""]
    out.append(
        f"Latest output of `benches/compare`{' (quick run: short windows, indicative only)' if quick else ''}, "
        f"{m.get('date', '?')}. Raw JSON reports, broker configurations and logs: `{rel_run}/`."
    )
    out += [
        "",
        "## Setup",
        "",
        f"- Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory', '?')}, "
        f"{m.get('kernel', '?')}; {m.get('busy_before', '?')}% of the CPU was busy with other work "
        f"in the second before the run.",
        f"- Versions: shardmq `{m.get('shardmq', '?')}`, {m.get('bench', '?')}, {m.get('mosquitto', '?')} "
        f"(Debian package), {m.get('rumqttd', '?')} (crates.io), {m.get('rustc', '?')}"
        + (f"; baseline router `{m['baseline']}`." if m.get("baseline") else "."),
        f"- Command: `{m.get('command', '?')}`",
        f"- Method: the brokers run one after another on 127.0.0.1, each started afresh for every "
        f"scenario and pinned to core 0 (`taskset -c 0`; shardmq with one shard; the baseline "
        f"router, QoS 0 throughput only, single-threaded). The load generator "
        f"`shardmq-bench` runs one thread pinned to core 1. 64 B payloads; {m.get('warmup', '?')} s "
        f"warm-up, then a {m.get('duration', '?')} s measured window, then up to {m.get('drain', '?')} s "
        f"of drain. Throughput is counted over the window; lost and duplicated over the whole run (at "
        f"QoS 0 a broker may drop, so loss there is information, not an error). Broker CPU is utime + "
        f"stime from `/proc/PID/stat` over the window, per million delivered messages: on a shared "
        f"2-core machine the fairest figure. Idle connections: {m.get('conns', '?')} clients held "
        f"{m.get('hold', '?')} s; RSS per connection is the growth of the broker's VmRSS divided by the "
        f"connections. Other people's processes may share the machine: a run during which they used "
        f"more than {DISTURBED:.0%} of a core is repeated (up to {m.get('retries', '?')} times) and the "
        f"best attempt kept, since other load only makes a broker look worse; ‡ marks a figure whose "
        f"best attempt was still disturbed, and the notes list the attempts where they disagree.",
        "- Settings: 1000 queued messages and 32 in flight per client everywhere (shardmq's defaults; "
        "mosquitto `max_queued_messages 1000`, `max_inflight_messages 32`, no persistence; rumqttd "
        "`max_inflight_count = 32` and limits well above the runs' needs). shardmq sets TCP_NODELAY; "
        "mosquitto runs twice, with its default (Nagle's algorithm, which coalesces its "
        "one-write-per-packet output) and with `set_tcp_nodelay true`, and every ratio is taken "
        "against the better of the two (◆: more delivered/s, or the lower p99 in the latency "
        "scenario, or the lower CPU per message in the fleet).",
    ]
    if fleet_rows:
        out.append(
            f"- Fleet: `shardmq-bench latency --rate {m.get('fleet_rate', '20000')} --pairs "
            f"{m.get('fleet_pairs', '4000')}`: 4,000 publishers → 4,000 subscribers, one topic per pair, "
            f"5 msg/s each (8,000 connections, 20,000 msg/s), 64 B, QoS 0, and QoS 1 with a window of 32; "
            f"{m.get('fleet_warmup', '?')} s warm-up, {m.get('fleet_duration', '?')} s window. Broker CPU "
            f"per delivered message is split into user and kernel time (utime and stime of "
            f"`/proc/PID/stat`). System calls (`raw_syscalls:sys_enter`) and io_uring submissions "
            f"(`io_uring:io_uring_submit_req`) per message come from a separate run of each scenario "
            f"with `perf stat -p` on every thread of the broker over the window"
            + (
                f" ({m.get('perf_version') or 'perf'}), since tracing slows the broker down and its CPU "
                "figures are not used"
                if m.get("perf") == "1"
                else "; this run had none (`--no-perf`, `--quick`, or perf missing)"
            )
            + ". The baseline router, QoS 0 only, is the floor of the QoS 0 fleet."
        )
    if churn_rows:
        out.append(
            f"- Connection churn: `shardmq-bench churn --clients 100`: 100 clients, each looping TCP "
            f"connect, CONNECT (clean session, a new client id each time), CONNACK, DISCONNECT, the "
            f"broker's close (at most 200 ms), close; cycles completed per second over a "
            f"{m.get('duration', '?')} s window after {m.get('warmup', '?')} s; connect latency is TCP "
            f"connect to CONNACK; broker CPU per 1,000 cycles."
        )
    if voice_rows:
        out.append(
            f"- Voice: shardmq's voice gateway (one shard on core 0) and `shardmq-bench voice` on core 1 "
            f"playing both the devices and the chat backend: each device streams a 120 B frame every "
            f"60 ms and gets it echoed (device → UDP → gateway → WebSocket → backend and back); "
            f"{m.get('voice_ramp', '?')} s of hellos, {m.get('voice_warmup', '?')} s warm-up, "
            f"{m.get('voice_duration', '?')} s window. Gateway CPU per relayed datagram counts both "
            f"directions; the CPU-s column is that × {VOICE_SHAPE_DATAGRAMS:,}, the shape of issue 9's "
            f"table ({VOICE_SHAPE_DEVICES} devices × {VOICE_SHAPE_FRAMES} frames each way), whose Node "
            f"reference gateway figures are quoted: it cannot be installed here."
        )
    # A run of only some scenarios leaves out the sections of the others.
    if len(load_rows) > 2:
        out += [
            "",
            "## Throughput and latency",
            "",
            *load_rows,
            "",
            "Cores are CPU time over the window: 1.00 is one core busy. † the generator used ≥ 90% of "
            "its core while the broker did not: the generator set the pace, and the broker may be able "
            "to do more than shown.",
        ]
    if load_notes:
        out += ["", *load_notes]
    if conn_rows:
        out += ["", f"## Idle connections ({count(int(m.get('conns', 0) or 0))})", "", *conn_rows]
        if conn_notes:
            out += ["", *conn_notes]
    if fleet_rows:
        out += ["", "## Fleet shape", "", *fleet_rows, ""]
        out.append(
            "CPU per message is broker CPU time over the window divided by messages delivered in it "
            "(s / 1M = µs / msg). × mosquitto is against the mosquitto run with the lower CPU per "
            "message (◆), a steady one first. Syscalls and submissions: — without a perf pass. † the "
            "generator used ≥ 90% of its core, so latency may be partly its own. § the broker delivered "
            "less than 95% of the offered 20,000 msg/s: it fell behind, and a broker that falls behind "
            "spends less per message (each wake-up finds more to do)."
        )
        if fleet_notes:
            out += ["", *fleet_notes]
    if churn_rows:
        out += ["", "## Connection churn", "", *churn_rows, ""]
        out.append(
            "Cycles per broker core-second is 1,000 cycles over the broker CPU seconds they took: the rate one "
            "busy broker core would sustain, when the run did not keep it busy. † the generator used "
            "≥ 90% of its core while the broker did not: cycles/s is the generator's pace."
        )
        if churn_notes:
            out += ["", *churn_notes]
    if voice_rows:
        out += ["", "## Voice gateway", "", *voice_rows, ""]
        out.append(
            "† the generator used ≥ 90% of its core: it, not the gateway, set the pace. Losses count "
            "frames sent in the window that never arrived, per direction."
        )
        if voice_notes:
            out += ["", *voice_notes]
    if secure_rows:
        out += ["", "## Over TLS and WebSocket", "", *secure_rows, ""]
        out.append(
            f"The same scenarios on each broker's TLS listener (`tls-*`), `ws://` listener (`ws-*`) and "
            f"`wss://` listener (`wss-*`): shardmq's `[tls]` and `[websocket]`, mosquitto's `listener` "
            f"with `cafile`/`certfile`/`keyfile` and `protocol websockets` (libwebsockets). One ECDSA P-256 "
            f"certificate for both, made at run time ({m.get('openssl') or 'openssl'}); `shardmq-bench "
            f"--transport tls|ws|wss` is a rustls (ring) client, TLS 1.3 with both brokers, and sends one "
            f"masked binary frame per write. Idle connections over TLS: {m.get('tls_conns', '?')} clients. "
            f"× mosquitto is against the better mosquitto run (◆) on the same transport; × own TCP against "
            f"the same broker's plain TCP run of the scenario, when this run has it. † the generator used "
            f"≥ 90% of its core while the broker did not."
        )
        if secure_notes:
            out += ["", *secure_notes]
    t3 = targets(run)
    if len(t3) > 2:
        out += ["", "## Targets", "", *t3]
    t9 = targets9(run)
    if t9:
        out += ["", "## Targets (issue 9)", "", *t9]
    ab = against_baseline(run)
    if ab:
        out += ["", "## Against the baseline router", "", *ab]
    cs = cross_shard(run)
    if cs:
        out += ["", "## Cross-shard delivery", "", *cs]
    # The chart shows the plain TCP scenarios only.
    charted = any(sc not in SECURE_SCENARIOS for sc in run.scenarios)
    if charted:
        out += ["", f"![delivered/s and costs relative to mosquitto]({os.path.basename(png_path)})", ""]
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    if not charted:
        return
    try:
        chart(run, png_path)
    except ImportError as e:
        # The tables are the result; the chart is a view of them.
        print(f"compare: no chart drawn ({e}); install matplotlib", file=sys.stderr)


# --- chart -------------------------------------------------------------------------------


def chart(run, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "shardmq": "#1f6fb4",
        "shardmq-2shards": "#8fbbe0",
        "mosquitto": "#9a9a9a",
        "rumqttd": "#e07b39",
        "baseline": "#3a9a4a",
    }
    labels = {
        "shardmq": "shardmq, 1 shard",
        "shardmq-2shards": "shardmq, 2 shards unpinned",
        "mosquitto": "mosquitto (reference = 1)",
        "rumqttd": "rumqttd",
        "baseline": "baseline router (QoS 0 floor)",
    }

    def rel(broker, scenario, metric):
        if broker == "mosquitto":
            return 1.0 if run.base(scenario) is not None else None
        return ratio(metric(run.report(broker, scenario)), metric(run.base(scenario)))

    # Left: throughput, higher is better. Right: costs, lower is better.
    left = [
        (SHORT_NAMES[s], s, delivered, {"p2p-q0": 4.0, "fanout-q0": 4.0, "p2p-q1": 2.5}.get(s))
        for s in ("p2p-q0", "fanout-q0", "p2p-q1", "p2p-q2")
        if s in run.scenarios
    ]
    right = [
        (f"CPU / msg\n{SHORT_NAMES[s]}", s, cpu_per_million, 0.25)
        for s in ("p2p-q0", "fanout-q0", "p2p-q1", "latency")
        if s in run.scenarios
    ]
    right += [
        (f"CPU / msg\n{SHORT_NAMES[s]}", s, cpu_per_million, {"fleet-q1": 0.6}.get(s))
        for s in FLEET_SCENARIOS
        if s in run.scenarios
    ]
    if "latency" in run.scenarios:
        right.append(("p99 latency\nat 10k msg/s", "latency", p99, 1.0))
    if "conns" in run.scenarios:
        right.append(("RSS per\nidle connection", "conns", rss_per_conn, 1.0))

    fig, axes = plt.subplots(
        1, 2, figsize=(16, 6), gridspec_kw={"width_ratios": [max(len(left), 1), max(len(right), 1)]}
    )

    def panel(ax, groups, title, log, floor):
        brokers = [
            b for b in run.brokers
            if b != "mosquitto-nodelay" and any(run.result(b, g[1])[0] is not None for g in groups)
        ]
        width = 0.8 / max(len(brokers), 1)
        values = []
        for gi, (_, scenario, metric, goal) in enumerate(groups):
            present = [b for b in brokers if run.result(b, scenario)[0] is not None]
            for bi, broker in enumerate(present):
                x = gi - 0.4 + width * (bi + 0.5) + width * (len(brokers) - len(present)) / 2
                v = rel(broker, scenario, metric)
                if v is None or v <= 0:
                    failed = run.report(broker, scenario) is None
                    ax.text(x, 0.02, "failed" if failed else "none delivered", rotation=90, ha="center",
                            va="bottom", fontsize=8, transform=ax.get_xaxis_transform(), color="#b00020")
                    continue
                values.append(v)
                ax.bar(x, v, width * 0.92, color=colors[broker], label=labels[broker])
                ax.text(x, v, f"{v:.2g}×" if v < 10 else f"{v:.0f}×", ha="center", va="bottom", fontsize=7.5)
            if goal is not None:
                ax.hlines(goal, gi - 0.45, gi + 0.45, colors="#b00020", linestyles="dashed", linewidth=1.2,
                          label="target")
        ax.axhline(1.0, color="#555555", linewidth=0.8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g[0] for g in groups], fontsize=9)
        ax.set_title(title, fontsize=11)
        if log or (values and max(values) / min(values) > 40):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}×"))
            # A narrow range gets minor ticks labelled in scientific notation.
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if values:
                goals = [g[3] for g in groups if g[3] is not None]
                ax.set_ylim(min(values + goals + [1.0]) / 2, max(values + goals) * 2.5)
        else:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}×"))
            if values:
                ax.set_ylim(0, max(max(values), floor) * 1.15)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)

    panel(axes[0], left, "Delivered messages/s relative to mosquitto (higher is better)", False, 4.0)
    panel(axes[1], right, "Costs relative to mosquitto (lower is better)", True, 1.0)

    handles = {}
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(n, h)
    order = [labels[b] for b in BROKERS if b in labels] + ["target"]
    names = [n for n in order if n in handles]
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=len(names), frameon=False)
    m = run.meta
    fig.suptitle(
        f"{m.get('cpu', '')}, broker on core 0 and load generator on core 1, 64 B payload"
        f"{' (quick run)' if m.get('quick') == '1' else ''} — {m.get('date', '')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(png_path, dpi=110)


def main(argv):
    if len(argv) == 3 and argv[0] == "summary":
        summary(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "write":
        write(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
