"""Raw-client baselines: what pika, aio-pika and aiormq do on this machine, in this run.

Every baseline uses a durable queue with a unique name (deleted afterwards), 1 KiB persistent
messages, publisher confirms and manual acks. Each returns its figures as a dict of floats.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import aiormq
import pika

from bench.common import (
    AMQP_URL,
    SENT_AT_HEADER,
    delete_queue,
    payload,
    percentile,
    prefill,
    run_async,
    unique_queue,
)
from bench.config import BenchConfig

Figures = dict[str, float]


def _rate(count: int, elapsed: float, cpu_s: float | None = None) -> Figures:
    figures = {"rate": count / elapsed, "count": float(count), "elapsed_s": elapsed}
    if cpu_s is not None:
        # The client's CPU per message: far steadier than a rate on a shared machine.
        figures["cpu_us_per_msg"] = cpu_s / count * 1e6
    return figures


# --- publishers ------------------------------------------------------------------------------


def pika_publish_sequential(cfg: BenchConfig) -> Figures:
    """pika BlockingConnection with confirms: each publish waits for its confirm."""
    count = cfg.sequential_count
    queue = unique_queue("pika-pub")
    body = payload()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2)
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish("", queue, body, properties=properties, mandatory=True)
        elapsed = time.perf_counter() - started
        channel.queue_delete(queue)
    finally:
        connection.close()
    return _rate(count, elapsed)


async def _aio_pika_publish(queue: str, count: int, window: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to publish ``count`` messages."""
    body = payload()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        exchange = channel.default_exchange

        def message() -> aio_pika.Message:
            return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        started, cpu = time.perf_counter(), time.process_time()
        if window <= 1:
            for _ in range(count):
                await exchange.publish(message(), routing_key=queue)
        else:
            await _windowed(count, window, lambda: exchange.publish(message(), routing_key=queue))
        return time.perf_counter() - started, time.process_time() - cpu


async def _windowed(count: int, window: int, publish: Any) -> None:
    """Keep up to ``window`` publishes awaiting their confirms."""
    semaphore = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[Any]] = set()
    failures: list[BaseException] = []

    async def one() -> None:
        try:
            await publish()
        except Exception as exc:  # collected: the measurement fails as a whole below
            failures.append(exc)
        finally:
            semaphore.release()

    for _ in range(count):
        await semaphore.acquire()
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed: {failures[0]!r}")


def aio_pika_publish_sequential(cfg: BenchConfig) -> Figures:
    count = cfg.sequential_count
    queue = unique_queue("aiopika-pub-seq")

    async def go() -> tuple[float, float]:
        try:
            return await _aio_pika_publish(queue, count, 1)
        finally:
            await delete_queue(queue)

    return _rate(count, *run_async(go))


def aio_pika_publish_window(cfg: BenchConfig) -> Figures:
    count = cfg.publish_count
    queue = unique_queue("aiopika-pub-window")

    async def go() -> tuple[float, float]:
        try:
            return await _aio_pika_publish(queue, count, cfg.window)
        finally:
            await delete_queue(queue)

    return _rate(count, *run_async(go)) | {"window": float(cfg.window)}


def aiormq_publish_window(cfg: BenchConfig) -> Figures:
    """aiormq with 1000 in flight on uvloop: the ceiling of the asyncio client stack."""
    count = cfg.publish_count
    queue = unique_queue("aiormq-pub")
    body = payload()

    async def go() -> float:
        try:
            connection = await aiormq.connect(AMQP_URL)
            try:
                channel = await connection.channel(publisher_confirms=True)
                await channel.queue_declare(queue, durable=True)
                properties = aiormq.spec.Basic.Properties(delivery_mode=2)
                started = time.perf_counter()
                await _windowed(
                    count,
                    cfg.aiormq_window,
                    lambda: channel.basic_publish(
                        body, routing_key=queue, properties=properties, mandatory=True
                    ),
                )
                return time.perf_counter() - started
            finally:
                await connection.close()
        finally:
            await delete_queue(queue)

    return _rate(count, run_async(go, use_uvloop=True)) | {"window": float(cfg.aiormq_window)}


# --- consumers -------------------------------------------------------------------------------


