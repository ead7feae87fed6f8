"""Shared pieces of the harness: broker endpoints, payloads, queue helpers, statistics."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aio_pika
import aiormq
from aiormq.abc import AbstractChannel as AiormqChannel

log = logging.getLogger(__name__)

T = TypeVar("T")

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("BENCH_MANAGEMENT_URL", "http://127.0.0.1:15672")

PAYLOAD_SIZE = 1024
SENT_AT_HEADER = "x-bench-sent-at-ns"


def payload(size: int = PAYLOAD_SIZE) -> bytes:
    """A JSON document of exactly ``size`` bytes (the same bytes every baseline sends)."""
    return json.dumps(body_document(size)).encode()


def body_document(size: int = PAYLOAD_SIZE) -> dict[str, Any]:
    """The JSON body Warren's batches carry: it serialises to ``size`` bytes."""
    overhead = len(json.dumps({"data": ""}))
    return {"data": "x" * (size - overhead)}


def unique_queue(scenario: str) -> str:
    return f"bench.{scenario}.{uuid.uuid4().hex[:10]}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def new_event_loop(*, use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency of warren on Linux
            log.warning("uvloop is not installed; using the default event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_async(factory: Callable[[], Awaitable[T]], *, use_uvloop: bool = False) -> T:
    """Run one measurement on a fresh event loop, so no measurement inherits another's state."""

    async def main() -> T:
        return await factory()

    with asyncio.Runner(loop_factory=lambda: new_event_loop(use_uvloop=use_uvloop)) as runner:
        return runner.run(main())


async def declare_queue(name: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)


async def delete_queue(name: str) -> None:
    """Delete a bench queue; a failure is logged, never raised (cleanup must not mask results)."""
    try:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)
    except Exception:
        log.warning("Could not delete queue %s", name, exc_info=True)


async def queue_counts(channel: AiormqChannel, name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, exact and immediate (a passive declare).

    The management API's counters lag by up to ~5 s, too coarse to time a drain.
    """
    ok = await channel.queue_declare(name, passive=True)
    return int(ok.message_count or 0), int(ok.consumer_count or 0)


async def prefill(name: str, count: int, *, body: bytes | None = None, window: int = 1000) -> None:
    """Declare ``name`` (durable) and publish ``count`` persistent messages with confirms."""
    data = payload() if body is None else body
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(name, durable=True)
        semaphore = asyncio.Semaphore(window)
        tasks: set[asyncio.Task[Any]] = set()
        prefix = uuid.uuid4().hex

        async def one(seq: int) -> None:
            # A fresh properties object with its own id per message: aiormq writes a generated
            # message id into the properties it is given, so a shared one would give every
            # message the same id, and Warren's consumer would drop all but the first as
            # duplicates (measured: 599 of 600 — a "consumer" at 1,800 msg/s that did nothing).
            properties = aiormq.spec.Basic.Properties(delivery_mode=2, message_id=f"{prefix}-{seq}")
            try:
                await channel.basic_publish(data, routing_key=name, properties=properties)
            finally:
                semaphore.release()

        for seq in range(count):
            await semaphore.acquire()
            task = asyncio.create_task(one(seq))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        await connection.close()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)
