"""The consumer replica in-process against the real broker: consuming, dead-lettering,
de-duplication, sampling, sharing, and resuming after faults (private node)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from pydantic import TypeAdapter

from consumer.settings import ConsumerSettings
from consumer.worker import Worker
from warren import amqp, telemetry
from warren.contracts import (
    CONTROL_ALL_CONSUMERS,
    PUBLISHED_US_HEADER,
    ConsumeCommand,
    Event,
    Heartbeat,
    ProcessedRecord,
    RecordBatch,
    Topology,
    control_replica_key,
)

_events = TypeAdapter[Any](Event)

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


async def until(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``predicate`` on the loop until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class Events:
    """Every heartbeat and record batch published on a namespace's events exchange."""

    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []
        self.batches: list[RecordBatch] = []

    @property
    def records(self) -> list[ProcessedRecord]:
        return [r for b in self.batches for r in b.records]

    def sampled_out(self) -> int:
        return sum(b.sampled_out for b in self.batches)

    def last_beat(self, replica: str) -> Heartbeat | None:
        return next((b for b in reversed(self.beats) if b.replica == replica), None)

    async def listen(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        channel = await connection.channel()
        exchanges = await amqp.declare_exchanges(channel, topology)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchanges.events, "#")
        await queue.consume(self._on_event, no_ack=True)

    async def _on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = _events.validate_json(message.body)
        if isinstance(event, Heartbeat):
            self.beats.append(event)
        elif isinstance(event, RecordBatch):
            self.batches.append(event)


def settings(namespace: str, replica: str, *, url: str, **consumer: Any) -> ConsumerSettings:
    consumer.setdefault("record_flush_interval", 0.05)
    return ConsumerSettings(
        namespace=namespace,
        replica_id=replica,
        heartbeat_interval=0.3,
        health_file="/dev/null",
        amqp={"url": url, "heartbeat": 5, "reconnect_interval": 0.5},
        consumer=consumer,
    )


async def start_worker(s: ConsumerSettings) -> Worker:
    worker = Worker(s, telemetry_status=telemetry.TelemetryStatus())
    await asyncio.wait_for(worker.start(asyncio.Event()), 30)
    return worker


async def send_control(
    connection: AbstractRobustConnection, topology: Topology, command: ConsumeCommand
) -> None:
    channel = await connection.channel()
    exchanges = await amqp.declare_exchanges(channel, topology)
    key = control_replica_key(command.replica) if command.replica else CONTROL_ALL_CONSUMERS
    await exchanges.control.publish(amqp.encode(command), key)
    await channel.close()


async def publish(
    connection: AbstractRobustConnection,
    queue: str,
    bodies: list[bytes],
    *,
    content_type: str = "application/json",
    headers: dict[str, Any] | None = None,
    message_ids: list[str] | None = None,
) -> list[str]:
    """Publish with confirms to ``queue``; returns the message ids."""
    channel = await connection.channel(publisher_confirms=True)
    ids = message_ids or [f"m{i}-{time.monotonic_ns()}" for i in range(len(bodies))]
    await asyncio.gather(
        *(
            channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type=content_type,
                    # An int: pamqp sends a Python float as a 32-bit float (~1 min off).
                    headers={
                        PUBLISHED_US_HEADER: time.time_ns() // 1000,
                        **(headers or {}),
                    },
                    message_id=mid,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                queue,
            )
            for body, mid in zip(bodies, ids, strict=True)
        )
    )
    await channel.close()
    return ids


def consuming(events: Events, replica: str, queue: str) -> bool:
    beat = events.last_beat(replica)
    return beat is not None and any(
        q.queue == queue and q.state == "consuming" for q in beat.queues
    )


# Fixtures -----------------------------------------------------------------------------------


class Replicas:
    """Starts in-process replicas on one namespace; stops (drains) them all at teardown."""

    def __init__(self, namespace: str, url: str) -> None:
        self.namespace, self.url = namespace, url
        self.topology = Topology(namespace)
        self.workers: list[Worker] = []

    async def start(self, replica: str, **consumer: Any) -> Worker:
        worker = await start_worker(settings(self.namespace, replica, url=self.url, **consumer))
        self.workers.append(worker)
        return worker

    async def stop_all(self) -> None:
        for worker in self.workers:
            if not worker._stopping:
                await worker.stop()


