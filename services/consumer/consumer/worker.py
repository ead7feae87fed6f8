"""The consumer replica's AMQP glue: consume, call the handler, ack or dead-letter, report.

Failures are retried by republishing a copy (with the attempt count and the error in its
headers) and acking the original, the same way for classic and quorum queues, so a poison
message never spins in a redelivery loop. After ``delivery_limit`` attempts, or at once when
the body cannot be decoded, the copy goes to ``<queue>.dlq`` with the reason and the error.
Every copy is confirmed by the broker before the original is acked: nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from opentelemetry import trace
from pydantic import TypeAdapter, ValidationError

from consumer import handlers
from consumer.acks import AckWindow
from consumer.reporting import RecordBatcher, RecordSampler
from consumer.settings import ConsumerSettings
from warren import amqp, telemetry
from warren.contracts import (
    CONTROL_ALL_CONSUMERS,
    PUBLISHED_US_HEADER,
    ConsumeCommand,
    ConsumedQueue,
    ControlMessage,
    Counters,
    Heartbeat,
    Outcome,
    ProcessedRecord,
    RecordBatch,
    Topology,
    heartbeat_key,
    records_key,
)
from warren.lifecycle import cancel_and_wait, close_quietly, touch_health_file

log = logging.getLogger(__name__)

T = TypeVar("T")

_control = TypeAdapter[Any](ControlMessage)

ATTEMPT_HEADER = "x-warren-attempt"

# A retried copy goes through the default exchange: these keep where the original came from.
EXCHANGE_HEADER = "x-warren-exchange"
ROUTING_KEY_HEADER = "x-warren-routing-key"


@dataclass(eq=False)
class QueueConsumer:
    """One consumed queue: its own channel (so its prefetch is its own), tag and counters."""

    name: str
    prefetch: int
    delivery_limit: int
    scope: Literal["all", "replica"] = "all"
    state: Literal["starting", "consuming", "waiting", "stopping"] = "starting"
    channel: AbstractChannel | None = None
    queue: AbstractQueue | None = None
    tag: str | None = None
    in_flight: int = 0
    processed: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Task[None] | None = None
    warned_no_dlq: bool = False
    acks: AckWindow | None = None

    def info(self) -> ConsumedQueue:
        return ConsumedQueue(
            queue=self.name,
            prefetch=self.prefetch,
            state=self.state,
            delivery_limit=self.delivery_limit,
            processed=self.processed,
            in_flight=self.in_flight,
            scope=self.scope,
        )


class Worker:
    """A consumer replica."""

    def __init__(
        self, settings: ConsumerSettings, *, telemetry_status: telemetry.TelemetryStatus
    ) -> None:
        self.settings = settings
        cfg = settings.consumer
        self.topology = Topology(settings.namespace)
        self.replica = settings.replica_id
        self.telemetry = telemetry_status
        self.behaviour = handlers.Behaviour(
            work_ms=cfg.work_ms, fail_rate=cfg.fail_rate, max_body_bytes=cfg.max_body_bytes
        )
        self.started_at = datetime.now(UTC)
        self.connection: AbstractRobustConnection | None = None
        self.publish_connection: AbstractRobustConnection | None = None
        self.consumers: dict[str, QueueConsumer] = {}
        self.counters: dict[str, int] = dict.fromkeys(Counters.model_fields, 0)
        self.in_flight = 0
        self._exchanges: amqp.Exchanges | None = None
        self._publish_channel: AbstractChannel | None = None
        self._control_queue: AbstractQueue | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        # Message ids being processed right now: a second copy waits for the first's outcome
        # (the event is only made when a second copy shows up: the common case allocates none).
        self._pending_ids: dict[str, asyncio.Event | None] = {}
        # One control command at a time per queue (a stop must not overtake a start).
        self._queue_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._ack_lost_logged = False
        self._sampler = RecordSampler(cfg.records_per_second)
        self._batcher = RecordBatcher(
            self._send_records,
            worker=self.replica,
            batch_size=cfg.record_batch_size,
            flush_interval=cfg.record_flush_interval,
            sampler=self._sampler,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._rate_mark = (time.monotonic(), 0)
        self._stopping = False
        # Read once: the package metadata lookups cost milliseconds, and do not change.
        self._versions = telemetry.versions()

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.connection = await amqp.connect(
            s.amqp, service="consumer", replica=self.replica, stop=stop
        )
        # Publishing (records, heartbeats, retries, dead-letter copies) has its own connection:
        # during a memory or disk alarm the broker stops reading from any connection that
        # publishes, and acks sharing it would stall, so consumption could not drain the queue.
        self.publish_connection = await amqp.connect(
            s.amqp, service="consumer", replica=f"{self.replica}:publish", stop=stop
        )
        self._publish_channel, self._exchanges = await amqp.ensure_exchanges(
            self.publish_connection, self.topology
        )
        self._control_queue = await amqp.consume_control(
            self.connection,
            self.topology,
            self._exchanges,
            replica=self.replica,
            broadcast_key=CONTROL_ALL_CONSUMERS,
            on_message=self._on_control,
        )
        self.connection.close_callbacks.add(self._on_connection_lost)
        self.connection.reconnect_callbacks.add(self._on_reconnected)
        for name in s.consumer.queues:
            # Local configuration: the gateway shows it but does not spread it to other replicas.
            await self.start_queue(
                name, prefetch=s.consumer.prefetch, delivery_limit=None, scope="replica"
            )
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._batcher.run(), name="records"),
            asyncio.create_task(self._watch(), name="watch"),
        ]
        log.info("Consumer %s ready; consuming %s", self.replica, list(self.consumers) or "nothing")

    async def stop(self) -> None:
        """Drain: cancel every consumer, finish in-flight messages (bounded), flush, close."""
        self._stopping = True
        timeout = self.settings.consumer.drain_timeout
        started = time.monotonic()
        await asyncio.gather(
            *(self._drain(qc, timeout=timeout) for qc in list(self.consumers.values()))
        )
        log.info(
            "Drained in %.2f s: %d processed, %d in flight left",
            time.monotonic() - started,
            self.counters["processed"],
            self.in_flight,
        )
        await cancel_and_wait(*self._tasks)
        await self._batcher.flush()
        await self._send_heartbeat()
        for connection in (self.connection, self.publish_connection):
            if connection is not None:
                await close_quietly(connection.close, what="connection", timeout=3)

    # Consuming --------------------------------------------------------------------------------

    async def start_queue(
        self,
        name: str,
        *,
        prefetch: int,
        delivery_limit: int | None,
        scope: Literal["all", "replica"] = "all",
    ) -> None:
        async with self._queue_locks[name]:
            await self._start_queue(name, prefetch, delivery_limit, scope)

    async def _start_queue(
        self,
        name: str,
        prefetch: int,
        delivery_limit: int | None,
        scope: Literal["all", "replica"],
    ) -> None:
        limit = delivery_limit or self.settings.consumer.delivery_limit
        existing = self.consumers.get(name)
        if existing is not None:
            existing.delivery_limit = limit
            if scope == "all":
                existing.scope = "all"
            if existing.prefetch != prefetch and existing.channel is not None:
                existing.prefetch = prefetch
                await existing.channel.set_qos(prefetch_count=prefetch)
                log.info("Prefetch of %s set to %d", name, prefetch)
            return
        assert self.connection is not None
        qc = QueueConsumer(name=name, prefetch=prefetch, delivery_limit=limit, scope=scope)
        qc.acks = AckWindow(self._settle)
        qc.idle.set()
        self.consumers[name] = qc
        qc.channel = await self.connection.channel()
        await qc.channel.set_qos(prefetch_count=prefetch)
        await self._attach(qc)

    async def _attach(self, qc: QueueConsumer) -> None:
        """Consume the queue, or wait for it to exist (polling) without blocking the caller."""
        assert qc.channel is not None
        try:
            qc.queue = await qc.channel.declare_queue(qc.name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            qc.state = "waiting"
            log.warning("Queue %s does not exist (yet); waiting for it", qc.name)
            qc.waiter = asyncio.create_task(self._wait_for_queue(qc), name=f"wait-{qc.name}")
            return

        async def callback(message: AbstractIncomingMessage) -> None:
            await self._on_message(qc, message)

        qc.tag = await qc.queue.consume(callback)
        qc.state = "consuming"
        log.info("Consuming %s (prefetch %d)", qc.name, qc.prefetch)

    async def _wait_for_queue(self, qc: QueueConsumer) -> None:
        while qc.state == "waiting":
            await asyncio.sleep(2)
            if qc.channel is None or self.connection is None:
                return
            if qc.channel.is_closed:
                qc.channel = await self.connection.channel()
                await qc.channel.set_qos(prefetch_count=qc.prefetch)
            try:
                await self._attach(qc)
            except Exception as exc:
                log.debug("Still waiting for %s: %s", qc.name, exc)
            else:
                return

    async def stop_queue(self, name: str) -> None:
        async with self._queue_locks[name]:
            qc = self.consumers.get(name)
            if qc is None:
                return
            await self._drain(qc, timeout=self.settings.consumer.drain_timeout)

    async def _drain(self, qc: QueueConsumer, *, timeout: float) -> None:
        qc.state = "stopping"
        await cancel_and_wait(qc.waiter)
        if qc.queue is not None and qc.tag is not None:
            try:
                await asyncio.wait_for(qc.queue.cancel(qc.tag), 3)
            except Exception as exc:
                log.warning("Cancelling the consumer of %s failed: %s", qc.name, exc)
        try:
            await asyncio.wait_for(qc.idle.wait(), timeout)
        except TimeoutError:
            log.warning(
                "%d message(s) of %s still in flight after %.1f s: the broker will redeliver them",
                qc.in_flight,
                qc.name,
                timeout,
            )
        if qc.acks is not None:
            await close_quietly(qc.acks.flush, what=f"acks of {qc.name}", timeout=3)
        if qc.channel is not None:
            await close_quietly(qc.channel.close, what=f"channel of {qc.name}", timeout=3)
        self.consumers.pop(qc.name, None)
        log.info("Stopped consuming %s (%d processed)", qc.name, qc.processed)

    async def _on_message(self, qc: QueueConsumer, message: AbstractIncomingMessage) -> None:
        acks = qc.acks
        assert acks is not None
        acks.received(message)
        qc.in_flight += 1
        qc.idle.clear()
        self.in_flight += 1
        # A float now, a datetime only for the messages that get a record (most are sampled
        # out above records_per_second): the same instant, without a datetime per message.
        received = time.time()
        started = time.perf_counter()
        try:
            outcome, error, attempts = await self._handle(qc, message)
        except Exception as exc:  # a bug of ours: give the message back, never drop it
            log.exception("Handling a message of %s failed", qc.name)
            await self._nack_later(message)
            outcome, error, attempts = "requeued", f"{type(exc).__name__}: {exc}", 1
        finally:
            qc.in_flight -= 1
            self.in_flight -= 1
            if qc.in_flight == 0:
                qc.idle.set()
        # Not on cancellation: an unsettled message must keep blocking a multiple ack.
        acks.settled(message)
        qc.processed += 1
        c = self.counters
        c["processed"] += 1
        if message.redelivered:
            c["redelivered"] += 1
        c[_COUNTER[outcome]] += 1
        span = trace.get_current_span()
        if span.is_recording():
            # One call: the SDK takes its lock and checks its limits once, not seven times.
            span.set_attributes(
                {
                    "messaging.destination.name": qc.name,
                    "messaging.message.id": message.message_id or "",
                    "messaging.rabbitmq.destination.routing_key": message.routing_key or "",
                    "warren.exchange": message.exchange or "",
                    "warren.replica": self.replica,
                    "warren.redelivered": bool(message.redelivered),
                    "warren.outcome": outcome,
                }
            )
            if error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        if self._sampler.allow():
            self._batcher.add(
                self._record(
                    qc,
                    message,
                    outcome,
                    error,
                    attempts,
                    datetime.fromtimestamp(received, UTC),
                    time.perf_counter() - started,
                )
            )

    async def _handle(
        self, qc: QueueConsumer, message: AbstractIncomingMessage
    ) -> tuple[Outcome, str | None, int]:
        """Process one message and settle it; returns the outcome, error and attempt number."""
        message_id = message.message_id
        if not self.settings.consumer.dedup_window or message_id is None:
            return await self._process(qc, message, None)
        pending = self._pending_ids
        while message_id in pending:
            # Another copy is in flight here: its outcome decides whether this one is needed.
            waiter = pending[message_id]
            if waiter is None:
                waiter = pending[message_id] = asyncio.Event()
            await waiter.wait()
        if message_id in self._seen:
            await self._settle(message.ack())
            return "duplicate", None, _attempts(message, message.headers or {})
        pending[message_id] = None
        try:
            return await self._process(qc, message, message_id)
        finally:
            waiter = pending.pop(message_id)
            if waiter is not None:
                waiter.set()

    async def _process(
        self, qc: QueueConsumer, message: AbstractIncomingMessage, dedup_id: str | None
    ) -> tuple[Outcome, str | None, int]:
        headers = message.headers or {}
        attempts = _attempts(message, headers)
        delivery = handlers.Delivery(
            body=message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
        )
        try:
            payload = handlers.decode(delivery, max_body_bytes=self.behaviour.max_body_bytes)
            await handlers.process(payload, delivery, self.behaviour)
        except handlers.DecodeError as exc:
            trace.get_current_span().record_exception(exc)
            return await self._dead_letter(qc, message, "decode_error", str(exc), attempts)
        except Exception as exc:  # a handler's failure is the message's, never the worker's
            trace.get_current_span().record_exception(exc)
            error = f"{type(exc).__name__}: {exc}"
            if attempts >= qc.delivery_limit:
                return await self._dead_letter(qc, message, "delivery_limit", error, attempts)
            return await self._retry(qc, message, error, attempts)
        if dedup_id is not None:
            # Remembered before the ack: if the ack is lost with the connection, the
            # redelivered copy is recognised instead of processed a second time.
            self._seen[dedup_id] = None
            if len(self._seen) > self.settings.consumer.dedup_window:
                self._seen.popitem(last=False)
        assert qc.acks is not None
        qc.acks.ack_soon(message)
        return "acked", None, attempts

    async def _settle(self, settle: Awaitable[Any]) -> bool:
        """Ack or nack; when the channel is gone the broker redelivers the message anyway."""
        try:
            await settle
        except amqp.CONNECTION_ERRORS as exc:
            if not self._ack_lost_logged:
                log.warning(
                    "Acknowledgement lost with the channel (%s): the broker redelivers", exc
                )
                self._ack_lost_logged = True
            return False
        return True

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        routing_key: str,
        extra_headers: dict[str, Any],
    ) -> bool:
        """Publish a confirmed copy via the default exchange; False when unroutable."""
        assert self._publish_channel is not None
        headers = dict(message.headers or {})
        headers.setdefault(EXCHANGE_HEADER, message.exchange or "")
        headers.setdefault(ROUTING_KEY_HEADER, message.routing_key or "")
        headers.update(extra_headers)
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        result = await _bounded(
            self._publish_channel.default_exchange.publish(
                copy, routing_key, mandatory=True, timeout=self.settings.amqp.publish_timeout
            )
        )
        return not isinstance(result, DeliveredMessage)

    async def _retry(
        self, qc: QueueConsumer, message: AbstractIncomingMessage, error: str, attempts: int
    ) -> tuple[Outcome, str | None, int]:
        """Requeue a copy at the tail (the attempt count travels in its headers), ack this one."""
        try:
            routed = await self._republish(
                message,
                qc.name,
                {ATTEMPT_HEADER: attempts, "x-warren-last-error": error[:500]},
            )
        except Exception as exc:
            log.warning("Could not requeue a failed message of %s: %s", qc.name, exc)
            routed = False
        if routed:
            await self._settle(message.ack())
        else:
            await self._nack_later(message)
        return "failed", error, attempts

    async def _dead_letter(
        self,
        qc: QueueConsumer,
        message: AbstractIncomingMessage,
        reason: str,
        error: str,
        attempts: int,
    ) -> tuple[Outcome, str | None, int]:
        dlq = f"{qc.name}.dlq"
        try:
            routed = await self._republish(
                message,
                dlq,
                {
                    "x-warren-death-reason": reason,
                    "x-warren-error": error[:1000],
                    "x-warren-queue": qc.name,
                    "x-warren-attempts": attempts,
                    "x-warren-worker": self.replica,
                    "x-warren-died-at": datetime.now(UTC).isoformat(),
                },
            )
        except Exception as exc:
            log.warning("Could not dead-letter a message of %s: %s", qc.name, exc)
            await self._nack_later(message)
            return "failed", error, attempts
        if routed:
            await self._settle(message.ack())
            return "dead_lettered", error, attempts
        if not qc.warned_no_dlq:
            log.warning(
                "Queue %s has no dead-letter queue %s: messages that keep failing are requeued "
                "every %.1f s, never dropped",
                qc.name,
                dlq,
                self.settings.consumer.retry_backoff,
            )
            qc.warned_no_dlq = True
        # No DLQ: never drop it. After a pause, back to the tail (not the head, where a nack
        # would put it: with a small prefetch it would block the queue behind it).
        await asyncio.sleep(self.settings.consumer.retry_backoff)
        await self._retry(qc, message, error, attempts - 1)
        return "requeued", error, attempts

    async def _nack_later(self, message: AbstractIncomingMessage) -> None:
        """Give a message back to the broker after a pause, so a failure cannot spin."""
        await asyncio.sleep(self.settings.consumer.retry_backoff)
        await self._settle(message.nack(requeue=True))

    def _record(
        self,
        qc: QueueConsumer,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        error: str | None,
        attempts: int,
        received_at: datetime,
        processing_s: float,
    ) -> ProcessedRecord:
        preview = self.settings.consumer.body_preview_bytes
        headers = message.headers or {}
        published_us = headers.get(PUBLISHED_US_HEADER)
        processed_at = datetime.now(UTC)
        published_at: datetime | None = None
        latency_ms: float | None = None
        if isinstance(published_us, int) and not isinstance(published_us, bool):
            published_at = datetime.fromtimestamp(published_us / 1e6, UTC)
            latency_ms = round((processed_at.timestamp() * 1e6 - published_us) / 1000, 3)
        elif message.timestamp is not None:
            # AMQP timestamps have whole seconds: a coarse latency beats none.
            published_at = message.timestamp
            if published_at.tzinfo is None:
                published_at = published_at.replace(tzinfo=UTC)
            latency_ms = round((processed_at - published_at).total_seconds() * 1000, 3)
        exchange = headers.get(EXCHANGE_HEADER, message.exchange)
        routing_key = headers.get(ROUTING_KEY_HEADER, message.routing_key)
        ctx = trace.get_current_span().get_span_context()
        return ProcessedRecord(
            message_id=message.message_id,
            queue=qc.name,
            exchange=_jsonable(exchange) or "",
            routing_key=_jsonable(routing_key) or "",
            worker=self.replica,
            outcome=outcome,
            error=error,
            redelivered=bool(message.redelivered),
            delivery_count=attempts,
            body=message.body[:preview].decode("utf-8", errors="replace"),
            body_size=len(message.body),
            body_truncated=len(message.body) > preview,
            content_type=message.content_type,
            properties=_properties(message),
            headers={k: _jsonable(v) for k, v in headers.items()},
            published_at=published_at,
            received_at=received_at,
            processed_at=processed_at,
            latency_ms=latency_ms,
            processing_ms=round(processing_s * 1000, 3),
            trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else None,
            span_id=format(ctx.span_id, "016x") if ctx.is_valid else None,
        )

    # Resilience -------------------------------------------------------------------------------

    def _on_connection_lost(self, _sender: object, exc: BaseException | None) -> None:
        if self._stopping:
            return
        log.warning("Broker connection lost (%s); reconnecting", exc)
        for qc in self.consumers.values():
            if qc.state == "consuming":
                qc.state = "waiting"

    def _on_reconnected(self, _sender: object) -> None:
        log.info("Broker connection back; resuming %s", list(self.consumers) or "nothing")

    async def _watch(self) -> None:
        """Notice consumers the broker cancelled (queue deleted) and say when they resume.

        aio-pika restores them by itself (it re-consumes once the queue exists again); this
        only keeps the heartbeat's per-queue state and the log honest.
        """
        while True:
            await asyncio.sleep(0.5)
            for qc in list(self.consumers.values()):
                if qc.tag is None or qc.channel is None or qc.state in ("stopping", "starting"):
                    continue
                live = await self._consumer_live(qc)
                if live and qc.state == "waiting":
                    qc.state = "consuming"
                    log.info("Resumed consuming %s", qc.name)
                elif not live and qc.state == "consuming":
                    qc.state = "waiting"
                    log.warning(
                        "Consumer of %s is gone (queue deleted or connection lost); "
                        "resuming when it is back",
                        qc.name,
                    )

    async def _consumer_live(self, qc: QueueConsumer) -> bool:
        assert qc.channel is not None
        if self.connection is None or not self.connection.connected.is_set():
            return False
        try:
            underlay = await asyncio.wait_for(qc.channel.get_underlay_channel(), 0.2)
        except Exception:
            return False
        consumers = getattr(underlay, "consumers", {})  # aiormq.Channel's, not on its ABC
        return not underlay.is_closed and qc.tag in consumers

    # Control and reporting --------------------------------------------------------------------

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        try:
            command = amqp.decode_union(message, _control)
        except ValidationError:
            log.warning("Ignoring a malformed control message")
            return
        if not isinstance(command, ConsumeCommand) or self._stopping:
            return
        if command.replica not in (None, self.replica):
            return
        try:
            if command.action == "start":
                await self.start_queue(
                    command.queue,
                    prefetch=command.prefetch,
                    delivery_limit=command.delivery_limit,
                    scope="all" if command.replica is None else "replica",
                )
            else:
                await self.stop_queue(command.queue)
        except Exception:
            log.exception("Control command %s %s failed", command.action, command.queue)
        await self._send_heartbeat()

    @telemetry.internal
    async def _send_records(self, batch: RecordBatch) -> None:
        assert self._exchanges is not None
        await _bounded(
            self._exchanges.events.publish(
                amqp.encode(batch),
                records_key(self.replica),
                timeout=self.settings.amqp.publish_timeout,
            )
        )
        self.counters["records_sent"] += len(batch.records)
        self.counters["records_sampled_out"] += batch.sampled_out

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self._send_heartbeat()
            except Exception:  # the heartbeat must outlive any one failure
                log.exception("Heartbeat failed")
            await asyncio.sleep(self.settings.heartbeat_interval)

    @telemetry.internal
    async def _send_heartbeat(self) -> None:
        if self._exchanges is None:
            return
        now = time.monotonic()
        mark_t, mark_n = self._rate_mark
        processed = self.counters["processed"]
        rate = (processed - mark_n) / (now - mark_t) if now > mark_t else 0.0
        self._rate_mark = (now, processed)
        beat = Heartbeat(
            role="consumer",
            replica=self.replica,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            interval_s=self.settings.heartbeat_interval,
            connection=amqp.connection_state(self.connection, self.publish_connection),
            queues=[qc.info() for qc in self.consumers.values()],
            in_flight=self.in_flight,
            counters=Counters(**self.counters),
            rate=round(rate, 1),
            versions=self._versions,
            instrumentation=self.telemetry.instrumentation,
            instrumentation_error=self.telemetry.error,
            stopping=self._stopping,
        )
        try:
            await _bounded(
                self._exchanges.events.publish(
                    amqp.encode(beat), heartbeat_key("consumer", self.replica), timeout=2
                )
            )
        except Exception as exc:
            log.debug("Heartbeat not sent: %s", exc)
            return
        touch_health_file(self.settings.health_file)


_COUNTER: dict[str, str] = {
    "acked": "acked",
    "failed": "failed",
    "requeued": "requeued",
    "dead_lettered": "dead_lettered",
    "duplicate": "duplicates",
}


async def _bounded(publish: Awaitable[T]) -> T:
    """Await a confirmed publish; aiormq's own timeout surfaces as ``TimeoutError``.

    When its timeout fires aiormq raises ``CancelledError`` (seen here): let through, it would
    end the caller's task (the heartbeat or record loop) as if it had been cancelled.
    """
    try:
        return await publish
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise TimeoutError("the broker did not confirm in time") from None


def _attempts(message: AbstractIncomingMessage, headers: dict[str, Any]) -> int:
    """This delivery's attempt number: ours (republished copies) or the broker's (quorum)."""
    ours = headers.get(ATTEMPT_HEADER)
    theirs = headers.get("x-delivery-count")
    attempt = 1
    if isinstance(ours, int):
        attempt = max(attempt, ours + 1)
    if isinstance(theirs, int):
        attempt = max(attempt, theirs + 1)
    return attempt


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    props = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
        "priority": message.priority,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "expiration": message.expiration,
        "message_id": message.message_id,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "type": message.type,
        "user_id": message.user_id,
        "app_id": message.app_id,
    }
    # Every value is a str, an int, a float or None here: nothing to convert.
    return {k: v for k, v in props.items() if v is not None}
