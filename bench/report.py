"""Turn a run into the comparison table (console, Markdown, JSON) and the PNG plot."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.runner import RunResult

RESULTS_DIR = Path(__file__).parent / "results"
MEMORY_LIMIT_MB = 100.0
FLAT_GROWTH_MB = 10.0


@dataclass(frozen=True, kw_only=True)
class Check:
    """One target of issue 9: Warren's figure against a baseline (ratio) or a bound."""

    name: str
    warren: tuple[str, str]  # (measurement key, metric)
    baseline: tuple[str, str] | None
    op: str  # ">=" or "<="
    target: float
    unit: str = "msg/s"
    aim: bool = False  # an aim, not a requirement: reported, never "fail"


CHECKS = (
    Check(name="1. batch publish vs aio-pika window W", warren=("warren_batch", "rate"),
          baseline=("aiopika_publish_window", "rate"), op=">=", target=0.9),
    Check(name="1. batch publish vs pika sequential", warren=("warren_batch", "rate"),
          baseline=("pika_publish_sequential", "rate"), op=">=", target=2.5),
    Check(name="2. consume no-op vs aio-pika prefetch 100", warren=("warren_consume", "rate"),
          baseline=("aiopika_consume_p100", "rate"), op=">=", target=0.9),
    Check(name="2. consume no-op vs pika prefetch 100 (aim)", warren=("warren_consume", "rate"),
          baseline=("pika_consume_p100", "rate"), op=">=", target=1.0, aim=True),
    Check(name="3. I/O-bound 20 ms vs pika blocking", warren=("warren_io", "rate"),
          baseline=("pika_io", "rate"), op=">=", target=20.0),
    Check(name="4. end to end vs aio-pika pair", warren=("warren_e2e", "rate"),
          baseline=("aiopika_pair", "rate"), op=">=", target=0.8),
    Check(name="4. p99 latency at 500 msg/s vs aio-pika", warren=("warren_latency", "p99_ms"),
          baseline=("aiopika_latency", "p99_ms"), op="<=", target=2.0, unit="ms"),
    Check(name="5. scale: 2 replicas vs 1 (20 ms)", warren=("warren_scale2", "rate"),
          baseline=("warren_scale1", "rate"), op=">=", target=1.8),
)  # fmt: skip