@pytest.fixture
async def events(amqp: AbstractRobustConnection, unique: Callable[[str], str]) -> Events:
    ev = Events()
    ev.namespace = unique("tc")  # type: ignore[attr-defined]
    await ev.listen(amqp, Topology(ev.namespace))  # type: ignore[attr-defined]
    return ev


@pytest.fixture
async def replicas(events: Events) -> Any:
    r = Replicas(events.namespace, LOCAL_AMQP)  # type: ignore[attr-defined]
    yield r
    await r.stop_all()


def dlq_args(name: str, *, quorum: bool, limit: int) -> dict[str, Any]:
    """The arguments the gateway gives a queue created with ``dead_letter: true``."""
    args: dict[str, Any] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{name}.dlq",
    }
    if quorum:
        args.update({"x-queue-type": "quorum", "x-delivery-limit": limit + 2})
    return args


async def make_queue(
    amqp: AbstractRobustConnection,
    name: str,
    *,
    dead_letter: bool = False,
    quorum: bool = False,
    limit: int = 3,
) -> aio_pika.abc.AbstractQueue:
    channel = await amqp.channel()
    if dead_letter:
        await channel.declare_queue(
            f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"} if quorum else {}
        )
        args = dlq_args(name, quorum=quorum, limit=limit)
    else:
        args = {"x-queue-type": "quorum"} if quorum else {}
    return await channel.declare_queue(name, durable=True, arguments=args)


def outcomes(events: Events, message_id: str) -> list[str]:
    return [r.outcome for r in events.records if r.message_id == message_id]


pytestmark = pytest.mark.broker


# Consuming ----------------------------------------------------------------------------------


