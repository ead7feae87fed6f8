"""What is measured, in which order: baselines and Warren's contenders alternate, repeated."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import baselines, warren
from bench.baselines import Figures
from bench.common import median, run_async
from bench.config import BenchConfig

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class Measure:
    key: str
    label: str
    kind: str  # "baseline" | "warren"
    group: str
    unit: str = "msg/s"
    reference: str = ""  # the figure the issue measured on a machine of this kind
    run: Callable[[BenchConfig, warren.WarrenStack | None], Figures]
    # (replicas, work_ms, tracing) Warren needs running
    consumers: tuple[int, int, bool] | None = None


def _baseline(fn: Callable[[BenchConfig], Figures]) -> Any:
    return lambda cfg, _stack: fn(cfg)


def _contender(fn: Callable[..., Any], *args: Any) -> Any:
    def run(cfg: BenchConfig, stack: warren.WarrenStack | None) -> Figures:
        if stack is None:
            raise warren.Unavailable("Warren is not running")
        result: Figures = run_async(lambda: fn(stack, cfg, *args))
        return result

    return run


MEASURES: tuple[Measure, ...] = (
    # publish
    Measure(key="warren_batch", label="Warren batch publish (gateway→producer, W)",
            kind="warren", group="publish", run=_contender(warren.batch_publish)),
    Measure(key="aiopika_publish_window", label="aio-pika publish, window W",
            kind="baseline", group="publish", reference="3,900–4,300",
            run=_baseline(baselines.aio_pika_publish_window)),
    Measure(key="pika_publish_sequential", label="pika blocking publish, sequential confirms",
            kind="baseline", group="publish", reference="~1,500",
            run=_baseline(baselines.pika_publish_sequential)),
    Measure(key="aiopika_publish_sequential", label="aio-pika publish, one await at a time",
            kind="baseline", group="publish", reference="~1,100",
            run=_baseline(baselines.aio_pika_publish_sequential)),
    Measure(key="aiormq_publish_window", label="aiormq publish, 1000 in flight, uvloop",
            kind="baseline", group="publish", reference="~4,700",
            run=_baseline(baselines.aiormq_publish_window)),
    # consume, no-op handler
    Measure(key="warren_consume", label="Warren consumer, no-op, prefetch 100",
            kind="warren", group="consume", consumers=(1, 0, True),
            run=_contender(warren.consume_noop)),
    Measure(key="warren_consume_untraced",
            label="Warren consumer, no-op, prefetch 100, tracing off",
            kind="warren", group="consume", consumers=(1, 0, False),
            run=_contender(warren.consume_noop)),
    Measure(key="aiopika_consume_p100", label="aio-pika consume, prefetch 100",
            kind="baseline", group="consume", reference="4,200–4,500",
            run=_baseline(baselines.aio_pika_consume_prefetch100)),
    Measure(key="aiopika_consume_p1", label="aio-pika consume, prefetch 1",
            kind="baseline", group="consume", reference="~2,100",
            run=_baseline(baselines.aio_pika_consume_prefetch1)),
    Measure(key="pika_consume_p100", label="pika blocking consume, prefetch 100",
            kind="baseline", group="consume", reference="~6,900",
            run=_baseline(baselines.pika_consume_prefetch100)),
    # end to end
    Measure(key="warren_e2e", label="Warren end to end (batch→consumer→gateway)",
            kind="warren", group="e2e", consumers=(1, 0, True), run=_contender(warren.end_to_end)),
    Measure(key="aiopika_pair", label="aio-pika publisher + consumer together",
            kind="baseline", group="e2e", reference="2,300–2,500",
            run=_baseline(baselines.aio_pika_pair)),
    # latency
    Measure(key="warren_latency", label="Warren latency at 500 msg/s (paced batch→consumer)",
            kind="warren", group="latency", unit="ms", consumers=(1, 0, True),
            run=_contender(warren.latency)),
    Measure(key="aiopika_latency", label="aio-pika latency at 500 msg/s",
            kind="baseline", group="latency", unit="ms", reference="p50 ~1, p99 ~3",
            run=_baseline(baselines.aio_pika_latency)),
    # I/O-bound handler
    Measure(key="warren_io", label="Warren consumer, 20 ms handler, prefetch 100",
            kind="warren", group="io", consumers=(1, 20, True),
            run=_contender(warren.consume_io_bound)),
    Measure(key="pika_io", label="pika blocking consume, 20 ms handler",
            kind="baseline", group="io", reference="~48",
            run=_baseline(baselines.pika_consume_io_bound)),
    # scale
    Measure(key="warren_scale1", label="Warren 1 replica, 20 ms handler, prefetch 10",
            kind="warren", group="scale", consumers=(1, 20, True),
            run=_contender(warren.consume_scale, 1)),
    Measure(key="warren_scale2", label="Warren 2 replicas, 20 ms handler, prefetch 10",
            kind="warren", group="scale", consumers=(2, 20, True),
            run=_contender(warren.consume_scale, 2)),
)  # fmt: skip

GROUP_ORDER = ("publish", "consume", "e2e", "latency", "io", "scale")


@dataclass
class Outcome:
    measure: Measure
    runs: list[Figures] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def status(self) -> str:
        if self.runs:
            return "ok"
        return "unavailable" if self.unavailable else "error"

    def medians(self) -> Figures:
        keys = {k for run in self.runs for k in run}
        return {k: median([run[k] for run in self.runs if k in run]) for k in sorted(keys)}


@dataclass
class RunResult:
    cfg: BenchConfig
    outcomes: dict[str, Outcome]
    memory: Figures | None = None
    memory_error: str | None = None
    flat: Figures | None = None
    flat_series: list[list[float]] = field(default_factory=list)
    flat_error: str | None = None
    warren_error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    namespace: str | None = None
    log_dir: str | None = None


class Runner:
    def __init__(
        self,
        cfg: BenchConfig,
        *,
        only: set[str] | None = None,
        keys: list[str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.progress = progress or (lambda _msg: None)
        kinds = only or {"baselines", "warren"}
        self.measures = [
            m
            for m in MEASURES
            if ("baselines" in kinds and m.kind == "baseline")
            or ("warren" in kinds and m.kind == "warren")
        ]
        if keys:
            unknown = set(keys) - {m.key for m in MEASURES} - {"memory", "flat"}
            if unknown:
                raise ValueError(f"unknown measurement(s): {', '.join(sorted(unknown))}")
            self.measures = [m for m in self.measures if m.key in keys]
        self.with_warren = "warren" in kinds and (
            not keys
            or any(m.kind == "warren" for m in self.measures)
            or bool({"memory", "flat"} & set(keys))
        )
        self.with_memory = self.with_warren and (not keys or "memory" in keys)
        self.with_flat = self.with_warren and (not keys or "flat" in keys)
        self.stack: warren.WarrenStack | None = None
        self._consumers: tuple[int, int, bool] | None = None

    def steps(self) -> int:
        memory = int(self.with_memory) + int(self.with_flat)
        return len(self.measures) * self.cfg.repeats + memory

    def run(self, *, on_step: Callable[[], None] = lambda: None) -> RunResult:
        result = RunResult(cfg=self.cfg, outcomes={m.key: Outcome(m) for m in self.measures})
        result.started_at = time.time()
        try:
            if self.with_warren:
                self.progress("starting Warren's services")
                self.stack = warren.WarrenStack()
                result.namespace = self.stack.namespace
                result.log_dir = str(self.stack.log_dir)
                try:
                    self.stack.start()
                except warren.Unavailable as exc:
                    result.warren_error = str(exc)
                    self.stack = None
            for round_no in range(self.cfg.repeats):
                for group in GROUP_ORDER:
                    members = [m for m in self.measures if m.group == group]
                    # Alternate which side goes first, so drift in a noisy machine hits both.
                    members.sort(key=lambda m: (m.kind == "warren") == (round_no % 2 == 1))
                    for m in members:
                        self._one(m, result.outcomes[m.key], round_no)
                        on_step()
            if self.with_memory:
                self._memory(result)
                on_step()
            if self.with_flat:
                self._flat(result)
                on_step()
        finally:
            if self.stack is not None:
                self.progress("stopping Warren's services")
                self.stack.stop()
            result.finished_at = time.time()
        return result

    def _one(self, m: Measure, outcome: Outcome, round_no: int) -> None:
        self.progress(f"round {round_no + 1}/{self.cfg.repeats}: {m.label}")
        if outcome.unavailable:
            return
        try:
            if m.kind == "warren":
                if self.stack is None:
                    raise warren.Unavailable("Warren's services are not running")
                if m.consumers is not None:
                    self._ensure_consumers(m.consumers)
            outcome.runs.append(m.run(self.cfg, self.stack))
        except warren.Unavailable as exc:
            outcome.unavailable = str(exc).splitlines()[0]
        except Exception as exc:
            log.debug("%s failed", m.key, exc_info=True)
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s failed: %s\n%s", m.key, exc, traceback.format_exc(limit=3))

    def _ensure_consumers(self, want: tuple[int, int, bool]) -> None:
        assert self.stack is not None
        if self._consumers == want and all(s.alive() for s in self.stack.consumers):
            return
        replicas, work_ms, tracing = want
        self.progress(f"starting {replicas} consumer replica(s), work {work_ms} ms")
        self._consumers = None
        self.stack.stop_consumers()
        self.stack.start_consumers(replicas, work_ms=work_ms, tracing=tracing)
        self._consumers = want

    def _memory(self, result: RunResult) -> None:
        self.progress(f"memory: {self.cfg.memory_count:,} messages through every service")
        if self.stack is None:
            result.memory_error = result.warren_error or "Warren is not running"
            return
        try:
            self._ensure_consumers((1, 0, True))
            result.memory = run_async(lambda: warren.memory_pass(self.stack, self.cfg))  # type: ignore[arg-type]
        except Exception as exc:
            result.memory_error = f"{type(exc).__name__}: {exc}"

    def _flat(self, result: RunResult) -> None:
        self.progress(f"flat memory: one batch of {self.cfg.flat_count:,}")
        if self.stack is None:
            result.flat_error = result.warren_error or "Warren is not running"
            return
        try:
            label = f"flat memory: one batch of {self.cfg.flat_count:,}"
            last = 0.0

            def every_5s(msg: str) -> None:  # a line per poll would flood a log
                nonlocal last
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    self.progress(f"{label}: {msg}")

            figures, series = run_async(
                lambda: warren.flat_memory(self.stack, self.cfg, progress=every_5s)  # type: ignore[arg-type]
            )
            result.flat, result.flat_series = figures, series
        except Exception as exc:
            result.flat_error = f"{type(exc).__name__}: {exc}"