def _passes(value: float, op: str, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


def figure(result: RunResult, key: str, metric: str) -> float | None:
    outcome = result.outcomes.get(key)
    if outcome is None or not outcome.runs:
        return None
    return outcome.medians().get(metric)


def _why_missing(result: RunResult, key: str) -> str:
    outcome = result.outcomes.get(key)
    if outcome is None:
        return "not run"
    if outcome.unavailable:
        return "unavailable"
    return "error" if outcome.errors else "not run"


def evaluate(result: RunResult) -> list[dict[str, Any]]:
    """Every target as a row: figures, ratio, target, and pass / fail / aim / n/a."""
    rows: list[dict[str, Any]] = []
    for check in CHECKS:
        w = figure(result, *check.warren)
        b = figure(result, *check.baseline) if check.baseline else None
        ratio = w / b if w is not None and b else None
        if ratio is None:
            missing = [k for k, v in ((check.warren[0], w), (check.baseline[0], b)) if v is None]  # type: ignore[index]
            verdict = "n/a: " + ", ".join(f"{k} {_why_missing(result, k)}" for k in missing)
        elif _passes(ratio, check.op, check.target):
            verdict = "pass"
        else:
            verdict = "below aim" if check.aim else "fail"
        rows.append(
            {
                "check": check.name,
                "unit": check.unit,
                "warren": w,
                "baseline": b,
                "ratio": ratio,
                "target": f"{check.op} {check.target:g}×",
                "result": verdict,
            }
        )
    rows.extend(_memory_rows(result))
    return rows


def _memory_rows(result: RunResult) -> list[dict[str, Any]]:
    rows = []
    mem = result.memory or {}
    for service in ("gateway", "producer", "consumer"):
        value = mem.get(f"{service}_rss_max_mb")
        rows.append(
            {
                "check": f"6. {service} RSS max, {result.cfg.memory_count:,} msgs",
                "unit": "MB",
                "warren": value,
                "baseline": None,
                "ratio": None,
                "target": f"< {MEMORY_LIMIT_MB:g} MB",
                "result": "n/a: " + (result.memory_error or "not run").splitlines()[0]
                if value is None or math.isnan(value)
                else ("pass" if value < MEMORY_LIMIT_MB else "fail"),
            }
        )
    flat = result.flat or {}
    growth = flat.get("growth_mb")
    rows.append(
        {
            "check": f"6. producer RSS growth, one batch of {result.cfg.flat_count:,}",
            "unit": "MB",
            "warren": growth,
            "baseline": flat.get("rss_first_mb"),
            "ratio": None,
            "target": f"< {FLAT_GROWTH_MB:g} MB growth",
            "result": "n/a: " + (result.flat_error or "not run").splitlines()[0]
            if growth is None
            else ("pass" if growth < FLAT_GROWTH_MB and flat.get("rss_max_mb", 0) < MEMORY_LIMIT_MB
                  else "fail"),
        }
    )  # fmt: skip
    return rows


def to_json(result: RunResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import aio_pika
    import pika

    cfg = result.cfg
    return {
        "meta": {
            "mode": cfg.mode,
            "repeats": cfg.repeats,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "duration_s": round(result.finished_at - result.started_at, 1),
            "python": platform.python_version(),
            "aio_pika": aio_pika.__version__,
            "pika": pika.__version__,
            "cpus": os.cpu_count(),
            "message_size": 1024,
            "config": dict(vars(cfg)),
            "warren_namespace": result.namespace,
            "warren_logs": result.log_dir,
            "warren_error": result.warren_error,
        },
        "measurements": {
            key: {
                "label": o.measure.label,
                "kind": o.measure.kind,
                "group": o.measure.group,
                "unit": o.measure.unit,
                "reference": o.measure.reference,
                "status": o.status,
                "median": o.medians(),
                "runs": o.runs,
                "errors": o.errors,
                "unavailable": o.unavailable,
            }
            for key, o in result.outcomes.items()
        },
        "memory": {"figures": result.memory, "error": result.memory_error},
        "flat_memory": {
            "figures": result.flat,
            "producer_rss_series": result.flat_series,
            "error": result.flat_error,
        },
        "checks": rows,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _baseline_rows(result: RunResult) -> list[list[str]]:
    rows = []
    for o in result.outcomes.values():
        med = o.medians()
        if o.measure.unit == "ms":
            value = (
                f"p50 {_fmt(med['p50_ms'], 'ms')} / p90 {_fmt(med['p90_ms'], 'ms')} / "
                f"p99 {_fmt(med['p99_ms'], 'ms')} ms"
                if o.runs
                else o.status
            )
        else:
            value = f"{_fmt(med['rate'])} msg/s" if o.runs else o.status
        spread = ""
        if len(o.runs) > 1 and o.measure.unit != "ms":
            rates = [r["rate"] for r in o.runs]
            spread = f"{_fmt(min(rates))}–{_fmt(max(rates))}"
        cpu = _fmt(med.get("cpu_us_per_msg")) if o.runs else "—"
        rows.append(
            [o.measure.kind, o.measure.label, value, spread, cpu, o.measure.reference or ""]
        )
    return rows


def markdown(result: RunResult, rows: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = [
        "# Warren benchmark — latest run",
        "",
        f"Mode **{meta['mode']}**, {meta['repeats']} repeat(s), medians; "
        f"{meta['duration_s']} s; Python {meta['python']}, aio-pika {meta['aio_pika']}, "
        f"pika {meta['pika']}, {meta['cpus']} CPUs; 1 KiB persistent messages, durable queues, "
        "publisher confirms, manual acks; broker on the same machine.",
        "",
        "## Targets (issue 9)",
        "",
        "| check | Warren | baseline | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        unit = r["unit"]
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(
            f"| {r['check']} | {_fmt(r['warren'], unit)} {unit} | {_fmt(r['baseline'], unit)} | "
            f"{ratio} | {r['target']} | {r['result']} |"
        )
    lines += [
        "",
        "## Every measurement",
        "",
        "| side | path | median | min–max | CPU µs/msg | issue's reference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(cells)} |" for cells in _baseline_rows(result)]
    if result.warren_error:
        lines += ["", f"Warren's services: `{result.warren_error.splitlines()[0]}`"]
    lines += [
        "",
        "How each figure is taken: see `bench/README.md`. Consume rates of Warren are timed at the "
        "broker (exact passive declares, from the first consumed message until none is ready) "
        "and count the last prefetch-full of messages as not done, so they are a lower bound. "
        "CPU µs/msg is the client's CPU time per message (user + system): the bench process's "
        "for a raw client, the producer's or the consumer replicas' for Warren. It varies far "
        "less than a rate on a shared machine.",
        "",
        "![throughput and latency](throughput.png)",
        "",
    ]
    return "\n".join(lines)


def console(result: RunResult, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (make bench | tee) would otherwise wrap the table at 80 columns.
    out = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title="Warren vs baselines (medians)")
    for col, justify in (
        ("check", "left"),
        ("Warren", "right"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("result", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    styles = {"pass": "green", "fail": "red", "below aim": "yellow"}
    for r in rows:
        unit = r["unit"]
        table.add_row(
            r["check"],
            f"{_fmt(r['warren'], unit)} {unit}",
            _fmt(r["baseline"], unit),
            "—" if r["ratio"] is None else f"{r['ratio']:.2f}×",
            r["target"],
            f"[{styles.get(r['result'], 'dim')}]{r['result']}[/]",
        )
    out.print(table)
    every = Table(title="Every measurement")
    for col in ("side", "path", "median", "min–max", "CPU µs/msg", "issue's ref."):
        every.add_column(col)
    for cells in _baseline_rows(result):
        every.add_row(*cells)
    out.print(every)


def plot(result: RunResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.35, 1])
    ax = fig.add_subplot(grid[0, :])
    groups = [
        ("Publish", ["warren_batch", "aiopika_publish_window", "aiormq_publish_window",
                     "pika_publish_sequential", "aiopika_publish_sequential"]),
        ("Consume, no-op", ["warren_consume", "warren_consume_untraced", "aiopika_consume_p100",
                            "aiopika_consume_p1", "pika_consume_p100"]),
        ("End to end", ["warren_e2e", "aiopika_pair"]),
        ("20 ms handler", ["warren_io", "pika_io", "warren_scale1", "warren_scale2"]),
    ]  # fmt: skip
    short = {
        "warren_batch": "Warren batch",
        "aiopika_publish_window": "aio-pika W",
        "aiormq_publish_window": "aiormq 1000",
        "pika_publish_sequential": "pika seq.",
        "aiopika_publish_sequential": "aio-pika seq.",
        "warren_consume": "Warren p100",
        "warren_consume_untraced": "Warren untraced",
        "aiopika_consume_p100": "aio-pika p100",
        "aiopika_consume_p1": "aio-pika p1",
        "pika_consume_p100": "pika p100",
        "warren_e2e": "Warren",
        "aiopika_pair": "aio-pika pair",
        "warren_io": "Warren p100",
        "pika_io": "pika",
        "warren_scale1": "Warren 1×p10",
        "warren_scale2": "Warren 2×p10",
    }
    x = 0.0
    ticks, labels, group_mid = [], [], []
    for title, keys in groups:
        start = x
        for key in keys:
            value = figure(result, key, "rate")
            warren_side = key.startswith("warren")
            color = "#d9480f" if warren_side else "#4c6ef5"
            if value is None:
                ax.text(x, 12, "n/a", ha="center", va="bottom", fontsize=8, color=color)
            else:
                ax.bar(x, value, color=color, width=0.8)
                ax.text(x, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
            ticks.append(x)
            labels.append(short[key])
            x += 1
        group_mid.append(((start + x - 1) / 2, title))
        x += 0.8
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_xticks(ticks, labels, rotation=30, ha="right", fontsize=9)
    for mid, title in group_mid:
        ax.text(mid, 1.02, title, transform=ax.get_xaxis_transform(), ha="center",
                fontweight="bold", fontsize=10)  # fmt: skip
    ax.set_ylabel("messages per second (log scale)")
    ax.set_title("Throughput — Warren (orange) vs raw clients (blue), 1 KiB persistent, confirms",
                 pad=22)  # fmt: skip
    ax.grid(axis="y", which="both", alpha=0.25)

    lat = fig.add_subplot(grid[1, 0])
    pcts = ("p50_ms", "p90_ms", "p99_ms")
    width = 0.38
    for i, (key, name, color) in enumerate(
        (("warren_latency", "Warren (paced batch→consumer)", "#d9480f"),
         ("aiopika_latency", "aio-pika pair", "#4c6ef5"))
    ):  # fmt: skip
        values = [figure(result, key, p) or 0.0 for p in pcts]
        xs = [j + (i - 0.5) * width for j in range(len(pcts))]
        lat.bar(xs, values, width=width, color=color, label=name)
        for xx, v in zip(xs, values, strict=True):
            lat.text(xx, v, f"{v:.1f}" if v else "n/a", ha="center", va="bottom", fontsize=8)
    lat.set_xticks(range(len(pcts)), ["p50", "p90", "p99"])
    lat.set_ylabel("ms")
    lat.set_title(f"Latency publish→consume at {result.cfg.latency_rate:.0f} msg/s")
    lat.legend(fontsize=8)
    lat.grid(axis="y", alpha=0.25)

    mem = fig.add_subplot(grid[1, 1])
    if result.flat_series:
        ts = [t for t, _ in result.flat_series]
        mbs = [mb for _, mb in result.flat_series]
        mem.plot(ts, mbs, color="#d9480f", label="producer RSS")
        mem.axhline(MEMORY_LIMIT_MB, color="grey", linestyle="--", label="100 MB limit")
        mem.set_ylim(0, max(MEMORY_LIMIT_MB * 1.1, max(mbs) * 1.1))
        mem.legend(fontsize=8)
    else:
        mem.text(0.5, 0.5, "Warren's services unavailable", ha="center", va="center",
                 transform=mem.transAxes, color="grey")  # fmt: skip
    mem.set_xlabel("seconds")
    mem.set_ylabel("MB")
    mem.set_title(f"Producer memory during one batch of {result.cfg.flat_count:,}")
    mem.grid(alpha=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: RunResult, *, out_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = evaluate(result)
    doc = to_json(result, rows)
    (out_dir / "latest.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "latest.md").write_text(markdown(result, rows, doc))
    plot(result, out_dir / "throughput.png")
    return doc