async def test_startup_queues_come_from_configuration(
    monkeypatch: pytest.MonkeyPatch, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    a, b = await queue_factory("cfg"), await queue_factory("cfg")
    monkeypatch.setenv("WARREN_CONSUMER__QUEUES", f"{a.name}, {b.name}")
    assert ConsumerSettings().consumer.queues == [a.name, b.name]
    await replicas.start("r1", queues=[a.name, b.name], prefetch=7)
    await until(lambda: consuming(events, "r1", a.name), timeout=10, what="consuming a")
    beat = events.last_beat("r1")
    assert beat is not None
    assert {(q.queue, q.prefetch, q.scope) for q in beat.queues} == {
        (a.name, 7, "replica"),
        (b.name, 7, "replica"),
    }


async def test_control_starts_and_stops_for_one_replica_or_all(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("ctl")
    await replicas.start("r1")
    await replicas.start("r2")
    topo = replicas.topology

    await send_control(
        amqp, topo, ConsumeCommand(action="start", queue=queue.name, prefetch=4, replica="r2")
    )
    await until(lambda: consuming(events, "r2", queue.name), timeout=10, what="r2 consuming")
    beat = events.last_beat("r2")
    assert beat is not None
    assert beat.queues[0].scope == "replica"
    assert beat.queues[0].prefetch == 4
    assert not consuming(events, "r1", queue.name)

    await send_control(amqp, topo, ConsumeCommand(action="start", queue=queue.name, prefetch=3))
    await until(lambda: consuming(events, "r1", queue.name), timeout=10, what="r1 consuming")
    await until(
        lambda: (b := events.last_beat("r2")) and b.queues[0].scope == "all",
        timeout=10,
        what="r2's consumption asked of all",
    )

    # A start again with another prefetch changes it in place.
    await send_control(amqp, topo, ConsumeCommand(action="start", queue=queue.name, prefetch=6))
    await until(
        lambda: all((b := events.last_beat(r)) and b.queues[0].prefetch == 6 for r in ("r1", "r2")),
        timeout=10,
        what="prefetch 6 on both",
    )

    await send_control(amqp, topo, ConsumeCommand(action="stop", queue=queue.name))
    await until(
        lambda: all(not (events.last_beat(r) or beat).queues for r in ("r1", "r2")),
        timeout=10,
        what="both stopped",
    )
    ids = await publish(amqp, queue.name, [b'{"after": "stop"}'])
    await asyncio.sleep(0.5)  # nothing may consume it: give a wrong consumer the chance
    assert not outcomes(events, ids[0])


async def test_messages_are_processed_concurrently_up_to_the_prefetch(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("conc")
    await replicas.start("r1", queues=[queue.name], prefetch=20)
    ids = await publish(amqp, queue.name, [b"{}"] * 40, headers={"x-warren-work-ms": 200})
    await until(
        lambda: len({r.message_id for r in events.records} & set(ids)) == 40,
        timeout=30,
        what="40 records",
    )
    spans = sorted((r.received_at, r.processed_at) for r in events.records)
    # Most messages in flight at one moment: count overlaps at each start.
    overlap = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert 10 <= overlap <= 20, overlap
    assert max(b.in_flight for b in events.beats) <= 20
    await until(
        lambda: (b := events.last_beat("r1")) and b.counters.acked == 40,
        timeout=5,
        what="a heartbeat counting 40 acked",
    )


# Dead-lettering -----------------------------------------------------------------------------


@pytest.mark.parametrize("quorum", [False, True], ids=["classic", "quorum"])
async def test_a_failing_message_is_dead_lettered_after_exactly_the_delivery_limit(
    amqp: AbstractRobustConnection,
    unique: Callable[[str], str],
    events: Events,
    replicas: Replicas,
    quorum: bool,
) -> None:
    name = unique("poison")
    queue = await make_queue(amqp, name, dead_letter=True, quorum=quorum, limit=4)
    try:
        await replicas.start("r1", queues=[name], delivery_limit=4, prefetch=5)
        [mid] = await publish(amqp, name, [b'{"bad": 1}'], headers={"x-warren-fail": True})
        await until(
            lambda: "dead_lettered" in outcomes(events, mid), timeout=20, what="dead-lettered"
        )
        assert outcomes(events, mid) == ["failed", "failed", "failed", "dead_lettered"]
        assert [r.delivery_count for r in events.records if r.message_id == mid] == [1, 2, 3, 4]
        channel = await amqp.channel()
        dlq = await channel.declare_queue(f"{name}.dlq", passive=True)
        dead = await until_get(dlq)
        headers = dead.headers
        assert headers["x-warren-death-reason"] == "delivery_limit"
        assert "x-warren-fail" in str(headers["x-warren-error"])
        assert headers["x-warren-attempts"] == 4
        assert headers["x-warren-queue"] == name
        assert dead.message_id == mid
        assert dead.body == b'{"bad": 1}'
        await dead.ack()
        await asyncio.sleep(0.5)  # no hot loop: nothing more happens to it
        assert len(outcomes(events, mid)) == 4
        beat = events.last_beat("r1")
        assert beat is not None
        assert (beat.counters.failed, beat.counters.dead_lettered) == (3, 1)
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await (await amqp.channel()).queue_delete(f"{name}.dlq")


async def until_get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = await queue.get(fail=False, no_ack=False)
        if message is not None:
            return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing in {queue.name}")


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b'{"not": json', "application/json", "invalid JSON"),
        (b"\xff\xfe\x00binary", "application/octet-stream", "not utf-8"),
        (b"x" * 2000, "text/plain", "exceeds 1000"),
    ],
    ids=["invalid-json", "non-utf8", "too-big"],
)
async def test_an_undecodable_message_goes_straight_to_the_dlq(
    amqp: AbstractRobustConnection,
    unique: Callable[[str], str],
    events: Events,
    replicas: Replicas,
    body: bytes,
    content_type: str,
    why: str,
) -> None:
    name = unique("undecodable")
    queue = await make_queue(amqp, name, dead_letter=True)
    try:
        await replicas.start("r1", queues=[name], max_body_bytes=1000)
        [mid] = await publish(amqp, name, [body], content_type=content_type)
        await until(lambda: outcomes(events, mid), timeout=10, what="a record")
        assert outcomes(events, mid) == ["dead_lettered"]
        dlq = await (await amqp.channel()).declare_queue(f"{name}.dlq", passive=True)
        dead = await until_get(dlq)
        assert dead.headers["x-warren-death-reason"] == "decode_error"
        assert why in str(dead.headers["x-warren-error"])
        assert dead.body == body
        await dead.ack()
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await (await amqp.channel()).queue_delete(f"{name}.dlq")


