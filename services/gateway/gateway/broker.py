"""The gateway's own broker connection: commands out, events in, and queue administration."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.abc import AbstractRobustConnection as Connection
from pydantic import TypeAdapter, ValidationError

from gateway.settings import GatewaySettings
from gateway.state import State
from warren import amqp
from warren.contracts import (
    CONTROL_ALL_CONSUMERS,
    CONTROL_ALL_PRODUCERS,
    EVENTS_ALL,
    JOBS_ROUTING_KEY,
    CancelJob,
    ConsumeCommand,
    Event,
    Heartbeat,
    JobProgress,
    PublishJob,
    RecordBatch,
    Topology,
    control_replica_key,
)

log = logging.getLogger(__name__)

_events = TypeAdapter[Any](Event)

EVENTS_QUEUE_EXPIRES_MS = 60_000


class BrokerUnavailable(Exception):
    """The gateway has no usable broker connection right now (HTTP 503)."""


class PublishTimeout(Exception):
    """The broker did not confirm within the publish timeout (blocked or partitioned)."""


class GatewayBroker:
    """Connects (and reconnects on request), consumes events and publishes commands."""

    def __init__(self, settings: GatewaySettings, state: State, *, instance: str) -> None:
        self.settings = settings
        self.state = state
        self.instance = instance
        self.topology = Topology(settings.namespace)
        self.connection: Connection | None = None
        self.events_connection: Connection | None = None
        self.server_properties: dict[str, Any] = {}
        self._channel: AbstractChannel | None = None
        self._exchanges: amqp.Exchanges | None = None
        self._events_queue: AbstractQueue | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._sync_sent: dict[tuple[str, str], float] = {}

    # Connection -------------------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        if self._connect_task is not None and not self._connect_task.done():
            return "reconnecting"
        return amqp.connection_state(self.connection, self.events_connection)

    @property
    def ready(self) -> bool:
        return self.connection_state == "connected" and self._exchanges is not None

    def start(self) -> None:
        """Connect in the background, retrying until the broker is there."""
        if self._connect_task is None or self._connect_task.done():
            self._stop.clear()
            self._connect_task = asyncio.create_task(self._connect(), name="gateway-connect")

    async def _connect(self) -> None:
        s = self.settings
        try:
            connection = await amqp.connect(
                s.amqp, service="gateway", replica=self.instance, stop=self._stop
            )
        except asyncio.CancelledError:
            return
        self.connection = connection
        # Events come in on a connection of their own: during a memory or disk alarm the broker
        # stops reading from a connection that publishes, and the console would go blind (no
        # records, replicas shown lost) for as long as the alarm lasts.
        try:
            self.events_connection = await amqp.connect(
                s.amqp, service="gateway", replica=f"{self.instance}:events", stop=self._stop
            )
        except asyncio.CancelledError:
            return
        props = getattr(getattr(connection, "transport", None), "connection", None)
        self.server_properties = dict(getattr(props, "server_properties", {}) or {})
        self._channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        self._exchanges = await amqp.declare_exchanges(self._channel, self.topology)
        # Producers declare it too; declaring here means jobs sent before any producer
        # started wait in the queue instead of being returned as unroutable.
        await amqp.declare_jobs_queue(self._channel, self.topology, self._exchanges)
        events_channel = await self.events_connection.channel()
        await events_channel.set_qos(prefetch_count=200)
        # Not exclusive: an exclusive queue dies with the connection, so events sent while the
        # gateway is cut off (a job's final result, say) would be lost. This one outlives a
        # reconnect and expires a minute after the gateway is gone for good.
        self._events_queue = await events_channel.declare_queue(
            self.topology.gateway_queue(self.instance),
            durable=False,
            auto_delete=False,
            arguments={
                "x-max-length": 100_000,
                "x-overflow": "drop-head",
                "x-expires": EVENTS_QUEUE_EXPIRES_MS,
            },
        )
        await self._events_queue.bind(self._exchanges.events, EVENTS_ALL)
        await self._events_queue.consume(self._on_event, no_ack=True)
        self._ready.set()
        log.info("Gateway %s listening for events", self.instance)

    async def connect(self) -> None:
        async with self._lock:
            if self.connection is None or self.connection.is_closed:
                self.start()

    async def wait_ready(self, *, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return self.ready

    async def disconnect(self) -> None:
        async with self._lock:
            self._ready.clear()
            self._stop.set()
            if self._connect_task is not None:
                self._connect_task.cancel()
                await asyncio.gather(self._connect_task, return_exceptions=True)
            for connection in (self.events_connection, self.connection):
                if connection is not None and not connection.is_closed:
                    try:
                        await asyncio.wait_for(connection.close(), 5)
                    except Exception as exc:
                        log.warning("Closing the broker connection failed: %s", exc)
            self._exchanges = None
            self._channel = None
            self._events_queue = None

    # Events in --------------------------------------------------------------------------------

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            event = amqp.decode_union(message, _events)
        except ValidationError as exc:
            log.warning(
                "Ignoring a malformed event (%s): %s", message.routing_key, exc.errors()[:2]
            )
            return
        if isinstance(event, RecordBatch):
            self.state.add_records(event.records, event.sampled_out)
        elif isinstance(event, JobProgress):
            self.state.on_progress(event)
        elif isinstance(event, Heartbeat):
            self.state.on_heartbeat(event)
            if event.role == "consumer":
                await self._reconcile(event)

    async def _reconcile(self, beat: Heartbeat) -> None:
        """A replica that misses a desired queue (it started later) is told to consume it."""
        if beat.stopping:
            return
        have = {q.queue for q in beat.queues}
        now = time.monotonic()
        for desired in list(self.state.desired.values()):
            if desired.queue in have:
                continue
            key = (beat.replica, desired.queue)
            if now - self._sync_sent.get(key, -1e9) < 5:
                continue
            self._sync_sent[key] = now
            log.info("Replica %s joins consumption of %s", beat.replica, desired.queue)
            try:
                await self.send_control(
                    ConsumeCommand(
                        action="start",
                        queue=desired.queue,
                        prefetch=desired.prefetch,
                        delivery_limit=desired.delivery_limit,
                        replica=beat.replica,
                    )
                )
            except (BrokerUnavailable, PublishTimeout) as exc:
                log.warning("Could not sync replica %s: %s", beat.replica, exc)
        # A replica that missed a stop (its control queue is re-created after a reconnect,
        # commands sent meanwhile are gone) is told again; after a gateway restart
        # ``stopped_at`` is empty and such queues are relearned instead.
        for q in beat.queues:
            if q.scope != "all" or q.queue in self.state.desired or q.state == "stopping":
                continue
            if q.queue not in self.state.stopped_at:
                continue
            key = (beat.replica, q.queue)
            if now - self._sync_sent.get(key, -1e9) < 5:
                continue
            self._sync_sent[key] = now
            log.info(
                "Replica %s still consumes stopped %s: stopping it again", beat.replica, q.queue
            )
            try:
                await self.send_control(
                    ConsumeCommand(action="stop", queue=q.queue, replica=beat.replica)
                )
            except (BrokerUnavailable, PublishTimeout) as exc:
                log.warning("Could not sync replica %s: %s", beat.replica, exc)

    # Commands out -----------------------------------------------------------------------------

    def _require(self) -> amqp.Exchanges:
        if not self.ready or self._exchanges is None:
            raise BrokerUnavailable(f"broker connection is {self.connection_state}")
        return self._exchanges

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, msg: aio_pika.Message, key: str
    ) -> None:
        timeout = self.settings.amqp.publish_timeout
        try:
            result = await asyncio.wait_for(
                exchange.publish(msg, key, mandatory=True, timeout=timeout), timeout
            )
        except TimeoutError as exc:
            raise PublishTimeout(
                f"the broker did not confirm within {timeout:g} s (resource alarm or partition)"
            ) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishTimeout(
                f"publish cancelled by the client library after {timeout:g} s"
            ) from None
        except amqp.CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"broker connection lost: {exc!r}") from exc
        if isinstance(result, aiormq.abc.DeliveredMessage) and key == JOBS_ROUTING_KEY:
            raise BrokerUnavailable("the job queue is missing: no producer has declared it")

    async def send_job(self, job: PublishJob) -> None:
        exchanges = self._require()
        await self._publish(exchanges.commands, amqp.encode(job, persistent=True), JOBS_ROUTING_KEY)

    async def cancel_job(self, job_id: str) -> None:
        exchanges = self._require()
        await self._publish(
            exchanges.control, amqp.encode(CancelJob(job_id=job_id)), CONTROL_ALL_PRODUCERS
        )

    async def send_control(self, command: ConsumeCommand) -> None:
        exchanges = self._require()
        key = control_replica_key(command.replica) if command.replica else CONTROL_ALL_CONSUMERS
        await self._publish(exchanges.control, amqp.encode(command), key)

    # Administration ---------------------------------------------------------------------------

    @asynccontextmanager
    async def admin_channel(self) -> AsyncIterator[AbstractChannel]:
        """A short-lived channel: a 404 or 406 closes it, never the gateway's main channel."""
        self._require()
        assert self.connection is not None
        try:
            channel = await asyncio.wait_for(self.connection.channel(publisher_confirms=False), 5)
        except (TimeoutError, *amqp.CONNECTION_ERRORS) as exc:  # type: ignore[misc]
            raise BrokerUnavailable(f"cannot open a channel: {exc!r}") from exc
        try:
            yield channel
        finally:
            if not channel.is_closed:
                try:
                    await channel.close()
                except Exception as exc:
                    log.debug("Closing an admin channel failed: %s", exc)

    async def queue_stats(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) from a passive declare, or None if it does not exist."""
        async with self.admin_channel() as ch:
            try:
                queue = await ch.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0