async def _aio_pika_drain(queue: str, count: int, prefetch: int) -> tuple[float, float]:
    """Consume ``count`` prefilled messages with a no-op handler and one ack per message:
    (wall seconds, CPU seconds of this process)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, durable=True)
        done = asyncio.Event()
        received = 0

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= count:
                done.set()

        started, cpu = time.perf_counter(), time.process_time()
        tag = await declared.consume(handle)
        await asyncio.wait_for(done.wait(), timeout=max(60.0, count / 100))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await declared.cancel(tag)
        return elapsed, cpu


def _aio_pika_consume(cfg: BenchConfig, prefetch: int, count: int) -> Figures:
    queue = unique_queue(f"aiopika-consume-p{prefetch}")

    async def go() -> tuple[float, float]:
        try:
            await prefill(queue, count)
            return await _aio_pika_drain(queue, count, prefetch)
        finally:
            await delete_queue(queue)

    return _rate(count, *run_async(go)) | {"prefetch": float(prefetch)}


def aio_pika_consume_prefetch1(cfg: BenchConfig) -> Figures:
    return _aio_pika_consume(cfg, 1, cfg.consume_prefetch1_count)


def aio_pika_consume_prefetch100(cfg: BenchConfig) -> Figures:
    return _aio_pika_consume(cfg, cfg.consume_prefetch, cfg.consume_count)


def _pika_drain(queue: str, count: int, prefetch: int, work_s: float) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        received = 0

        def handle(ch: Any, method: Any, _properties: Any, _body: bytes) -> None:
            nonlocal received
            if work_s:
                time.sleep(work_s)  # the I/O-bound handler: a blocking consumer can only wait
            ch.basic_ack(method.delivery_tag)
            received += 1
            if received >= count:
                ch.stop_consuming()

        started = time.perf_counter()
        channel.basic_consume(queue, handle)
        channel.start_consuming()
        return time.perf_counter() - started
    finally:
        connection.close()


def _pika_consume(count: int, prefetch: int, work_ms: int, name: str) -> Figures:
    queue = unique_queue(name)
    try:
        run_async(lambda: prefill(queue, count))
        elapsed = _pika_drain(queue, count, prefetch, work_ms / 1000)
    finally:
        run_async(lambda: delete_queue(queue))
    return _rate(count, elapsed) | {"prefetch": float(prefetch), "work_ms": float(work_ms)}


def pika_consume_prefetch100(cfg: BenchConfig) -> Figures:
    return _pika_consume(cfg.consume_count, cfg.consume_prefetch, 0, "pika-consume")


def pika_consume_io_bound(cfg: BenchConfig) -> Figures:
    return _pika_consume(cfg.io_count_pika, cfg.consume_prefetch, cfg.io_work_ms, "pika-io")


# --- together --------------------------------------------------------------------------------


def aio_pika_pair(cfg: BenchConfig) -> Figures:
    """Publisher (window W) and consumer (prefetch 100) running together on one queue."""
    count = cfg.pair_count
    queue = unique_queue("aiopika-pair")

    async def go() -> float:
        try:
            await _declare(queue)
            consumer = asyncio.create_task(_aio_pika_drain(queue, count, cfg.consume_prefetch))
            started = time.perf_counter()
            publisher = asyncio.create_task(_aio_pika_publish(queue, count, cfg.window))
            await asyncio.gather(consumer, publisher)
            return time.perf_counter() - started
        finally:
            await delete_queue(queue)

    return _rate(count, run_async(go))


async def _declare(queue: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)


def aio_pika_latency(cfg: BenchConfig) -> Figures:
    """Publish→consume latency at a fixed rate; the send time travels in a header (ns)."""
    count = cfg.latency_count
    queue = unique_queue("aiopika-latency")
    body = payload()

    async def go() -> list[float]:
        latencies: list[float] = []
        done = asyncio.Event()
        try:
            consume_conn = await aio_pika.connect(AMQP_URL)
            publish_conn = await aio_pika.connect(AMQP_URL)
            async with consume_conn, publish_conn:
                cchannel = await consume_conn.channel()
                await cchannel.set_qos(prefetch_count=cfg.consume_prefetch)
                cqueue = await cchannel.declare_queue(queue, durable=True)

                async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    now = time.time_ns()
                    sent = int(message.headers[SENT_AT_HEADER])  # type: ignore[arg-type]
                    latencies.append((now - sent) / 1e6)
                    await message.ack()
                    if len(latencies) >= count:
                        done.set()

                await cqueue.consume(handle)
                pchannel = await publish_conn.channel(publisher_confirms=True)
                await paced_publish(
                    count,
                    cfg.latency_rate,
                    lambda: pchannel.default_exchange.publish(
                        aio_pika.Message(
                            body,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            headers={SENT_AT_HEADER: time.time_ns()},
                        ),
                        routing_key=queue,
                    ),
                )
                await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            await delete_queue(queue)
        return latencies

    latencies = run_async(go)[cfg.warmup_latency :]
    return latency_figures(latencies, rate=cfg.latency_rate)


async def paced_publish(count: int, rate: float, publish: Any) -> None:
    """Start one publish every 1/rate s on a fixed schedule (no drift), not awaiting confirms
    in line, so a slow confirm does not lower the offered rate."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    start = loop.time()
    tasks: set[asyncio.Task[Any]] = set()
    for i in range(count):
        delay = start + i * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(publish())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def latency_figures(latencies_ms: list[float], *, rate: float) -> Figures:
    if not latencies_ms:
        raise RuntimeError("no latency samples")
    return {
        "p50_ms": percentile(latencies_ms, 50),
        "p90_ms": percentile(latencies_ms, 90),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "count": float(len(latencies_ms)),
        "offered_rate": rate,
    }