async def test_without_a_dlq_a_failing_message_is_requeued_never_lost(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("nodlq")
    worker = await replicas.start(
        "r1", queues=[queue.name], delivery_limit=2, retry_backoff=0.3, prefetch=1
    )
    [bad] = await publish(amqp, queue.name, [b"{}"], headers={"x-warren-fail": "true"})
    good = await publish(amqp, queue.name, [b"{}"] * 5)
    await until(lambda: outcomes(events, bad).count("requeued") >= 3, timeout=15, what="requeues")
    # It did not block the queue (prefetch 1): it went back to the tail each time.
    assert all(outcomes(events, g) == ["acked"] for g in good)
    assert outcomes(events, bad)[:2] == ["failed", "requeued"]
    await worker.stop()
    declared = await (await amqp.channel()).declare_queue(queue.name, passive=True)
    assert declared.declaration_result.message_count == 1, "the failing message is still there"


# De-duplication, sampling, sharing ----------------------------------------------------------


async def test_a_message_id_seen_twice_is_processed_once(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("dedup")
    await replicas.start("r1", queues=[queue.name], prefetch=10)
    # Both copies are in flight at once: the second waits for the first's outcome.
    await publish(
        amqp,
        queue.name,
        [b"{}", b"{}", b"{}"],
        headers={"x-warren-work-ms": 100},
        message_ids=["same", "same", "other"],
    )
    await until(lambda: len(events.records) == 3, timeout=10, what="3 records")
    assert sorted(outcomes(events, "same")) == ["acked", "duplicate"]
    await until(
        lambda: (b := events.last_beat("r1")) and b.counters.processed == 3,
        timeout=5,
        what="a heartbeat with the counters",
    )
    beat = events.last_beat("r1")
    assert beat is not None
    assert (beat.counters.acked, beat.counters.duplicates) == (2, 1)


async def test_records_are_sampled_above_the_rate_but_counters_stay_exact(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("sampled")
    # Prefilled, then drained in a burst: far above 20 records/s even on a loaded machine.
    await publish(amqp, queue.name, [b"{}"] * 1000)
    await replicas.start("r1", queues=[queue.name], prefetch=100, records_per_second=20)
    await until(
        lambda: (b := events.last_beat("r1")) and b.counters.processed == 1000,
        timeout=30,
        what="1000 processed",
    )
    await until(
        lambda: len(events.records) + events.sampled_out() == 1000,
        timeout=5,
        what="records + sampled out == 1000",
    )
    assert 0 < len(events.records) < 1000
    assert len(events.batches) < len(events.records), "records travel in batches"
    # The beat that said 1000 processed may predate the last batch of records: its counters
    # are exact as of the beat after that batch was sent.
    await until(
        lambda: (
            (b := events.last_beat("r1"))
            and b.counters.records_sampled_out + b.counters.records_sent == 1000
        ),
        timeout=10,
        what="a heartbeat counting every record as sent or sampled out",
    )
    beat = events.last_beat("r1")
    assert beat is not None
    assert beat.counters.acked == 1000


async def test_replicas_share_a_queue_without_loss_or_duplicates(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("shared")
    for r in ("r1", "r2", "r3"):
        await replicas.start(r, queues=[queue.name], prefetch=5, dedup_window=0)
    ids = await publish(amqp, queue.name, [b'{"n": 1}'] * 300, headers={"x-warren-work-ms": 2})
    await until(lambda: len(events.records) >= 300, timeout=30, what="300 records")
    await asyncio.sleep(0.3)  # a duplicate would show up now
    seen = [r.message_id for r in events.records]
    assert sorted(seen) == sorted(ids)
    assert len({r.worker for r in events.records}) == 3
    total = 0
    for r in ("r1", "r2", "r3"):
        await until(
            lambda r=r: (
                (b := events.last_beat(r))
                and b.counters.processed == sum(1 for x in events.records if x.worker == r)
            ),
            timeout=5,
            what=f"{r}'s counters to match its records",
        )
        total += events.last_beat(r).counters.processed  # type: ignore[union-attr]
    assert total == 300


async def test_a_record_carries_what_the_issue_lists(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("record")
    await replicas.start("r1", queues=[queue.name])
    [mid] = await publish(amqp, queue.name, [b'{"hello": "world"}'], headers={"tenant": "a"})
    [rec] = await until(lambda: events.records, timeout=10, what="the record")
    assert rec.message_id == mid
    assert rec.queue == queue.name
    assert rec.worker == "r1"
    assert rec.exchange == ""
    assert rec.routing_key == queue.name
    assert rec.body == '{"hello": "world"}'
    assert rec.body_size == 18
    assert rec.properties["content_type"] == "application/json"
    assert rec.headers["tenant"] == "a"
    assert rec.redelivered is False
    assert rec.outcome == "acked"
    assert rec.latency_ms is not None
    assert rec.latency_ms >= 0
    assert rec.received_at <= rec.processed_at
    beat = events.last_beat("r1")
    assert beat is not None
    assert beat.host
    assert beat.pid
    assert beat.versions
    assert beat.connection == "connected"


# Resuming -----------------------------------------------------------------------------------


async def test_a_queue_deleted_under_the_consumer_is_resumed_once_recreated(
    amqp: AbstractRobustConnection,
    unique: Callable[[str], str],
    events: Events,
    replicas: Replicas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="consumer")
    name = unique("deleted")
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True)
    try:
        await replicas.start("r1", queues=[name])
        await until(lambda: consuming(events, "r1", name), timeout=10, what="consuming")
        await channel.queue_delete(name)
        await until(
            lambda: (b := events.last_beat("r1")) and b.queues[0].state == "waiting",
            timeout=10,
            what="the heartbeat to say it waits",
        )
        await channel.declare_queue(name, durable=True)
        await until(lambda: consuming(events, "r1", name), timeout=20, what="resumed")
        [mid] = await publish(amqp, name, [b"{}"])
        await until(lambda: outcomes(events, mid) == ["acked"], timeout=10, what="processed")
        assert "Resumed consuming" in caplog.text
    finally:
        await channel.queue_delete(name)


async def test_stop_drains_in_flight_messages(
    amqp: AbstractRobustConnection, queue_factory: Any, events: Events, replicas: Replicas
) -> None:
    queue = await queue_factory("drain")
    worker = await replicas.start("r1", queues=[queue.name], prefetch=10)
    await publish(amqp, queue.name, [b"{}"] * 30, headers={"x-warren-work-ms": 400})
    await until(lambda: worker.in_flight == 10, timeout=10, what="10 in flight")
    await worker.stop()
    acked = worker.counters["acked"]
    assert acked >= 10
    assert worker.in_flight == 0
    assert len(events.records) == acked, "records flushed before closing"
    declared = await (await amqp.channel()).declare_queue(queue.name, passive=True)
    assert declared.declaration_result.message_count == 30 - acked, "nothing finished comes back"


@pytest.mark.faults
async def test_consumption_survives_connection_loss(
    rabbit_node: Any, unique: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consumer")
    conn = await aio_pika.connect_robust(rabbit_node.amqp_url)
    events = Events()
    namespace = unique("tf")
    replicas = Replicas(namespace, rabbit_node.amqp_url)
    try:
        await events.listen(conn, Topology(namespace))
        queue = await (await conn.channel()).declare_queue(unique("lossy"), durable=True)
        await replicas.start("r1", queues=[queue.name], prefetch=10)
        await until(lambda: consuming(events, "r1", queue.name), timeout=10, what="consuming")
        first = await publish(conn, queue.name, [b"{}"] * 50, headers={"x-warren-work-ms": 50})
        await until(lambda: len(events.records) >= 10, timeout=10, what="some processed")
        await asyncio.to_thread(rabbit_node.close_all_connections, "test: connection loss")
        await until(lambda: not conn.is_closed and conn.connected.is_set(), timeout=20, what="up")
        await until(lambda: consuming(events, "r1", queue.name), timeout=20, what="resumed")
        second = await publish(conn, queue.name, [b"{}"] * 20)
        await until(
            lambda: set(first + second) <= {r.message_id for r in events.records},
            timeout=30,
            what="every message processed",
        )
        assert any(r.redelivered for r in events.records) or len(events.records) == 70
        assert "Broker connection lost" in caplog.text
        assert "Resumed consuming" in caplog.text
        beat = events.last_beat("r1")
        assert beat is not None
        assert beat.connection == "connected"
    finally:
        await replicas.stop_all()
        await conn.close()
