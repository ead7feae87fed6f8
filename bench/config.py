"""How big each measurement is, per mode (full, quick, smoke)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Message counts and knobs. Counts are chosen so a full run stays within a few minutes."""

    mode: str
    repeats: int
    publish_count: int  # windowed / confirmed publishers
    sequential_count: int  # one-confirm-at-a-time publishers (slow)
    consume_count: int  # prefilled messages drained by a consumer
    consume_prefetch1_count: int
    io_count_pika: int  # pika blocking with a 20 ms handler: 50 msg/s at best
    io_count_warren: int
    io_work_ms: int = 20
    pair_count: int  # publisher + consumer together
    latency_rate: float = 500.0
    latency_count: int
    latency_window: int = 100  # a paced batch's window: rate × confirm time, with room
    scale_count: int
    scale_prefetch: int = 10
    window: int = 500
    aiormq_window: int = 1000
    consume_prefetch: int = 100
    memory_count: int  # messages through every service while RSS is sampled
    flat_count: int  # one big batch, producer RSS sampled over time
    warmup_latency: int = 50  # latency samples dropped at the start

    def scaled(self, **changes: int) -> BenchConfig:
        return replace(self, **changes)


FULL = BenchConfig(
    mode="full",
    repeats=3,
    publish_count=10_000,
    sequential_count=3_000,
    consume_count=10_000,
    consume_prefetch1_count=4_000,
    io_count_pika=100,
    io_count_warren=10_000,
    pair_count=10_000,
    latency_count=2_500,
    scale_count=3_000,
    memory_count=100_000,
    flat_count=1_000_000,
)

QUICK = BenchConfig(
    mode="quick",
    repeats=1,
    publish_count=3_000,
    sequential_count=1_000,
    consume_count=3_000,
    consume_prefetch1_count=1_000,
    io_count_pika=50,
    io_count_warren=3_000,
    pair_count=3_000,
    latency_count=750,
    scale_count=600,
    memory_count=10_000,
    flat_count=50_000,
)

SMOKE = BenchConfig(
    mode="smoke",
    repeats=1,
    publish_count=200,
    sequential_count=100,
    consume_count=200,
    consume_prefetch1_count=100,
    io_count_pika=10,
    io_count_warren=100,
    pair_count=200,
    latency_count=100,
    latency_rate=200.0,
    warmup_latency=5,
    scale_count=100,
    memory_count=500,
    flat_count=1_000,
)

MODES = {c.mode: c for c in (FULL, QUICK, SMOKE)}
